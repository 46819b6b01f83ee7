//! The floor: the least a client can do to deliver the same children. It reads the bundles once,
//! renders exactly what the operator applies, and server-side-applies each object once, with
//! the operator's concurrency and the operator's client-side rate limit. Prints its CPU time.
//!
//! With `--watch` it is the floor + watches anchor: before its first apply it also holds the
//! two ExternalSecret watches the operator holds (its own children in full, by label; every
//! other ExternalSecret by metadata), and it is done when its own watch has seen every object
//! it applied, as the operator's cache must.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::{Stream, StreamExt, TryStreamExt, stream};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use kube::{Client, Config, ResourceExt};
use secretbundle_api::{BUNDLE_LABEL, MANAGER};
use secretbundle_controller::eso::{EsoKind, EsoVersion};
use serde_json::json;
use tokio::sync::mpsc;
use tower::limit::RateLimitLayer;

/// Reconciles the operator runs at once by default, and so applies in flight.
const CONCURRENCY: usize = 4;

/// `bench floor KUBECONFIG --qps=N --burst=N [--watch]`
pub async fn main(args: &[String]) -> Result<()> {
    let path = args
        .first()
        .context("usage: bench floor KUBECONFIG --qps=N --burst=N [--watch]")?;
    let flag = |name: &str| -> Result<u32> {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .with_context(|| format!("--{name} missing"))?
            .parse()
            .context(name.to_string())
    };
    let watch = args.iter().any(|a| a == "--watch");
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = limited(config, flag("qps")?, flag("burst")?)?;
    let ar = EsoKind::ExternalSecret.api_resource(EsoVersion::V1);
    let seen = if watch {
        Some(Watches::start(&client, &ar).await?)
    } else {
        None
    };
    let objects = crate::cluster::desired(&client).await?;
    let keys: HashSet<String> = objects.iter().map(key).collect();
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
    if let Some(mut seen) = seen {
        seen.all(keys).await?;
    }
    let cpu = crate::runner::cpu_seconds("/proc/self/stat")?;
    println!("{}", json!({"applied": applied, "cpu_seconds": cpu}));
    Ok(())
}

fn key(o: &DynamicObject) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

/// The operator's two ExternalSecret watches, drained on their own tasks; reports the keys of
/// the labelled objects they deliver.
struct Watches {
    ours: mpsc::UnboundedReceiver<String>,
}

impl Watches {
    /// Starts both watches and returns once each has listed.
    async fn start(client: &Client, ar: &kube::core::ApiResource) -> Result<Self> {
        let (tx, ours) = mpsc::unbounded_channel();
        let (listed_tx, mut listed) = mpsc::unbounded_channel();
        let full = watcher(
            Api::<DynamicObject>::all_with(client.clone(), ar),
            watcher::Config::default()
                .labels(BUNDLE_LABEL)
                .streaming_lists(),
        );
        let meta = watcher(
            Api::<PartialObjectMeta<DynamicObject>>::all_with(client.clone(), ar),
            watcher::Config::default()
                .labels(&format!("!{BUNDLE_LABEL}"))
                .streaming_lists(),
        );
        tokio::spawn(drain(full, Some(tx), listed_tx.clone()));
        tokio::spawn(drain(meta, None, listed_tx));
        for _ in 0..2 {
            listed
                .recv()
                .await
                .context("a watch ended before listing")?;
        }
        Ok(Watches { ours })
    }

    /// Waits until the labelled watch has delivered every key.
    async fn all(&mut self, mut keys: HashSet<String>) -> Result<()> {
        while !keys.is_empty() {
            let k = tokio::time::timeout(Duration::from_secs(600), self.ours.recv())
                .await
                .context("own watch: objects missing after 600 s")?
                .context("own watch ended")?;
            keys.remove(&k);
        }
        Ok(())
    }
}

async fn drain<K: ResourceExt>(
    events: impl Stream<Item = watcher::Result<watcher::Event<K>>>,
    keys: Option<mpsc::UnboundedSender<String>>,
    listed: mpsc::UnboundedSender<()>,
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::InitDone) => {
                let _ = listed.send(());
            }
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                if let Some(tx) = &keys {
                    let _ = tx.send(format!(
                        "{}/{}",
                        o.namespace().unwrap_or_default(),
                        o.name_any()
                    ));
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("floor watch: {e}"),
        }
    }
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
