//! `make upgrade-test`: the last release (RELEASES.md, built by hack/release.sh) converges a
//! fleet of bundles with real ESO and OpenBao, then is replaced by this build, once with Helm
//! and once with plain manifests. Writes bench/results/upgrade.json and fails when the new
//! operator rewrote anything.
//!
//!   upgrade [--bundles N] [--children M] [--namespaces K] [--modes helm,manifests]

use anyhow::{Context as _, Result, bail};
use secretbundle_tests::controlplane::built;
use secretbundle_tests::process::operator_bin;
use secretbundle_tests::repo_root;
use secretbundle_tests::upgrade::{Mode, Plan, run};
use serde_json::json;

fn arg(args: &[String], name: &str, default: usize) -> Result<usize> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name} needs a number")),
        None => Ok(default),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (bundles, children) = (arg(&args, "--bundles", 500)?, arg(&args, "--children", 10)?);
    let namespaces = arg(&args, "--namespaces", bundles.div_ceil(10))?;
    let modes = match args.iter().position(|a| a == "--modes") {
        Some(i) => args.get(i + 1).context("--modes needs a list")?.clone(),
        None => "helm,manifests".into(),
    };
    let modes: Vec<Mode> = modes
        .split(',')
        .map(|m| match m {
            "helm" => Ok(Mode::Helm),
            "manifests" => Ok(Mode::Manifests),
            other => bail!("--modes: unknown mode {other:?} (helm, manifests)"),
        })
        .collect::<Result<_>>()?;
    let old = built("hack/release.sh")?;
    let commit = old
        .file_name()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for mode in modes {
        let plan = Plan {
            mode,
            bundles,
            children,
            namespaces,
        };
        eprintln!("upgrade with {mode:?}: {bundles} bundles x {children} children");
        let report = run(plan, &old, &repo_root(), &operator_bin()).await?;
        if let Err(e) = report.check() {
            failures.push(format!("{mode:?}: {e:#}"));
        }
        eprintln!("{}", serde_json::to_string_pretty(&report)?);
        reports.push(report);
    }
    let out = repo_root().join("bench/results/upgrade.json");
    let result = json!({
        "from": {"commit": commit, "releases": "RELEASES.md"},
        "to": env!("CARGO_PKG_VERSION"),
        "failures": failures,
        "runs": reports,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&result)? + "\n")?;
    eprintln!("wrote {}", out.display());
    if !failures.is_empty() {
        bail!("upgrade broke promises:\n{}", failures.join("\n"));
    }
    Ok(())
}
