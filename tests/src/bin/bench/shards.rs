//! Two shards: the unthrottled cold start's bundles split by label over two operator processes
//! on one control plane (`--watch-label-selector=sharding.secrets.ameide.io/key=a` and `=b`).
//! Each should hold about half the memory of one replica, and the two together should not be
//! slower than one replica alone (`shards.*`, with ratios to this run's `cold_unthrottled`).

use std::time::{Duration, Instant};

use anyhow::Result;
use kube::ResourceExt;

use crate::cluster::{Cluster, OPERATOR, bundles, child_keys, names};
use crate::observer::Observer;
use crate::runner::Measured;
use crate::scenarios::{LONG, Metrics, Preset, secs, size_label};

const KEY: &str = "sharding.secrets.ameide.io/key";
const SHARDS: [&str; 2] = ["a", "b"];

pub async fn shards(m: &mut Metrics, p: &Preset) -> Result<()> {
    let (count, secrets, spread) = p.cold;
    let nss: Vec<String> = (0..spread).map(|i| format!("team-{i}")).collect();
    let mut set = bundles("svc", count, secrets, &nss);
    for (i, b) in set.iter_mut().enumerate() {
        b.labels_mut()
            .insert(KEY.into(), SHARDS[i % SHARDS.len()].into());
    }
    let (keys, bundle_names) = (child_keys(&set), names(&set));
    m.insert("shards.children".into(), keys.len() as f64);

    let c = Cluster::seeded(&nss, set).await?;
    let kc = c.kubeconfig_for(OPERATOR).await?;
    let obs = Observer::start(&c.client);
    let server0 = c.server_cpu()?;
    let t0 = Instant::now();
    let mut ops = Vec::new();
    for shard in SHARDS {
        let selector = format!("--watch-label-selector={KEY}={shard}");
        ops.push(Measured::operator_with(
            &kc,
            &format!("shards-{shard}"),
            None,
            &[&selector],
        )?);
    }
    let done = obs.all_children(&keys, LONG).await?;
    m.insert("shards.seconds".into(), secs(t0, done));
    let status = obs
        .bundles_reason(&bundle_names, "SecretsNotReady", LONG)
        .await?;
    m.insert("shards.status_s".into(), secs(t0, status));
    let server = c.server_cpu()?;
    m.insert("shards.apiserver_cpu_s".into(), server.0 - server0.0);
    // As the single replica's RSS is read: after the same settling time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut largest: f64 = 0.0;
    for (shard, op) in SHARDS.iter().zip(&ops) {
        let rss = op.rss_mib()?.0;
        largest = largest.max(rss);
        m.insert(format!("shards.rss_mib.{shard}"), rss);
        m.insert(format!("shards.cpu_s.{shard}"), op.cpu_seconds()?);
    }
    let size = size_label(keys.len());
    let ratio = |a: f64, b: Option<&f64>| b.map_or(f64::NAN, |b| a / b);
    let one = m.get("cold_unthrottled.operator_s").copied();
    m.insert(
        "shards.seconds_ratio".into(),
        ratio(secs(t0, done), one.as_ref()),
    );
    let one_rss = m.get(&format!("rss_mib.{size}")).copied();
    m.insert("shards.rss_ratio".into(), ratio(largest, one_rss.as_ref()));
    if let (Some(idle), Some(one_rss)) = (m.get("rss_mib.idle").copied(), one_rss) {
        m.insert(
            "shards.rss_above_idle_ratio".into(),
            (largest - idle) / (one_rss - idle),
        );
    }
    for mut op in ops {
        op.stop().await?;
    }
    Ok(())
}
