//! The floor: the least a client can do to deliver the same children. It reads the bundles once,
//! renders exactly what the operator applies, and server-side-applies each object once, with
//! the operator's concurrency and the operator's client-side rate limit. Prints its CPU time.

use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use secretbundle_api::MANAGER;
use secretbundle_controller::eso::{EsoKind, EsoVersion};
use serde_json::json;
use tower::limit::RateLimitLayer;

/// Reconciles the operator runs at once by default, and so applies in flight.
const CONCURRENCY: usize = 4;

/// `bench floor KUBECONFIG --qps=N --burst=N`
pub async fn main(args: &[String]) -> Result<()> {
    let path = args
        .first()
        .context("usage: bench floor KUBECONFIG --qps=N --burst=N")?;
    let flag = |name: &str| -> Result<u32> {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .with_context(|| format!("--{name} missing"))?
            .parse()
            .context(name.to_string())
    };
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = limited(config, flag("qps")?, flag("burst")?)?;
    let objects = crate::cluster::desired(&client).await?;
    let ar = EsoKind::ExternalSecret.api_resource(EsoVersion::V1);
    let pp = PatchParams::apply(MANAGER).force();
    let applied = stream::iter(objects)
        .map(|o| {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &o.namespace().unwrap_or_default(), &ar);
            let pp = pp.clone();
            async move { api.patch(&o.name_any(), &pp, &Patch::Apply(&o)).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_fold(0u64, |n, _| async move { Ok(n + 1) })
        .await?;
    let cpu = crate::runner::cpu_seconds("/proc/self/stat")?;
    println!("{}", json!({"applied": applied, "cpu_seconds": cpu}));
    Ok(())
}

/// The operator's client: `burst` requests per `burst / qps` seconds.
fn limited(config: Config, qps: u32, burst: u32) -> Result<Client> {
    let qps = qps.max(1);
    let burst = burst.max(qps);
    let period = Duration::from_secs_f64(f64::from(burst) / f64::from(qps));
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&RateLimitLayer::new(u64::from(burst), period))
        .build())
}

/// Reads what the floor printed: its CPU seconds.
pub fn cpu_from_log(log: &std::path::Path) -> Result<f64> {
    let text = std::fs::read_to_string(log)?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("no result in {}", log.display()))?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    v["cpu_seconds"].as_f64().context("cpu_seconds")
}
