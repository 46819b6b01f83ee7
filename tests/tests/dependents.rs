//! No lost wake-ups: dependents are evaluated against state at least as new as the event that
//! woke them. Stress: 40 bundles depend on one whose readiness flips five times in quick
//! succession; every dependent converges to the dependency's final state, both ways.
//! ESO's controller is not running here: tests write ExternalSecret status as ESO would.

use std::time::{Duration, Instant};

use kube::api::ListParams;
use secretbundle_api::SecretBundle;
use secretbundle_controller::eso::EsoVersion;
use secretbundle_tests::{Env, eso, simple_bundle, wait};

const DEPENDENTS: usize = 40;

/// Waits for every dependent to report `reason`; returns the slowest one's time since `since`.
async fn all_reach(env: &Env, names: &[String], reason: &str, since: Instant) -> Duration {
    let waits = names.iter().map(|n| async move {
        wait::bundle_reason(&env.bundles(), n, reason)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        since.elapsed()
    });
    futures::future::join_all(waits)
        .await
        .into_iter()
        .max()
        .unwrap_or_default()
}

/// Applies the dependency five times in a row without waiting, alternating `suspend`, so it
/// ends with `suspend: last`. Its dependents see some of the states and must end on the last.
async fn flip(env: &Env, platform: &mut SecretBundle, last: bool) -> anyhow::Result<Instant> {
    for i in 0..5 {
        platform.spec.suspend = (i % 2 == 0) == last;
        env.apply_bundle(platform).await?;
    }
    anyhow::ensure!(platform.spec.suspend == last);
    Ok(Instant::now())
}

#[tokio::test]
async fn forty_dependents_follow_five_quick_flips_of_their_dependency() -> anyhow::Result<()> {
    let env = Env::start_with_eso_v1().await?;
    for ns in ["ameide", "apps"] {
        env.create_namespace(ns).await?;
    }
    let mut platform = simple_bundle("platform", "ameide", &["db"]);
    platform.spec.suspend = true;
    env.apply_bundle(&platform).await?;
    wait::bundle_reason(&env.bundles(), "platform", "Suspended").await?;

    let names: Vec<String> = (0..DEPENDENTS).map(|i| format!("service-{i}")).collect();
    for n in &names {
        let mut b = simple_bundle(n, "apps", &[n]);
        b.spec.depends_on = vec!["platform".into()];
        env.apply_bundle(&b).await?;
    }
    all_reach(&env, &names, "WaitingForDependency", Instant::now()).await;

    // Its child is synced once; suspend never touches it, so each resume is Ready at once.
    platform.spec.suspend = false;
    env.apply_bundle(&platform).await?;
    let es = eso::external_secrets(&env.client, "ameide", EsoVersion::V1);
    wait::until_count(&es, &ListParams::default(), 1).await?;
    eso::set_ready(&es, "db", "True", "SecretSynced", "").await?;
    wait::bundle_reason(&env.bundles(), "platform", "Ready").await?;
    platform.spec.suspend = true;
    env.apply_bundle(&platform).await?;
    wait::bundle_reason(&env.bundles(), "platform", "Suspended").await?;

    // Five flips ending Ready: every dependent applies its child.
    let since = flip(&env, &mut platform, false).await?;
    let slowest_up = all_reach(&env, &names, "SecretsNotReady", since).await;
    let apps = eso::external_secrets(&env.client, "apps", EsoVersion::V1);
    wait::until_count(&apps, &ListParams::default(), DEPENDENTS).await?;

    // Five flips ending not Ready: every dependent closes its gate again.
    let since = flip(&env, &mut platform, true).await?;
    let slowest_down = all_reach(&env, &names, "WaitingForDependency", since).await;
    println!(
        "slowest of {DEPENDENTS} dependents after the last flip: {slowest_up:?} to apply, {slowest_down:?} to close"
    );
    Ok(())
}
