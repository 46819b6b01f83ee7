//! `make bench`: what users pay, against the floor, in one run.
//!
//! The operator (release build, its own process) is measured against a floor client that
//! server-side-applies the same rendered objects at the same concurrency and rate limit, and
//! against one `kubectl apply --server-side`. Scenarios: cold start, many bundles in one
//! namespace, restart, waiting, gate latencies, memory and CPU. Each figure is taken over
//! repeats and reported as min/median/max, next to the machine's load.
//!
//! ```text
//! bench [quick|full|scale] [--repeats=N] [--label=NAME] [--only=STEP,..] [--cold=BxSxN]
//!                                                  run; write bench/results/<preset>-<label>.{json,md}
//! bench table BEFORE.json AFTER.json               a before/after table (markdown)
//! bench floor KUBECONFIG --qps=N --burst=N         the floor client (started by the run)
//! ```

mod cached;
mod cluster;
mod cold;
mod cost;
mod floor;
mod lease;
mod observer;
mod report;
mod runner;
mod scenarios;
mod shards;

use anyhow::{Context as _, Result, bail};
use secretbundle_tests::repo_root;
use serde_json::json;

use crate::runner::DEFAULT_RATE;
use crate::scenarios::{FULL, Metrics, Preset, QUICK, SCALE};

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,kube=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("floor") => floor::main(&args[1..]).await,
        Some("table") => {
            let [before, after] = &args[1..] else {
                bail!("usage: bench table BEFORE.json AFTER.json");
            };
            print!("{}", report::compare(&read(before)?, &read(after)?)?);
            Ok(())
        }
        _ => run(&args).await,
    }
}

fn read(path: &str) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Ok(serde_json::from_str(&text)?)
}

async fn run(args: &[String]) -> Result<()> {
    let mut preset: Preset = if args.iter().any(|a| a == "full") {
        FULL
    } else if args.iter().any(|a| a == "scale") {
        SCALE
    } else {
        QUICK
    };
    let flag = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .map(str::to_string)
    };
    if let Some(n) = flag("repeats") {
        preset.repeats = n.parse().context("--repeats")?;
    }
    // Another point of the scale curve: --cold=BUNDLESxSECRETSxNAMESPACES.
    if let Some(c) = flag("cold") {
        let n: Vec<usize> = c
            .split('x')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .context("--cold=BUNDLESxSECRETSxNAMESPACES")?;
        let [b, s, ns] = n[..] else {
            bail!("--cold=BUNDLESxSECRETSxNAMESPACES, e.g. --cold=1250x20x100");
        };
        preset.cold = (b, s, ns);
    }
    let label = flag("label").unwrap_or_else(|| "latest".into());
    let only = flag("only");
    anyhow::ensure!(
        runner::operator_bin().exists(),
        "{} is missing: cargo build --release -p secretbundle-operator",
        runner::operator_bin().display()
    );

    let mut repeats = Vec::new();
    let mut failures = Vec::new();
    for r in 0..preset.repeats {
        let mut m = Metrics::new();
        let mut loads = Vec::new();
        for (name, step) in STEPS {
            if only
                .as_deref()
                .is_some_and(|o| !o.split(',').any(|x| x == name))
            {
                continue;
            }
            eprintln!(
                "[repeat {}/{}] {name} (load {})",
                r + 1,
                preset.repeats,
                runner::load().1
            );
            let before = runner::load().0;
            // A failed scenario is recorded and the run goes on: one stuck step must not cost
            // every other figure.
            if let Err(e) = step.run(&mut m, &preset).await {
                eprintln!("{name} failed: {e:#}");
                failures.push(json!({"repeat": r + 1, "step": name, "error": format!("{e:#}")}));
            }
            loads.push(
                json!({"step": name, "load1_before": before, "load1_after": runner::load().0}),
            );
            eprintln!("{}", serde_json::to_string(&m)?);
        }
        repeats.push(json!({"metrics": m, "load": loads}));
        write_results(&preset, &label, &repeats, &failures)?;
    }
    let table = write_results(&preset, &label, &repeats, &failures)?;
    println!("{table}");
    Ok(())
}

/// Writes bench/results/<preset>-<label>.{json,md} (after every repeat, so a late failure
/// keeps what was measured); returns the table.
fn write_results(
    preset: &Preset,
    label: &str,
    repeats: &[serde_json::Value],
    failures: &[serde_json::Value],
) -> Result<String> {
    let result = json!({
        "preset": preset.name,
        "label": label,
        "commit": git(&["rev-parse", "--short", "HEAD"]),
        "operator_bin": runner::operator_bin(),
        "operator_version": operator_version(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "uptime_at_end": uptime(),
        "preset_sizes": format!("{preset:?}"),
        "repeats": repeats,
        "failures": failures,
        "summary": report::summarize(repeats),
    });
    let dir = repo_root().join("bench/results");
    std::fs::create_dir_all(&dir)?;
    let base = dir.join(format!("{}-{label}", preset.name));
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(&result)? + "\n",
    )?;
    let table = report::table(&result)?;
    std::fs::write(base.with_extension("md"), &table)?;
    Ok(table)
}

/// Every step, in the order a run takes them (`--only=` picks some by name).
const STEPS: [(&str, Step); 9] = [
    ("idle", Step::Idle),
    ("cold_qps50", Step::ColdThrottled),
    ("cold_unthrottled", Step::Cold),
    ("shards", Step::Shards),
    ("lease", Step::Lease),
    ("one_ns", Step::OneNs),
    ("latency", Step::Latency),
    ("crd", Step::Crd),
    ("cost", Step::Cost),
];

#[derive(Clone, Copy)]
enum Step {
    Idle,
    ColdThrottled,
    Cold,
    Shards,
    Lease,
    OneNs,
    Latency,
    Crd,
    Cost,
}

impl Step {
    async fn run(self, m: &mut Metrics, p: &Preset) -> Result<()> {
        match self {
            Step::Idle => scenarios::idle(m, p).await,
            Step::ColdThrottled => cold::cold(m, p, DEFAULT_RATE).await,
            Step::Cold => cold::cold(m, p, None).await,
            Step::Shards => shards::shards(m, p).await,
            Step::Lease => lease::lease(m, p).await,
            Step::OneNs => scenarios::one_namespace(m, p).await,
            Step::Latency => scenarios::latencies(m, p).await,
            Step::Crd => scenarios::crd(m, p).await,
            Step::Cost => cost::cost(m, p).await,
        }
    }
}

fn git(args: &[&str]) -> String {
    std::process::Command::new("git")
        .args(args)
        .current_dir(repo_root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn operator_version() -> String {
    std::process::Command::new(runner::operator_bin())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn uptime() -> String {
    std::process::Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    /// bench/README.md lists every step `--only=` accepts, in order.
    #[test]
    fn the_readme_lists_every_step() {
        let readme =
            std::fs::read_to_string(secretbundle_tests::repo_root().join("bench/README.md"))
                .expect("bench/README.md");
        let names: Vec<String> = super::STEPS.iter().map(|(n, _)| format!("`{n}`")).collect();
        let line = format!(
            "Steps (`--only=` takes a comma-separated list): {}",
            names.join(", ")
        );
        let flat = readme.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains(&line), "bench/README.md must say: {line}");
    }
}
