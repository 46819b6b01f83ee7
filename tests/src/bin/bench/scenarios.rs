//! The scenarios. Each starts its own control plane(s), so runs do not see each other's objects,
//! and puts its figures into one flat map (`scenario.figure` -> number).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use secretbundle_api::SecretBundle;
use secretbundle_controller::eso::EsoVersion;
use secretbundle_tests::{apply_crds, eso, simple_bundle, wait};
use serde_json::json;

use crate::cluster::{Cluster, OPERATOR, bundles, child_keys, names};
use crate::observer::Observer;
use crate::runner::{DEFAULT_RATE, Measured};

pub type Metrics = BTreeMap<String, f64>;

/// Sizes of one benchmark run.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    pub name: &'static str,
    /// Cold start unthrottled: bundles, secrets per bundle, namespaces.
    pub cold: (usize, usize, usize),
    /// Cold start at the default rate limit.
    pub cold_throttled: (usize, usize, usize),
    /// Bundle counts for "many bundles in one namespace" (20 secrets each).
    pub one_ns: &'static [usize],
    /// Samples per latency figure.
    pub samples: usize,
    pub crd_trials: usize,
    pub crd_bundles: usize,
    pub dependents: usize,
    pub dependent_trials: usize,
    pub waiting_bundles: usize,
    pub waiting_secs: u64,
    pub repeats: usize,
    /// Latency samples taken on the unthrottled cold start's cluster, with every child cached.
    pub cached_samples: usize,
    /// Also time one `kubectl apply --server-side` of the unthrottled cold start's children.
    pub kubectl: bool,
    /// Requests of each kind in the `cost` step (and bundles it creates).
    pub cost_requests: usize,
}

pub const QUICK: Preset = Preset {
    name: "quick",
    cold: (50, 20, 5),
    cold_throttled: (10, 20, 2),
    one_ns: &[25, 50],
    samples: 5,
    crd_trials: 2,
    crd_bundles: 100,
    dependents: 40,
    dependent_trials: 2,
    waiting_bundles: 50,
    waiting_secs: 10,
    repeats: 1,
    cached_samples: 0,
    kubectl: true,
    cost_requests: 50,
};

pub const FULL: Preset = Preset {
    name: "full",
    cold: (500, 20, 50),
    cold_throttled: (500, 20, 50),
    one_ns: &[25, 50, 100, 200],
    samples: 20,
    crd_trials: 10,
    crd_bundles: 100,
    dependents: 40,
    dependent_trials: 5,
    waiting_bundles: 500,
    waiting_secs: 60,
    repeats: 3,
    cached_samples: 0,
    kubectl: true,
    cost_requests: 300,
};

/// 2,500 bundles x 20 secrets = 50,000 ExternalSecrets over 100 namespaces (run with
/// `--only=cold_unthrottled`; the other steps keep the full preset's sizes).
pub const SCALE: Preset = Preset {
    name: "scale",
    cold: (2500, 20, 100),
    cached_samples: 20,
    crd_trials: 20,
    kubectl: false,
    repeats: 1,
    ..FULL
};

/// Far more than any healthy run needs; a stuck run fails instead of hanging.
pub const LONG: Duration = Duration::from_secs(1200);
pub const SHORT: Duration = Duration::from_secs(120);

pub fn secs(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64()
}

pub fn ms(from: Instant, to: Instant) -> f64 {
    secs(from, to) * 1000.0
}

/// "1k" for 1000 children, "10k" for 10,000, else the number.
pub fn size_label(children: usize) -> String {
    if children.is_multiple_of(1000) {
        format!("{}k", children / 1000)
    } else {
        children.to_string()
    }
}

/// A one-secret bundle `name` waits for its namespace `name`; ms from creating the namespace
/// until its child exists.
pub async fn namespace_sample(c: &Cluster, obs: &Observer, name: &str) -> Result<f64> {
    c.create_bundles(vec![simple_bundle(name, name, &["s"])])
        .await?;
    obs.bundles_reason(&[name.to_string()], "WaitingForNamespace", SHORT)
        .await?;
    let t0 = Instant::now();
    c.namespaces(&[name.to_string()]).await?;
    Ok(ms(
        t0,
        obs.all_children(&[format!("{name}/s")], SHORT).await?,
    ))
}

/// ms from creating a bundle of 20 secrets in the existing namespace `ns` until its children exist.
pub async fn bundle_sample(c: &Cluster, obs: &Observer, prefix: &str, ns: &str) -> Result<f64> {
    let set = bundles(prefix, 1, 20, &[ns.to_string()]);
    let keys = child_keys(&set);
    let t0 = Instant::now();
    c.create_bundles(set).await?;
    Ok(ms(t0, obs.all_children(&keys, SHORT).await?))
}

/// Restarts a converged operator: requests until it has reconciled every bundle, plus 5 s.
pub async fn restart(
    m: &mut Metrics,
    c: &Cluster,
    op: &mut Measured,
    bundle_names: &[String],
    count: usize,
) -> Result<()> {
    op.stop().await?;
    let kc = c.kubeconfig_for(OPERATOR).await?;
    let mark = c.audit_mark();
    let mut next = Measured::operator(&kc, &format!("restart-{count}"), DEFAULT_RATE)?;
    let deadline = Instant::now() + LONG;
    while next.metric_sum("secretbundle_reconciles_total") < bundle_names.len() as f64 {
        anyhow::ensure!(Instant::now() < deadline, "restart: bundles not reconciled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let req = c.requests(OPERATOR, mark)?;
    m.insert(format!("restart_{count}.requests"), req.total() as f64);
    m.insert(format!("restart_{count}.writes"), req.writes() as f64);
    next.stop().await
}

/// Many bundles in one namespace, unthrottled: seconds per bundle, operator and floor.
pub async fn one_namespace(m: &mut Metrics, p: &Preset) -> Result<()> {
    for &n in p.one_ns {
        let nss = vec!["shared".to_string()];
        let set = bundles("app", n, 20, &nss);
        let (keys, bundle_names) = (child_keys(&set), names(&set));
        let c = Cluster::seeded(&nss, set.clone()).await?;
        let kc = c.kubeconfig_for(OPERATOR).await?;
        let obs = Observer::start(&c.client);
        let t0 = Instant::now();
        let mut op = Measured::operator(&kc, &format!("one-ns-{n}"), None)?;
        let done = obs.all_children(&keys, LONG).await?;
        let key = format!("one_ns_{n}");
        m.insert(
            format!("{key}.operator_s_per_bundle"),
            secs(t0, done) / n as f64,
        );
        if n == p.one_ns[0] {
            obs.bundles_reason(&bundle_names, "SecretsNotReady", LONG)
                .await?;
            restart(m, &c, &mut op, &bundle_names, n).await?;
        } else {
            op.stop().await?;
        }
        drop(obs);
        drop(c);
        let floor_s = crate::cold::floor(
            &set,
            &nss,
            &keys,
            None,
            &format!("{key}-floor"),
            crate::floor::Anchor::Floor,
        )
        .await?
        .seconds;
        m.insert(format!("{key}.floor_s_per_bundle"), floor_s / n as f64);
        m.insert(format!("{key}.ratio"), secs(t0, done) / floor_s);
    }
    Ok(())
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let rank = (p * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

pub fn record(m: &mut Metrics, key: &str, mut samples: Vec<f64>) {
    m.insert(format!("{key}.p50"), percentile(&mut samples, 0.5));
    m.insert(format!("{key}.p95"), percentile(&mut samples, 0.95));
}

/// The operator's memory with nothing to do: no bundle, ESO's CRDs and a store present.
pub async fn idle(m: &mut Metrics, _p: &Preset) -> Result<()> {
    let c = Cluster::start(true).await?;
    let kc = c.kubeconfig_for(OPERATOR).await?;
    let mut op = Measured::operator(&kc, "idle-operator", DEFAULT_RATE)?;
    record_idle(m, &op).await?;
    op.stop().await
}

/// `rss_mib.idle` of an operator just started with nothing to do. Read after a settling time,
/// not on a condition: startup (lists, watches) has no end event to await, only quiet.
async fn record_idle(m: &mut Metrics, op: &Measured) -> Result<()> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, peak) = op.rss_mib()?;
    m.insert("rss_mib.idle".into(), rss);
    m.insert("rss_mib.idle_peak".into(), peak);
    let (anon, file) = op.rss_split_mib()?;
    m.insert("rss_mib.idle_anon".into(), anon);
    m.insert("rss_mib.idle_file".into(), file);
    Ok(())
}

/// Idle memory, the cost of waiting, and how fast gates open, with one operator at the
/// default rate limit.
pub async fn latencies(m: &mut Metrics, p: &Preset) -> Result<()> {
    let c = Cluster::start(true).await?;
    let kc = c.kubeconfig_for(OPERATOR).await?;
    let obs = Observer::start(&c.client);
    let mut op = Measured::operator(&kc, "latency-operator", DEFAULT_RATE)?;
    record_idle(m, &op).await?;

    // Waiting: bundles whose namespaces do not exist cost nothing while they wait.
    let absent: Vec<String> = (0..p.waiting_bundles)
        .map(|i| format!("absent-{i}"))
        .collect();
    let set: Vec<SecretBundle> = absent
        .iter()
        .map(|ns| simple_bundle(&format!("wait-{ns}"), ns, &["s"]))
        .collect();
    c.create_bundles(set.clone()).await?;
    obs.bundles_reason(&names(&set), "WaitingForNamespace", LONG)
        .await?;
    let mark = c.audit_mark();
    tokio::time::sleep(Duration::from_secs(p.waiting_secs)).await;
    m.insert(
        format!("waiting_{}s.requests", p.waiting_secs),
        c.requests(OPERATOR, mark)?.total() as f64,
    );

    // Namespace -> children.
    let mut samples = Vec::new();
    for i in 0..p.samples {
        samples.push(namespace_sample(&c, &obs, &format!("late-{i}")).await?);
    }
    record(m, "latency.namespace_ms", samples);

    // Bundle (20 secrets) -> children.
    c.namespaces(&["apps".into()]).await?;
    let mut samples = Vec::new();
    for i in 0..p.samples {
        samples.push(bundle_sample(&c, &obs, &format!("new-{i}"), "apps").await?);
    }
    record(m, "latency.bundle_ms", samples);

    dependents(m, p, &c, &obs).await?;
    op.stop().await
}

/// N bundles depend on one; time from its Ready to all their children existing.
async fn dependents(m: &mut Metrics, p: &Preset, c: &Cluster, obs: &Observer) -> Result<()> {
    let api = Api::<SecretBundle>::all(c.client.clone());
    let suspend = |s: bool| Patch::Merge(json!({"spec": {"suspend": s}}));
    c.namespaces(&["platform".into()]).await?;
    let mut samples = Vec::new();
    for t in 0..p.dependent_trials {
        let plat = format!("plat-{t}");
        c.create_bundles(vec![simple_bundle(&plat, "platform", &[&plat])])
            .await?;
        let es = eso::external_secrets(&c.client, "platform", EsoVersion::V1);
        wait::until(
            &es,
            &plat,
            "child",
            |o: Option<&kube::api::DynamicObject>| o.is_some(),
        )
        .await?;
        eso::set_ready(&es, &plat, "True", "SecretSynced", "").await?;
        obs.bundles_reason(std::slice::from_ref(&plat), "Ready", SHORT)
            .await?;
        api.patch(&plat, &PatchParams::default(), &suspend(true))
            .await?;
        obs.bundles_reason(std::slice::from_ref(&plat), "Suspended", SHORT)
            .await?;
        let ns = format!("deps-{t}");
        c.namespaces(std::slice::from_ref(&ns)).await?;
        let mut set = bundles(&format!("dep-{t}"), p.dependents, 1, &[ns]);
        for b in &mut set {
            b.spec.depends_on = vec![plat.clone()];
        }
        let (keys, dep_names) = (child_keys(&set), names(&set));
        c.create_bundles(set).await?;
        obs.bundles_reason(&dep_names, "WaitingForDependency", SHORT)
            .await?;
        api.patch(&plat, &PatchParams::default(), &suspend(false))
            .await?;
        let ready = obs
            .bundles_reason(std::slice::from_ref(&plat), "Ready", SHORT)
            .await?;
        samples.push(ms(ready, obs.all_children(&keys, SHORT).await?));
    }
    record(m, "latency.dependents_ms", samples);
    Ok(())
}

/// ESO's CRDs installed while bundles wait: time from the install until every child exists.
pub async fn crd(m: &mut Metrics, p: &Preset) -> Result<()> {
    let c = Cluster::start(false).await?;
    let nss: Vec<String> = (0..10).map(|i| format!("crd-{i}")).collect();
    c.namespaces(&nss).await?;
    let set = bundles("crd", p.crd_bundles, 1, &nss);
    let (keys, bundle_names) = (child_keys(&set), names(&set));
    c.create_bundles(set).await?;
    let kc = c.kubeconfig_for(OPERATOR).await?;
    let obs = Observer::start(&c.client);
    let mut op = Measured::operator(&kc, "crd-operator", DEFAULT_RATE)?;
    let crds = Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(c.client.clone());
    let (mut samples, mut with_install) = (Vec::new(), Vec::new());
    for _ in 0..p.crd_trials {
        obs.bundles_reason(&bundle_names, "WaitingForCRD", LONG)
            .await?;
        obs.forget_children();
        // Timed from the CRDs being Established (how long the apiserver takes to establish them
        // is its own affair), store creation included; and from the start of the install.
        let installing = Instant::now();
        apply_crds(&c.client, eso::crds(crate::cluster::ESO)?).await?;
        let t0 = Instant::now();
        eso::ready_cluster_store(&c.client, EsoVersion::V1, eso::TEST_STORE).await?;
        let done = obs.all_children(&keys, LONG).await?;
        samples.push(ms(t0, done));
        with_install.push(ms(installing, done));
        // CRD deletion waits for the apiserver to delete every instance: slow on a busy machine.
        for crd in eso::crds(crate::cluster::ESO)? {
            crate::cached::delete_crd(&crds, &crd.name_any()).await?;
        }
    }
    record(m, "latency.crd_ms", samples);
    record(m, "latency.crd_install_ms", with_install);
    op.stop().await
}
