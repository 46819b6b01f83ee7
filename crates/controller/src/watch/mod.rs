//! Wiring: which changes in the cluster wake which bundles. Everything is driven by watches:
//! bundles, namespaces, the ESO CRDs and (once their CRDs exist) ExternalSecrets and stores.
//! Each watch fills its cache first and only then wakes the bundles its change affects
//! (see [`crate::cache`]); the controller starts once every cache holds a complete list, so a
//! restart neither reports a gate closed that is open nor writes anything that has not changed.

mod bundles;
mod eso;
mod listwatch;
mod namespaces;
mod peers;
mod stream;
mod triggers;

use std::sync::Arc;

use futures::StreamExt;
use futures::channel::mpsc;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use kube::{Client, CustomResourceExt};
use secretbundle_api::SecretBundle;
use tracing::{debug, info, warn};

use self::bundles::{Gone, bundle_events};
use self::listwatch::Lists;
use self::stream::WatchBackoff;
use crate::cache::Caches;
use crate::metrics::Metrics;
use crate::reconcile::{Context, Failures, error_policy, reconcile};
use crate::shard::Shard;
use crate::status::StatusWriter;
use crate::task::AbortOnDrop;

/// How the controller runs.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Bundles reconciled at the same time.
    pub concurrency: u16,
    /// Reconcile only bundles whose labels match (one shard of several). The other shards'
    /// bundles are still read, as dependencies, and their children, as names taken.
    pub shard: Option<Shard>,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let options = Options {
        concurrency,
        shard: None,
    };
    run_with(client, metrics, options, shutdown).await;
}

/// [`run`] with every option.
pub async fn run_with(
    client: Client,
    metrics: Arc<Metrics>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // No permits would block every reconcile forever; the CLI refuses 0, a library caller too.
    let options = Options {
        concurrency: options.concurrency.max(1),
        ..options
    };
    await_own_crd(&client).await;
    let lists = Lists::detect(&client).await;
    let (wake, woken) = mpsc::unbounded();
    let caches = Arc::new(Caches::with_shards(wake, options.shard.is_some()));
    let _peers = options.shard.clone().map(|shard| {
        AbortOnDrop(tokio::spawn(peers::watch(
            client.clone(),
            lists.clone(),
            caches.clone(),
            shard,
        )))
    });
    let _namespaces = AbortOnDrop(tokio::spawn(namespaces::watch(
        client.clone(),
        lists.clone(),
        caches.clone(),
    )));
    let _eso = AbortOnDrop(tokio::spawn(eso::run(
        client.clone(),
        lists.clone(),
        caches.clone(),
        options.shard.clone(),
    )));
    caches.wait_ready().await;
    info!("caches filled; reconciling");

    let (store, writer) = reflector::store();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: secretbundle_api::MANAGER.into(),
            instance: None,
        },
    );
    let status = StatusWriter::new(
        client.clone(),
        store.clone(),
        recorder,
        metrics.clone(),
        options.shard.as_ref().map(|s| s.selector().clone()),
    );
    let failures = Arc::new(Failures::default());
    let gone = Gone {
        metrics: metrics.clone(),
        failures: failures.clone(),
        status: status.clone(),
    };
    let bundle_events = bundle_events(
        &client,
        &lists,
        options.shard.as_ref(),
        writer,
        store.clone(),
        caches.clone(),
        gone,
    );
    let writers: Vec<_> = (0..2)
        .map(|_| AbortOnDrop(tokio::spawn(status.clone().run())))
        .collect();
    let ctx = Arc::new(Context {
        client,
        bundles: store.clone(),
        caches,
        status: status.clone(),
        metrics,
        failures,
        writes: tokio::sync::Semaphore::new(options.concurrency.into()),
        shard: options.shard,
    });
    Controller::for_stream(bundle_events, store)
        .with_config(controller::Config::default().concurrency(options.concurrency))
        .reconcile_on(woken)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(bundle = %obj.name, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile did not complete"),
            }
        })
        .await;
    // Every reconcile has finished; no status write may be left in flight either.
    status.stop();
    status.drained().await;
    drop(writers);
}

/// Returns once the SecretBundle CRD is Established. Started before it (a fresh install where
/// the operator's pod wins the race), the operator would otherwise list a missing resource and
/// back off for tens of seconds; a watch on the CRD wakes it the moment it is there.
async fn await_own_crd(client: &Client) {
    let name = SecretBundle::crd_name();
    let api = Api::<crate::eso::CrdSummary<serde::de::IgnoredAny>>::all(client.clone());
    let wc = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, wc)
        .backoff(WatchBackoff::default())
        .applied_objects()
        .boxed();
    let mut logged = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(crd) if crd.established() => return,
            Ok(_) => {}
            Err(e) => warn!(error = %e, crd = name, "CRD watch failed; retrying"),
        }
        if !logged {
            info!(
                crd = name,
                "waiting for the CRD to be installed and Established"
            );
            logged = true;
        }
    }
}
