//! The test-only fault layer (crate `secretbundle-faults`) in the harness: the in-process
//! operator's client built with it, and the rate and seed taken from the environment.
//!
//! `SB_FAULT_RATE=0.05 SB_FAULT_SEED=7 cargo test -p secretbundle-tests --test e2e` replays any
//! suite with faults; the operator binary takes the same variables (`--fault-rate`,
//! `--fault-seed`).

use anyhow::Result;
use kube::Client;
use kube::client::ClientBuilder;
use secretbundle_controller::limit::LimitLayer;
use secretbundle_faults::{Faults, Plan};

/// The rate every fault suite uses.
pub const RATE: f64 = 0.05;

/// `SB_FAULT_RATE` (0 to 1) and `SB_FAULT_SEED` (default 1), when the rate is set and above 0.
pub fn from_env() -> Option<Plan> {
    let rate: f64 = std::env::var("SB_FAULT_RATE").ok()?.parse().ok()?;
    let seed = std::env::var("SB_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    (rate > 0.0).then(|| Plan::new(rate, seed))
}

/// A seed for a test from its name (FNV-1a: stable everywhere), unless `SB_FAULT_SEED` says.
pub fn seed_for(test: &str) -> u64 {
    if let Some(s) = std::env::var("SB_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return s;
    }
    test.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A client like the operator's (faults innermost, under the rate limit when there is one).
pub fn client(
    config: &kube::Config,
    faults: &Faults,
    limit: Option<&LimitLayer>,
) -> Result<Client> {
    let builder = ClientBuilder::try_from(config.clone())?.with_layer(faults);
    Ok(match limit {
        Some(l) => builder.with_layer(l).build(),
        None => builder.build(),
    })
}
