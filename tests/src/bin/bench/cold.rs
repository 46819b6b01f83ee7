//! Cold start: every bundle exists before the process under test starts; timed until every
//! child exists. The operator, the floor, the floor + watches anchor and kubectl, each on its
//! own fresh control plane, with what each cost the client, kube-apiserver and etcd.

use std::time::{Duration, Instant};

use anyhow::Result;
use secretbundle_api::SecretBundle;

use crate::cluster::{Cluster, FLOOR, OPERATOR, bundles, child_keys, desired, names};
use crate::floor::Anchor;
use crate::observer::Observer;
use crate::runner::{Measured, Rate, log_dir};
use crate::scenarios::{LONG, Metrics, Preset, SHORT, restart, secs, size_label};

/// Cold start: every bundle exists before the runner starts; timed until every child exists.
/// At `rate: None` also kubectl, and a restart of the converged operator.
pub async fn cold(m: &mut Metrics, p: &Preset, rate: Rate) -> Result<()> {
    let (count, secrets, spread) = if rate.is_some() {
        p.cold_throttled
    } else {
        p.cold
    };
    let key = if rate.is_some() {
        "cold_qps50"
    } else {
        "cold_unthrottled"
    };
    let nss: Vec<String> = (0..spread).map(|i| format!("team-{i}")).collect();
    let set = bundles("svc", count, secrets, &nss);
    let (keys, bundle_names) = (child_keys(&set), names(&set));
    m.insert(format!("{key}.children"), keys.len() as f64);

    let c = Cluster::seeded(&nss, set.clone()).await?;
    let kc = c.kubeconfig_for(OPERATOR).await?;
    let obs = Observer::start(&c.client);
    let mark = c.audit_mark();
    let server0 = c.server_cpu()?;
    let t0 = Instant::now();
    let mut op = Measured::operator(&kc, &format!("{key}-operator"), rate)?;
    let done = obs.all_children(&keys, LONG).await?;
    m.insert(format!("{key}.operator_s"), secs(t0, done));
    let status = obs
        .bundles_reason(&bundle_names, "SecretsNotReady", LONG)
        .await?;
    m.insert(format!("{key}.operator_status_s"), secs(t0, status));
    m.insert(format!("{key}.operator_cpu_s"), op.cpu_seconds()?);
    let server = c.server_cpu()?;
    m.insert(
        format!("{key}.operator_apiserver_cpu_s"),
        server.0 - server0.0,
    );
    m.insert(format!("{key}.operator_etcd_cpu_s"), server.1 - server0.1);
    m.insert(
        format!("{key}.operator_reconciles"),
        op.metric_sum("secretbundle_reconciles_total"),
    );
    let req = c.requests(OPERATOR, mark)?;
    m.insert(format!("{key}.operator_requests"), req.total() as f64);
    req.record(m, &format!("{key}.operator"));
    m.insert(
        format!("{key}.operator_requests_per_bundle"),
        req.total() as f64 / count as f64,
    );
    if rate.is_none() {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (rss, peak) = op.rss_mib()?;
        let size = size_label(keys.len());
        m.insert(format!("rss_mib.{size}"), rss);
        m.insert(format!("rss_mib.{size}_peak"), peak);
        // Per child is what the heap grew by: the binary's pages resident are not per child.
        let (anon, _) = op.rss_split_mib()?;
        m.insert(format!("rss_mib.{size}_anon"), anon);
        if p.cached_samples > 0 {
            crate::cached::latencies(m, &c, &obs, &size, p).await?;
        }
        restart(m, &c, &mut op, &bundle_names, count).await?;
    } else {
        op.stop().await?;
    }
    drop(obs);
    drop(c);

    for a in [Anchor::Floor, Anchor::Watches, Anchor::BundleWrites] {
        let anchor = a.key();
        let f = floor(&set, &nss, &keys, rate, &format!("{key}-{anchor}"), a).await?;
        m.insert(format!("{key}.{anchor}_s"), f.seconds);
        m.insert(format!("{key}.{anchor}_cpu_s"), f.cpu);
        m.insert(format!("{key}.{anchor}_apiserver_cpu_s"), f.apiserver_cpu);
        m.insert(format!("{key}.{anchor}_etcd_cpu_s"), f.etcd_cpu);
        m.insert(
            format!("{key}.{anchor}_requests"),
            f.requests.total() as f64,
        );
        f.requests.record(m, &format!("{key}.{anchor}"));
    }
    let ratio = |m: &Metrics, a: &str, b: &str| {
        m.get(&format!("{key}.{a}")).copied().unwrap_or(f64::NAN)
            / m.get(&format!("{key}.{b}")).copied().unwrap_or(f64::NAN)
    };
    for (name, a, b) in [
        ("ratio", "operator_s", "floor_s"),
        ("cpu_ratio", "operator_cpu_s", "floor_cpu_s"),
        ("ratio_watch", "operator_s", "floor_watch_s"),
        ("cpu_ratio_watch", "operator_cpu_s", "floor_watch_cpu_s"),
        (
            "apiserver_cpu_ratio",
            "operator_apiserver_cpu_s",
            "floor_apiserver_cpu_s",
        ),
        (
            "apiserver_cpu_ratio_watch",
            "operator_apiserver_cpu_s",
            "floor_watch_apiserver_cpu_s",
        ),
        ("ratio_bundles", "operator_s", "floor_bundles_s"),
        (
            "apiserver_cpu_ratio_bundles",
            "operator_apiserver_cpu_s",
            "floor_bundles_apiserver_cpu_s",
        ),
    ] {
        let r = ratio(m, a, b);
        m.insert(format!("{key}.{name}"), r);
    }
    if rate.is_none() && p.kubectl {
        m.insert(
            format!("{key}.kubectl_s"),
            kubectl(&set, &nss, &keys).await?,
        );
    }
    Ok(())
}

/// One floor run: until every child exists, and what it cost the client and the servers.
pub struct FloorRun {
    pub seconds: f64,
    cpu: f64,
    apiserver_cpu: f64,
    etcd_cpu: f64,
    requests: crate::cluster::Requests,
}

/// The floor client as `anchor` on a fresh control plane.
pub async fn floor(
    set: &[SecretBundle],
    nss: &[String],
    keys: &[String],
    rate: Rate,
    name: &str,
    anchor: Anchor,
) -> Result<FloorRun> {
    let c = Cluster::seeded(nss, set.to_vec()).await?;
    let kc = c.kubeconfig_for(FLOOR).await?;
    let obs = Observer::start(&c.client);
    let mark = c.audit_mark();
    let server0 = c.server_cpu()?;
    let t0 = Instant::now();
    let mut fl = Measured::floor(&kc, name, rate, anchor)?;
    let done = obs.all_children(keys, LONG).await?;
    // Timed like the operator, by the observer; the anchor exits once its own watch has seen
    // every child too, so its watches were loading the apiserver throughout.
    let status = fl.exited(LONG).await?;
    anyhow::ensure!(status.success(), "floor failed: see {}", fl.log.display());
    let server = c.server_cpu()?;
    Ok(FloorRun {
        seconds: secs(t0, done),
        cpu: crate::floor::cpu_from_log(&fl.log)?,
        apiserver_cpu: server.0 - server0.0,
        etcd_cpu: server.1 - server0.1,
        requests: c.requests(FLOOR, mark)?,
    })
}

/// One `kubectl apply --server-side` of every child; seconds until every child exists.
async fn kubectl(set: &[SecretBundle], nss: &[String], keys: &[String]) -> Result<f64> {
    let c = Cluster::seeded(nss, set.to_vec()).await?;
    let mut docs = Vec::new();
    for o in desired(&c.client).await? {
        docs.push(serde_yaml::to_string(&o)?);
    }
    let file = log_dir().join("kubectl-objects.yaml");
    std::fs::write(&file, docs.join("---\n"))?;
    let kc = c.cp.kubeconfig_path()?;
    let obs = Observer::start(&c.client);
    let t0 = Instant::now();
    let mut k = Measured::kubectl(&kc, "kubectl", &file)?;
    let status = k.exited(LONG).await?;
    anyhow::ensure!(status.success(), "kubectl failed: see {}", k.log.display());
    let done = obs.all_children(keys, SHORT).await?;
    Ok(secs(t0, done))
}
