//! The floor: the least a client can do to deliver the same children. It reads the bundles once,
//! renders exactly what the operator applies, and server-side-applies each object once, with
//! the operator's concurrency and the operator's client-side rate limit. Prints its CPU time.
//!
//! With `--watch` it is the floor + watches anchor: before its first apply it also holds the
//! two ExternalSecret watches the operator holds (its own children in full, by label; every
//! other ExternalSecret by metadata), and it is done when its own watch has seen every object
//! it applied, as the operator's cache must.
//!
//! With `--bundle-writes` (and `--watch`) it is the floor + watches + bundle writes anchor: it
//! also watches the bundles, and makes the two writes of each bundle the operator makes, the
//! finalizer before its children and the status after them, bundle by bundle like the
//! operator's reconciles. What the operator costs beyond this anchor is its own; the rest is the
//! apiserver's price of those writes.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::{Stream, StreamExt, TryStreamExt, stream};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::ApiResource;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use kube::{Client, Config, Resource as _, ResourceExt};
use secretbundle_api::{BUNDLE_LABEL, FINALIZER, MANAGER, SecretBundle};
use secretbundle_controller::cache::Child;
use secretbundle_controller::eso::{EsoKind, EsoVersion};
use secretbundle_controller::status::{Report, child_status, next_status, summarize};
use serde_json::json;
use tokio::sync::mpsc;
use tower::limit::RateLimitLayer;

/// Reconciles the operator runs at once by default, and so applies in flight.
const CONCURRENCY: usize = 4;

/// Which anchor a floor run is: what the floor client does besides applying the children.
#[derive(Clone, Copy, Debug)]
pub enum Anchor {
    /// The children's applies alone.
    Floor,
    /// Also the operator's two ExternalSecret watches.
    Watches,
    /// Also the operator's bundle watch and its two writes of each bundle: finalizer and status.
    BundleWrites,
}

impl Anchor {
    /// The anchor's name in the results (`<step>.<key>_s`, ...).
    pub fn key(self) -> &'static str {
        match self {
            Anchor::Floor => "floor",
            Anchor::Watches => "floor_watch",
            Anchor::BundleWrites => "floor_bundles",
        }
    }

    /// The `bench floor` flags that make it.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Anchor::Floor => &[],
            Anchor::Watches => &["--watch"],
            Anchor::BundleWrites => &["--watch", "--bundle-writes"],
        }
    }
}

/// `bench floor KUBECONFIG --qps=N --burst=N [--watch [--bundle-writes]]`
pub async fn main(args: &[String]) -> Result<()> {
    let path = args
        .first()
        .context("usage: bench floor KUBECONFIG --qps=N --burst=N [--watch [--bundle-writes]]")?;
    let flag = |name: &str| -> Result<u32> {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .with_context(|| format!("--{name} missing"))?
            .parse()
            .context(name.to_string())
    };
    let watch = args.iter().any(|a| a == "--watch");
    let bundle_writes = args.iter().any(|a| a == "--bundle-writes");
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = limited(config, flag("qps")?, flag("burst")?)?;
    let ar = EsoKind::ExternalSecret.api_resource(EsoVersion::V1);
    let seen = if watch {
        Some(Watches::start(&client, &ar, bundle_writes).await?)
    } else {
        None
    };
    let (applied, keys) = if bundle_writes {
        with_bundle_writes(&client, &ar).await?
    } else {
        children_only(&client, &ar).await?
    };
    if let Some(mut seen) = seen {
        seen.all(keys).await?;
    }
    let cpu = crate::runner::cpu_seconds("/proc/self/stat")?;
    println!("{}", json!({"applied": applied, "cpu_seconds": cpu}));
    Ok(())
}

/// Applies every child, `CONCURRENCY` at once. Returns how many and their keys.
async fn children_only(client: &Client, ar: &ApiResource) -> Result<(u64, HashSet<String>)> {
    let objects = crate::cluster::desired(client).await?;
    let keys: HashSet<String> = objects.iter().map(key).collect();
    let pp = PatchParams::apply(MANAGER).force();
    let applied = stream::iter(objects)
        .map(|o| {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &o.namespace().unwrap_or_default(), ar);
            let pp = pp.clone();
            async move { api.patch(&o.name_any(), &pp, &Patch::Apply(&o)).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_fold(0u64, |n, _| async move { Ok(n + 1) })
        .await?;
    Ok((applied, keys))
}

/// Bundle by bundle, `CONCURRENCY` at once as the operator reconciles them: the finalizer, the
/// children one after another, then the status. Returns how many children and their keys.
async fn with_bundle_writes(client: &Client, ar: &ApiResource) -> Result<(u64, HashSet<String>)> {
    let bundles = Api::<SecretBundle>::all(client.clone())
        .list(&Default::default())
        .await?
        .items;
    let mut work = Vec::with_capacity(bundles.len());
    let mut keys = HashSet::new();
    for b in bundles {
        let children = crate::cluster::rendered(&b)?;
        keys.extend(children.iter().map(key));
        work.push((b, children));
    }
    let applied = stream::iter(work)
        .map(|(b, children)| one_bundle(client, ar, b, children))
        .buffer_unordered(CONCURRENCY)
        .try_fold(0u64, |n, k| async move { Ok(n + k) })
        .await?;
    Ok((applied, keys))
}

/// The operator's writes for one bundle, made with its own code: the finalizer as kube-runtime's
/// finalizer helper adds it, each of its rendered `children` as applied, the status its status
/// code builds from the applied children, server-side applied with its field manager.
async fn one_bundle(
    client: &Client,
    ar: &ApiResource,
    b: SecretBundle,
    children: Vec<DynamicObject>,
) -> Result<u64> {
    let api = Api::<SecretBundle>::all(client.clone());
    let name = b.name_any();
    let add: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
    ]))?;
    let b = api
        .patch(&name, &PatchParams::default(), &Patch::Json::<()>(add))
        .await?;
    let pp = PatchParams::apply(MANAGER).force();
    let mut secrets = Vec::new();
    for (entry, o) in b.spec.secrets.iter().zip(children) {
        let es: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &o.namespace().unwrap_or_default(), ar);
        let applied = es.patch(&o.name_any(), &pp, &Patch::Apply(&o)).await?;
        let child: Child = serde_json::from_value(serde_json::to_value(&applied)?)?;
        secrets.push(child_status(&entry.name, Some(&child), false));
    }
    let count = secrets.len() as u64;
    let (reason, message) = summarize(&secrets);
    let report = Report {
        reason,
        message,
        eso_version: Some(EsoVersion::V1),
        secrets,
        last_handled_refresh: None,
    };
    let status = next_status(&b, &report, &Time(k8s_openapi::jiff::Timestamp::now()));
    let patch = json!({
        "apiVersion": SecretBundle::api_version(&()),
        "kind": SecretBundle::kind(&()),
        "status": status,
    });
    api.patch_status(&name, &pp, &Patch::Apply(&patch)).await?;
    Ok(count)
}

fn key(o: &DynamicObject) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

/// The operator's two ExternalSecret watches (and its SecretBundle watch, when the anchor writes
/// bundles), drained on their own tasks; reports the keys of the labelled objects they deliver.
struct Watches {
    ours: mpsc::UnboundedReceiver<String>,
}

impl Watches {
    /// Starts the watches and returns once each has listed.
    async fn start(client: &Client, ar: &ApiResource, bundles: bool) -> Result<Self> {
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
        tokio::spawn(drain(meta, None, listed_tx.clone()));
        let mut watches = 2;
        if bundles {
            let all = watcher(
                Api::<SecretBundle>::all(client.clone()),
                watcher::Config::default().streaming_lists(),
            );
            tokio::spawn(drain(all, None, listed_tx.clone()));
            watches += 1;
        }
        // Only the watches hold the channel now: one that ends before listing closes it.
        drop(listed_tx);
        for _ in 0..watches {
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
