//! A few random install orders (the pieces of a platform arriving in any order, with GitOps-style
//! retries) on the real control plane, ESO controller and OpenBao: each converges to every bundle
//! Ready with the right values. `make orders` plays 200 of them; this plays three chosen ones, or the seeds
//! in ORDERS_SEEDS (comma-separated) to replay a failure.

use secretbundle_tests::install::Bench;
use secretbundle_tests::orders::draw;

#[tokio::test]
async fn random_install_orders_converge() -> anyhow::Result<()> {
    let seeds: Vec<u64> = match std::env::var("ORDERS_SEEDS") {
        Ok(s) => s
            .split(',')
            .map(|x| x.trim().parse())
            .collect::<Result<_, _>>()?,
        // 6: the operator arrives last, a bundle before our CRD, a dependent before its
        // dependency; 35: the operator first, ESO's controller before its CRDs, both of those
        // too; 13: nothing waits on a retry.
        Err(_) => vec![6, 35, 13],
    };
    for seed in seeds {
        // A fresh control plane per order: nothing left from the one before.
        let bench = Bench::start().await?;
        let order = draw(seed);
        let out = bench.play_last(&order).await;
        if let Some(e) = &out.error {
            panic!(
                "install order with seed {seed} did not converge: {e}\n{order}\n\
                 replay: ORDERS_SEEDS={seed} cargo test -p secretbundle-tests --test orders"
            );
        }
        eprintln!(
            "seed {seed}: all Ready {:?} after the last piece (phases {:?}); baseline (no operator) {}",
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
