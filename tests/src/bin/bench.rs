//! `make bench`: how fast gates open and how reconcile throughput scales with concurrency, on
//! one real control plane. Writes bench/results/latest.json; ratios come from one run, since
//! absolute times on a shared machine mean little.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{CustomResourceExt, ResourceExt};
use prometheus_client::registry::Registry;
use secretbundle_api::SecretBundle;
use secretbundle_controller::Metrics;
use secretbundle_controller::eso::{EsoKind, EsoVersion};
use secretbundle_tests::{ControlPlane, apply_crds, eso, repo_root, simple_bundle};
use serde_json::json;

const BUNDLES: usize = 150;
const LATENCY_SAMPLES: usize = 20;

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cp = ControlPlane::start().await?;
    let client = cp.client().await?;
    apply_crds(&client, vec![SecretBundle::crd()]).await?;
    apply_crds(&client, eso::crds("v2.9.0")?).await?;
    eso::ready_cluster_store(&client, EsoVersion::V1, eso::TEST_STORE).await?;

    let c1 = throughput(&client, 1, "c1").await?;
    let c4 = throughput(&client, 4, "c4").await?;
    let latency = gate_latency(&client).await?;
    let result = json!({
        "bundles": BUNDLES,
        "throughput_seconds": {"concurrency_1": c1, "concurrency_4": c4},
        "speedup_concurrency_4_over_1": c1 / c4,
        "gate_open_latency_ms": latency,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    let dir = repo_root().join("bench/results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("latest.json"),
        serde_json::to_string_pretty(&result)? + "\n",
    )?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

fn operator(client: &kube::Client, concurrency: u16) -> tokio::task::JoinHandle<()> {
    let metrics = Arc::new(Metrics::new(&mut Registry::default()));
    tokio::spawn(secretbundle_controller::run(
        client.clone(),
        metrics,
        concurrency,
        std::future::pending(),
    ))
}

/// Seconds for a fresh operator to apply BUNDLES bundles (one child each) created up front.
async fn throughput(client: &kube::Client, concurrency: u16, prefix: &str) -> Result<f64> {
    let ns = format!("bench-{prefix}");
    let nsobj = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&Default::default(), &nsobj)
        .await?;
    let bundles = Api::<SecretBundle>::all(client.clone());
    for i in 0..BUNDLES {
        let name = format!("{prefix}-{i}");
        let b = simple_bundle(&name, &ns, &[&name]);
        bundles.create(&Default::default(), &b).await?;
    }
    eprintln!(
        "created {BUNDLES} bundles in {ns}; starting an operator with concurrency {concurrency}"
    );
    let es: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &EsoKind::ExternalSecret.api_resource(EsoVersion::V1),
    );
    let start = Instant::now();
    let op = operator(client, concurrency);
    let mut seen = BTreeSet::new();
    let mut events = watcher(es, watcher::Config::default())
        .applied_objects()
        .boxed();
    while seen.len() < BUNDLES {
        let next = tokio::time::timeout(Duration::from_secs(60), events.next()).await;
        let Ok(Some(event)) = next else {
            anyhow::bail!("stalled at {} of {BUNDLES} children", seen.len())
        };
        if let Ok(obj) = event {
            seen.insert(
                obj.labels()
                    .get(secretbundle_api::BUNDLE_LABEL)
                    .cloned()
                    .unwrap_or_default(),
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    op.abort();
    Ok(secs)
}

/// Milliseconds from creating a missing namespace to the waiting bundle's child existing.
async fn gate_latency(client: &kube::Client) -> Result<serde_json::Value> {
    let op = operator(client, 4);
    let bundles = Api::<SecretBundle>::all(client.clone());
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    let mut samples = Vec::new();
    for i in 0..LATENCY_SAMPLES {
        let ns = format!("late-{i}");
        bundles
            .create(&Default::default(), &simple_bundle(&ns, &ns, &["s"]))
            .await?;
        let b =
            secretbundle_tests::wait::bundle_reason(&bundles, &ns, "WaitingForNamespace").await?;
        drop(b);
        let es: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns,
            &EsoKind::ExternalSecret.api_resource(EsoVersion::V1),
        );
        let start = Instant::now();
        namespaces
            .create(
                &Default::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await?;
        let mut events = watcher(es, watcher::Config::default())
            .applied_objects()
            .boxed();
        tokio::time::timeout(Duration::from_secs(30), events.next()).await?;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    op.abort();
    samples.sort_by(f64::total_cmp);
    Ok(
        json!({"median": samples[samples.len() / 2], "p90": samples[samples.len() * 9 / 10], "max": samples[samples.len() - 1]}),
    )
}
