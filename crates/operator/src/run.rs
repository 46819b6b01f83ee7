//! `run`: logging, the rate-limited client, HTTP endpoints, leader election, the controller.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use kube::client::ClientBuilder;
use kube::{Client, Config};
use prometheus_client::registry::Registry;
use secretbundle_controller::Metrics;
use secretbundle_controller::limit::{LimitLayer, Limiter};
use tokio::sync::watch;
use tower::buffer::BufferLayer;
use tower::retry::RetryLayer;
use tracing::info;

use crate::cli::{LogFormat, RunArgs};
use crate::http::{self, Http};
use crate::leader::{Fence, FenceLayer};
use crate::leader_thread::{self, Candidate, Leader};
use crate::reach::{Reach, ReachLayer};
use crate::retry::Retry;

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    #[cfg(feature = "dhat-heap")]
    let heap = heap_profiler();
    let config = Config::infer()
        .await
        .context("loading kubeconfig or in-cluster config")?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let ready = Arc::new(AtomicBool::new(false));
    let reach = Reach::default();
    let http = Http {
        registry: Arc::new(registry),
        ready: ready.clone(),
        reach: reach.clone(),
    };
    let server = tokio::spawn(http::serve(args.http_addr, http));

    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    let leader = if args.leader_election {
        // A standby is healthy and ready: it serves probes and waits for the lease.
        ready.store(true, Ordering::Relaxed);
        let identity = args
            .identity
            .clone()
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
        // The elector's own thread, runtime and client: it must renew while the controller's
        // client is fenced, without queueing behind its rate limit or its work.
        let candidate = Candidate {
            config: config.clone(),
            reach: reach.clone(),
            namespace: args.lease_namespace.clone(),
            lease: args.lease_name.clone(),
            identity: identity.clone(),
            renewals: metrics.leader_renewals(),
        };
        info!(identity, lease = args.lease_name, "waiting for leadership");
        let Some(leader) = leader_thread::acquire(candidate, stop.clone()).await? else {
            return Ok(());
        };
        info!(identity, "became leader");
        Some(leader)
    } else {
        None
    };
    ready.store(true, Ordering::Relaxed);
    let client = client(
        config,
        &args.faults.layer(),
        &reach,
        leader.as_ref().map(Leader::fence),
        args.qps,
        args.burst,
    )?;
    let _probe = tokio::spawn(reach.probe(client.clone()));

    let mut stop_run = stop.clone();
    let lost = Arc::new(AtomicBool::new(false));
    let lost_flag = lost.clone();
    let leadership_lost = leader.as_ref().map(Leader::lost);
    let shutdown = async move {
        match leadership_lost {
            Some(l) => tokio::select! {
                () = l => lost_flag.store(true, Ordering::Relaxed),
                _ = stop_run.wait_for(|s| *s) => {}
            },
            None => {
                let _ = stop_run.wait_for(|s| *s).await;
            }
        }
        // Written now, while every cache is still full, not after they are dropped.
        #[cfg(feature = "dhat-heap")]
        drop(heap);
    };
    // Returns once every reconcile in flight has finished: no write of ours is pending after it.
    let options = secretbundle_controller::Options {
        concurrency: args.concurrency,
        shard: args.watch_label_selector.clone(),
    };
    secretbundle_controller::run_with(client, metrics, options, shutdown).await;
    // Hand over at once rather than make the standby wait for the Lease to expire.
    if let Some(leader) = leader
        && leader.release().await
    {
        info!("released the Lease");
    }
    server.abort();
    // Another replica may already write: stop at once rather than act on stale leadership.
    anyhow::ensure!(!lost.load(Ordering::Relaxed), "lost leadership");
    info!("stopped");
    Ok(())
}

/// A client limited to `qps` on average with bursts of up to `burst` requests (writes of
/// children first), and, under leader election, fenced: it sends no write unless leadership was
/// renewed recently. Innermost, a layer that notes whether the apiserver answered each request,
/// below it the test-only fault injection (a pass-through unless `--fault-rate` is set), and
/// below that the retry of 429, 503 and 504 answers.
fn client(
    mut config: Config,
    faults: &secretbundle_faults::Faults,
    reach: &Reach,
    fence: Option<Fence>,
    qps: u32,
    burst: u32,
) -> anyhow::Result<Client> {
    let limit = LimitLayer(Limiter::new(qps, burst));
    // kube's own retry, replaced by one that retries a refused watch sooner (`retry.rs`); a
    // buffer makes the stack cloneable, as retrying needs.
    config.default_retry = false;
    let builder = ClientBuilder::try_from(config)?
        .with_layer(&BufferLayer::new(1024))
        .with_layer(&RetryLayer::new(Retry::default()))
        .with_layer(faults)
        .with_layer(&ReachLayer(reach.clone()));
    // The fence sits below the rate limit, so a write is checked when it leaves the queue.
    Ok(match fence {
        Some(fence) => builder
            .with_layer(&FenceLayer(fence))
            .with_layer(&limit)
            .build(),
        None => builder.with_layer(&limit).build(),
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "secretbundle-operator".into())
}

/// `$SB_HEAP_PROFILE/dhat-heap-<pid>.json` (or in the working directory).
#[cfg(feature = "dhat-heap")]
fn heap_profiler() -> dhat::Profiler {
    let dir = std::env::var_os("SB_HEAP_PROFILE").unwrap_or_else(|| ".".into());
    let file = std::path::Path::new(&dir).join(format!("dhat-heap-{}.json", std::process::id()));
    dhat::Profiler::builder().file_name(file).build()
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
