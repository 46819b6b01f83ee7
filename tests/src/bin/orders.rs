//! `make orders`: random install orders (seeds 1-200 by default), each played with the operator
//! and, side by side, as plain ExternalSecrets applied once with no operator (the baseline).
//! Writes bench/results/orders.json after every order: the pass rate, the time from the last
//! piece arriving to every bundle Ready (p50/p95/max), and the baseline's rate.
//!
//! Flags: `--from N` (first seed, 1), `--count N` (200), `--parallel N` (control planes playing
//! at once, 2), `--out PATH`, `--fault-rate R` (the operator injects faults into a fraction R
//! of its requests, seeded by the order's seed; 0). A failed order's logs are copied to target/orders-failures/<seed>/.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use secretbundle_tests::install::{Bench, CONVERGE_WITHIN, Outcome};
use secretbundle_tests::orders::{MAX_GAP, draw};
use secretbundle_tests::repo_root;
use serde_json::{Value, json};

struct Args {
    from: u64,
    count: u64,
    parallel: usize,
    out: std::path::PathBuf,
    fault_rate: f64,
}

fn args() -> Result<Args> {
    let mut a = Args {
        from: 1,
        count: 200,
        parallel: 2,
        out: repo_root().join("bench/results/orders.json"),
        fault_rate: 0.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--from" => a.from = value.parse()?,
            "--count" => a.count = value.parse()?,
            "--parallel" => a.parallel = value.parse()?,
            "--out" => a.out = value.into(),
            "--fault-rate" => {
                a.fault_rate = value.parse()?;
                anyhow::ensure!(
                    (0.0..=1.0).contains(&a.fault_rate),
                    "--fault-rate must be 0 to 1"
                );
            }
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    let started = Instant::now();
    let next = AtomicU64::new(args.from);
    let end = args.from + args.count;
    let outcomes = Mutex::new(Vec::<Outcome>::new());
    let workers = (0..args.parallel.max(1)).map(|_| async {
        let mut bench = Bench::start().await?;
        bench.fault_rate = args.fault_rate;
        loop {
            let seed = next.fetch_add(1, Ordering::Relaxed);
            if seed >= end {
                return Ok::<_, anyhow::Error>(());
            }
            let order = draw(seed);
            let out = bench.play(&order).await;
            println!("{}", line(&out));
            if out.error.is_some() {
                println!("  {order}");
                keep_logs(&bench, seed);
            }
            // Not a failure of the order, but the bench is no longer clean: start afresh.
            if let Some(e) = &out.reset_error {
                println!("  seed {seed}: {e}; the next order gets a new control plane");
                // Its control plane holds a slot: free it first, or the new one waits forever.
                drop(bench);
                bench = Bench::start().await?;
                bench.fault_rate = args.fault_rate;
            }
            let mut all = outcomes.lock().unwrap_or_else(|e| e.into_inner());
            all.push(out);
            all.sort_by_key(|o| o.seed);
            let summary = summary(&args, &all, started.elapsed());
            std::fs::write(&args.out, serde_json::to_string_pretty(&summary)? + "\n")?;
        }
    });
    futures::future::try_join_all(workers).await?;
    let all = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    let summary = summary(&args, &all, started.elapsed());
    println!("{}", serde_json::to_string_pretty(&summary["operator"])?);
    println!(
        "{}",
        serde_json::to_string_pretty(&summary["baseline_no_operator"])?
    );
    println!("written to {}", args.out.display());
    Ok(())
}

fn line(o: &Outcome) -> String {
    let operator = match (&o.error, o.converged) {
        (None, Some(d)) => format!("Ready {:.1}s after the last piece", d.as_secs_f64()),
        (Some(e), _) => format!("FAILED: {e}"),
        (None, None) => "?".into(),
    };
    let baseline = if o.baseline_ok {
        "every Secret".to_string()
    } else {
        format!("failed ({})", o.baseline_failures.len())
    };
    format!(
        "seed {}: operator {operator} ({} faults injected); baseline {baseline}",
        o.seed, o.faults
    )
}

/// A failed order's operator and ESO logs, before the control plane's directory goes.
fn keep_logs(bench: &Bench, seed: u64) {
    let dir = repo_root().join(format!("target/orders-failures/{seed}"));
    let _ = std::fs::create_dir_all(&dir);
    for what in ["operator", "eso"] {
        let _ = std::fs::copy(bench.log(seed, what), dir.join(format!("{what}.log")));
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// p50, p95 and max (nearest rank) of `times`, in milliseconds.
fn percentiles(mut times: Vec<Duration>) -> Value {
    times.sort();
    let at = |q: f64| {
        let rank = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len().max(1));
        times.get(rank - 1).copied().map(millis)
    };
    json!({"orders": times.len(), "p50": at(0.5), "p95": at(0.95), "max": times.last().copied().map(millis)})
}

fn summary(args: &Args, all: &[Outcome], wall: Duration) -> Value {
    let passed: Vec<&Outcome> = all.iter().filter(|o| o.error.is_none()).collect();
    let times = |filter: &dyn Fn(&Outcome) -> bool| {
        percentiles(
            passed
                .iter()
                .filter(|o| filter(o))
                .filter_map(|o| o.converged)
                .collect(),
        )
    };
    let baseline_ok = all.iter().filter(|o| o.baseline_ok).count();
    let refused = all
        .iter()
        .filter(|o| o.baseline_failures.iter().any(|f| f.contains("refused")))
        .count();
    let rate = |n: usize| {
        if all.is_empty() {
            0.0
        } else {
            n as f64 / all.len() as f64
        }
    };
    json!({
        "seeds": {"from": args.from, "to": args.from + args.count - 1, "played": all.len()},
        "fault_rate": args.fault_rate,
        "faults_injected": all.iter().map(|o| o.faults).sum::<usize>(),
        "setup": format!(
            "{} control plane(s) (etcd, kube-apiserver, kube-controller-manager), each with OpenBao, \
             playing orders one after another and reset in between: processes stopped, CRDs \
             deleted (with every bundle, ExternalSecret and store), names fresh per order. Pieces: \
             our CRD, the operator binary, 2-5 bundles with dependsOn, 1-3 namespaces, ESO v0.16.2 \
             CRDs, its controller, the OpenBao ClusterSecretStore; gaps 0-{} ms; refused applies \
             retried at 0.2 s doubling to 1 s; a CRD counts as arrived once Established. Baseline: \
             the same bundles rendered to ExternalSecrets, applied once with kubectl apply at the \
             bundle's moment into a twin namespace, no operator; it may take as long as the \
             operator ({} s after the last piece).",
            args.parallel, MAX_GAP.as_millis(), CONVERGE_WITHIN.as_secs()
        ),
        "operator": {
            "converged": passed.len(),
            "pass_rate": rate(passed.len()),
            "after_last_piece_ms": times(&|_| true),
            "eso_controller_before_its_crds_ms": times(&|o| o.eso_before_crds),
            "eso_controller_after_its_crds_ms": times(&|o| !o.eso_before_crds),
            "store_ready_after_last_piece_ms": percentiles(passed.iter().filter_map(|o| o.store_ready).collect()),
            "after_store_ready_ms": percentiles(passed.iter().filter_map(|o| Some(o.converged?.saturating_sub(o.store_ready?))).collect()),
            "eso_restarts": all.iter().map(|o| o.eso_restarts).sum::<u32>(),
        },
        "baseline_no_operator": {
            "every_secret_present": baseline_ok,
            "rate": rate(baseline_ok),
            "an_apply_refused": refused,
            "applied_but_a_secret_missing": all.len().saturating_sub(baseline_ok + refused),
        },
        "failures": all.iter().filter_map(|o| o.error.as_ref().map(|e| json!({"seed": o.seed, "error": e}))).collect::<Vec<_>>(),
        "resets_failed": all.iter().filter_map(|o| o.reset_error.as_ref().map(|e| json!({"seed": o.seed, "error": e}))).collect::<Vec<_>>(),
        "orders": all.iter().map(|o| json!({
            "seed": o.seed,
            "ok": o.error.is_none(),
            "converged_ms": o.converged.map(millis),
            "baseline_ok": o.baseline_ok,
            "eso_before_crds": o.eso_before_crds,
            "store_ready_ms": o.store_ready.map(millis),
            "faults": o.faults,
        })).collect::<Vec<_>>(),
        "wall_seconds": wall.as_secs(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    })
}
