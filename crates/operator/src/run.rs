//! `run`: logging, the rate-limited client, HTTP endpoints, leader election, the controller.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use kube::client::ClientBuilder;
use kube::{Client, Config};
use kube_lease_manager::LeaseManagerBuilder;
use prometheus_client::registry::Registry;
use secretbundle_controller::Metrics;
use tokio::sync::watch;
use tower::limit::RateLimitLayer;
use tracing::info;

use crate::cli::{LogFormat, RunArgs};
use crate::http::{self, Http};

/// How long a lease stays valid without renewal; a standby takes over within this plus `LEASE_GRACE`.
const LEASE_SECONDS: u64 = 15;
const LEASE_GRACE: u64 = 5;

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let client = client(args.qps, args.burst).await?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let ready = Arc::new(AtomicBool::new(false));
    let http = Http {
        registry: Arc::new(registry),
        ready: ready.clone(),
    };
    let server = tokio::spawn(http::serve(args.http_addr, http));

    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    let mut leading = if args.leader_election {
        // A standby is healthy and ready: it serves probes and waits for the lease.
        ready.store(true, Ordering::Relaxed);
        let identity = args
            .identity
            .clone()
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
        let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
            .with_namespace(&args.lease_namespace)
            .with_identity(&identity)
            .with_duration(LEASE_SECONDS)
            .with_grace(LEASE_GRACE)
            .build()
            .await
            .context("setting up leader election")?;
        let (mut leading, _task) = manager.watch().await;
        info!(identity, lease = args.lease_name, "waiting for leadership");
        let mut stop_wait = stop.clone();
        tokio::select! {
            r = leading.wait_for(|l| *l) => { r.context("leader election stopped")?; }
            _ = stop_wait.wait_for(|s| *s) => return Ok(()),
        }
        info!(identity, "became leader");
        Some(leading)
    } else {
        None
    };
    ready.store(true, Ordering::Relaxed);

    let mut stop_run = stop.clone();
    let lost = Arc::new(AtomicBool::new(false));
    let lost_flag = lost.clone();
    let shutdown = async move {
        match leading.as_mut() {
            Some(l) => tokio::select! {
                _ = l.wait_for(|l| !*l) => lost_flag.store(true, Ordering::Relaxed),
                _ = stop_run.wait_for(|s| *s) => {}
            },
            None => {
                let _ = stop_run.wait_for(|s| *s).await;
            }
        }
    };
    secretbundle_controller::run(client, metrics, args.concurrency, shutdown).await;
    server.abort();
    // Another replica may already write: stop at once rather than act on stale leadership.
    anyhow::ensure!(!lost.load(Ordering::Relaxed), "lost leadership");
    info!("stopped");
    Ok(())
}

/// A client limited to `qps` on average with bursts of up to `burst` requests.
async fn client(qps: u32, burst: u32) -> anyhow::Result<Client> {
    let config = Config::infer()
        .await
        .context("loading kubeconfig or in-cluster config")?;
    let qps = qps.max(1);
    let burst = burst.max(qps);
    let period = Duration::from_secs_f64(f64::from(burst) / f64::from(qps));
    let builder =
        ClientBuilder::try_from(config)?.with_layer(&RateLimitLayer::new(u64::from(burst), period));
    Ok(builder.build())
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
