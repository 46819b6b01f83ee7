//! A few random install orders (the pieces of a platform arriving in any order, with GitOps-style
//! retries) on the real control plane, ESO controller and OpenBao: each converges to every bundle
//! Ready with the right values and every status equal to the one the cluster implies. `make
//! orders` plays 200 of them; this plays three chosen ones, then three with 5% of the operator's
//! requests faulted (seeded by the order's seed), or the seeds in ORDERS_SEEDS (comma-separated;
//! ORDERS_FAULT_RATE for faults) to replay a failure.

use secretbundle_tests::faults::RATE;
use secretbundle_tests::install::Bench;
use secretbundle_tests::orders::draw;

#[tokio::test]
async fn random_install_orders_converge() -> anyhow::Result<()> {
    let seeds: Vec<(u64, f64)> = match std::env::var("ORDERS_SEEDS") {
        Ok(s) => {
            let rate = std::env::var("ORDERS_FAULT_RATE").map_or(Ok(0.0), |r| r.parse())?;
            s.split(',')
                .map(|x| x.trim().parse().map(|s| (s, rate)))
                .collect::<Result<_, _>>()?
        }
        // 6: the operator arrives last, a bundle before our CRD, a dependent before its
        // dependency; 35: the operator first, ESO's controller before its CRDs, both of those
        // too; 13: nothing waits on a retry.
        // With faults: 7, 11, 21 (a bundle before our CRD, the operator late, ESO first).
        Err(_) => vec![
            (6, 0.0),
            (35, 0.0),
            (13, 0.0),
            (7, RATE),
            (11, RATE),
            (21, RATE),
        ],
    };
    for (seed, rate) in seeds {
        // A fresh control plane per order: nothing left from the one before.
        let mut bench = Bench::start().await?;
        bench.fault_rate = rate;
        let order = draw(seed);
        let out = bench.play_last(&order).await;
        if let Some(e) = &out.error {
            panic!(
                "install order with seed {seed} did not converge: {e}\n{order}\n\
                 replay: ORDERS_SEEDS={seed} ORDERS_FAULT_RATE={rate} cargo test -p secretbundle-tests --test orders"
            );
        }
        eprintln!(
            "seed {seed} (fault rate {rate}, {} faults injected): all Ready {:?} after the last piece \
             (phases {:?}); baseline (no operator) {}",
            out.faults,
            out.converged.unwrap_or_default(),
            out.phases,
            if out.baseline_ok {
                "ended with every Secret".to_string()
            } else {
                format!("failed: {}", out.baseline_failures.join("; "))
            }
        );
    }
    Ok(())
}
