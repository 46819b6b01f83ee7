//! Plays an [`Order`] on the real control plane, with the real ESO v0.16.2 controller and OpenBao,
//! twice over in disjoint namespaces and at the same moments:
//!
//! - with the operator: bundles applied the way GitOps tools apply, retried while the cluster
//!   refuses them (a missing CRD), until every bundle is Ready and every Secret holds its value;
//! - the baseline, no operator: each bundle's ExternalSecrets as `secretbundle-operator render`
//!   prints them, applied once with `kubectl apply` when the bundle arrives (what a script or a
//!   Helm release does), into a namespace arriving with the bundle's own.
//!
//! One control plane and one OpenBao serve every order. Between orders the pieces are removed:
//! processes stopped, the CRDs deleted (and with them every bundle, ExternalSecret and store, once
//! the bundles' finalizers are stripped), the store's token deleted; names carry the seed, so the
//! namespaces of earlier orders may still be terminating.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use futures::future::join_all;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt as _, ResourceExt};
use secretbundle_api::SecretBundle;
use secretbundle_controller::eso::{EsoKind, EsoVersion};
use serde_json::json;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use crate::controlplane::ControlPlane;
use crate::orders::{Order, Piece};
use crate::process::Operator;
use crate::stack::{OpenBao, Proc, VAULT_STORE, secret_data, start_eso_logging_to};
use crate::{eso, kubectl_path, wait};

/// How long every bundle may take to be Ready after the last piece arrived.
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(120);
const TOKEN_NS: &str = "external-secrets";

/// What one order came to.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    /// `None`: every bundle Ready with the right values.
    pub error: Option<String>,
    /// Removing what the order installed failed: the next order on this bench would not start
    /// from nothing. (The apiserver sometimes keeps a deleted CRD for minutes, its instances
    /// unlisted while its storage re-initialises.)
    pub reset_error: Option<String>,
    /// From the last piece arriving (applied, or its process started) to every bundle Ready.
    pub converged: Option<Duration>,
    /// The baseline ended with every Secret present and right.
    pub baseline_ok: bool,
    /// Why not: refused applies, missing Secrets.
    pub baseline_failures: Vec<String>,
    /// Times the ESO controller exited and was started again (as its Deployment would).
    pub eso_restarts: u32,
    /// The ESO controller started before ESO's CRDs were Established: it exits while the
    /// ExternalSecret CRD is missing (restarted here within 0.5 s, as kubelet would, more slowly),
    /// and checks for a missing store CRD only every 10 s.
    pub eso_before_crds: bool,
    /// From the last piece arriving to the ClusterSecretStore Ready (ESO's part of the wait).
    pub store_ready: Option<Duration>,
    /// Wall time of the phases: pieces arriving, waiting (both variants), the reset.
    pub phases: [Duration; 3],
    /// Faults the operator injected into its own requests (its log's "injected fault" lines).
    pub faults: usize,
}

/// One control plane, its controller manager and OpenBao, for many orders.
pub struct Bench {
    pub cp: ControlPlane,
    client: Client,
    bao: OpenBao,
    kubeconfig: PathBuf,
    /// The operator's `--fault-rate` (0: none); each order's seed is its fault seed.
    pub fault_rate: f64,
}

impl Bench {
    pub async fn start() -> Result<Self> {
        let cp = ControlPlane::start().await?;
        cp.start_controller_manager()?;
        let client = cp.client().await?;
        let bao = OpenBao::start(cp.dir()).await?;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": TOKEN_NS}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        let kubeconfig = cp.kubeconfig_path()?;
        Ok(Bench {
            cp,
            client,
            bao,
            kubeconfig,
            fault_rate: 0.0,
        })
    }

    /// Plays `order`, then removes what it installed.
    pub async fn play(&self, order: &Order) -> Outcome {
        self.play_then(order, true).await
    }

    /// [`Bench::play`] on a bench that is thrown away after: no reset.
    pub async fn play_last(&self, order: &Order) -> Outcome {
        self.play_then(order, false).await
    }

    async fn play_then(&self, order: &Order, reset: bool) -> Outcome {
        let run = Run {
            bench: self,
            order,
            procs: Mutex::new(Vec::new()),
            eso: Arc::new(Mutex::new(None)),
            eso_restarts: Arc::new(AtomicU32::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            baseline_refused: Mutex::new(Vec::new()),
            last_arrival: Mutex::new(None),
            arrived: Mutex::new(Vec::new()),
            store_ready: Mutex::new(None),
        };
        let t0 = Instant::now();
        // The operator's run and the baseline wait side by side from the last arrival on.
        let (result, (baseline_ok, baseline_failures)) = match run.arrive_all().await {
            Ok(last) => tokio::join!(run.await_ready(last), run.baseline(last)),
            Err(e) => (Err(e), (false, vec!["pieces did not arrive".into()])),
        };
        let t1 = Instant::now();
        let eso_restarts = run.eso_restarts.load(Ordering::Relaxed);
        let reset = if reset {
            run.reset().await
        } else {
            run.stop();
            Ok(())
        };
        let arrived = lock(&run.last_arrival).unwrap_or(t0);
        let phases = [arrived - t0, t1 - arrived, t1.elapsed()];
        let when = |p: Piece| {
            lock(&run.arrived)
                .iter()
                .find(|(q, _)| *q == p)
                .map(|(_, t)| *t)
        };
        let eso_before_crds = when(Piece::EsoController) < when(Piece::EsoCrds);
        let store_ready = lock(&run.store_ready).map(|t| t.saturating_duration_since(arrived));
        let (converged, error) = match result {
            Ok(d) => (Some(d), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        let reset_error = reset.err().map(|e| format!("reset failed: {e:#}"));
        let faults = std::fs::read_to_string(self.log(order.seed, "operator"))
            .map(|l| l.matches("injected fault").count())
            .unwrap_or(0);
        Outcome {
            seed: order.seed,
            error,
            reset_error,
            converged,
            baseline_ok,
            baseline_failures,
            eso_restarts,
            eso_before_crds,
            store_ready,
            phases,
            faults,
        }
    }

    /// Where the logs of `seed`'s processes go.
    pub fn log(&self, seed: u64, what: &str) -> PathBuf {
        self.cp.dir().join(format!("order-{seed}-{what}.log"))
    }
}

struct Run<'a> {
    bench: &'a Bench,
    order: &'a Order,
    procs: Mutex<Vec<Proc>>,
    eso: Arc<Mutex<Option<Proc>>>,
    eso_restarts: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    baseline_refused: Mutex<Vec<String>>,
    last_arrival: Mutex<Option<Instant>>,
    arrived: Mutex<Vec<(Piece, Instant)>>,
    store_ready: Mutex<Option<Instant>>,
}

impl Run<'_> {
    fn client(&self) -> Client {
        self.bench.client.clone()
    }

    /// Every piece arrives at its moment; returns when the last one got in.
    async fn arrive_all(&self) -> Result<Instant> {
        for b in &self.order.bundles {
            let values: Vec<(String, String)> = (0..b.secrets)
                .map(|j| (format!("s{j}"), value(&b.name, j)))
                .collect();
            let refs: Vec<(&str, &str)> = values
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            self.bench.bao.put(&format!("orders/{}", b.name), &refs)?;
        }
        let start = Instant::now();
        let deadline = start + Duration::from_secs(60);
        let mut at = start;
        let arrivals = self.order.steps.iter().map(|step| {
            at += step.gap;
            let when = at;
            async move {
                sleep_until(when).await;
                let arrived = self
                    .arrive(step.piece, deadline)
                    .await
                    .with_context(|| self.order.describe(step.piece))?;
                lock(&self.arrived).push((step.piece, arrived));
                Ok::<_, anyhow::Error>(arrived)
            }
        });
        let mut last = start;
        for arrived in join_all(arrivals).await {
            last = last.max(arrived?);
        }
        *lock(&self.last_arrival) = Some(last);
        Ok(last)
    }

    /// Waits until every bundle is Ready and checks the values; returns the time from the last
    /// arrival to then.
    async fn await_ready(&self, last: Instant) -> Result<Duration> {
        let (converged, store) = tokio::join!(self.await_bundles(last), self.await_store(last));
        *lock(&self.store_ready) = store;
        let converged = converged?;
        // Ready is not enough: every status must equal what the cluster implies.
        crate::truth::assert_statuses_true(&self.client()).await?;
        Ok(converged)
    }

    /// When the ClusterSecretStore turned Ready, if it did in time.
    async fn await_store(&self, last: Instant) -> Option<Instant> {
        let api: Api<DynamicObject> = Api::all_with(
            self.client(),
            &EsoKind::ClusterSecretStore.api_resource(EsoVersion::V1),
        );
        let ready =
            kube::runtime::wait::await_condition(api, VAULT_STORE, |o: Option<&DynamicObject>| {
                o.is_some_and(|o| {
                    o.data["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
            });
        match timeout_at(last + CONVERGE_WITHIN, ready).await {
            Ok(Ok(_)) => Some(Instant::now()),
            _ => None,
        }
    }

    async fn await_bundles(&self, last: Instant) -> Result<Duration> {
        let ready_by = last + CONVERGE_WITHIN;
        let bundles: Api<SecretBundle> = Api::all(self.client());
        for b in &self.order.bundles {
            let ready = kube::runtime::wait::await_condition(
                bundles.clone(),
                &b.name,
                wait::ready_is("Ready", ""),
            );
            match timeout_at(ready_by, ready).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => bail!("{}: watch failed: {e}", b.name),
                Err(_) => {
                    let status = bundles.get_opt(&b.name).await?.and_then(|b| b.status);
                    let ready = status
                        .as_ref()
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
                    bail!(
                        "{} not Ready {CONVERGE_WITHIN:?} after the last piece: {:?}",
                        b.name,
                        ready.map(|c| format!("{}: {}", c.reason, c.message))
                    );
                }
            }
        }
        let converged = last.elapsed();
        for b in &self.order.bundles {
            let ns = &self.order.namespaces[b.namespace];
            for j in 0..b.secrets {
                let name = format!("{}-s{j}", b.name);
                let data = secret_data(&self.client(), ns, &name).await?;
                if data.as_ref().and_then(|d| d.get("value")) != Some(&value(&b.name, j)) {
                    bail!("Secret {ns}/{name} holds {data:?}");
                }
            }
        }
        Ok(converged)
    }

    /// Brings one piece in, retrying while the cluster refuses it; returns when it got in.
    async fn arrive(&self, piece: Piece, deadline: Instant) -> Result<Instant> {
        if let Piece::Bundle(i) = piece {
            // The baseline's one attempt, at the moment the bundle's first one is made.
            let (_, arrived) = tokio::join!(self.baseline_apply(i), self.retry(piece, deadline));
            return arrived;
        }
        self.retry(piece, deadline).await
    }

    async fn retry(&self, piece: Piece, deadline: Instant) -> Result<Instant> {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.try_arrive(piece).await {
                Ok(()) => return Ok(Instant::now()),
                Err(e) if Instant::now() > deadline => return Err(e),
                // A GitOps tool retries a failed sync with backoff; 0.2 s doubling to 1 s here,
                // so the time measured is the operator's, not the retry cadence's.
                Err(_) => {
                    sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    async fn try_arrive(&self, piece: Piece) -> Result<()> {
        let pp = PatchParams::apply("gitops").force();
        match piece {
            // A CRD has arrived once it is Established, as Helm waits for the CRDs of a chart.
            Piece::OurCrd => crate::apply_crds(&self.client(), vec![SecretBundle::crd()]).await?,
            Piece::Operator => {
                let log = self.bench.log(self.order.seed, "operator");
                let (rate, seed) = (
                    format!("--fault-rate={}", self.bench.fault_rate),
                    format!("--fault-seed={}", self.order.seed),
                );
                let op = Operator::start(&self.bench.kubeconfig, &log, &[&rate, &seed])?;
                lock(&self.procs).push(op.proc);
            }
            Piece::EsoCrds => crate::apply_crds(&self.client(), eso_crds()?).await?,
            Piece::EsoController => self.start_eso()?,
            Piece::Store => self.store().await?,
            Piece::Namespace(k) => {
                let name = &self.order.namespaces[k];
                for ns in [name.clone(), plain(name)] {
                    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
                    Api::<Namespace>::all(self.client())
                        .patch(&ns.name_any(), &pp, &Patch::Apply(&ns))
                        .await?;
                }
            }
            Piece::Bundle(i) => {
                let bundle = bundle(self.order, i);
                Api::<SecretBundle>::all(self.client())
                    .patch(&bundle.name_any(), &pp, &Patch::Apply(&bundle))
                    .await?;
            }
        }
        Ok(())
    }

    async fn store(&self) -> Result<()> {
        let pp = PatchParams::apply("gitops").force();
        let token = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "vault-token", "namespace": TOKEN_NS}, "stringData": {"token": "root"}});
        Api::<Secret>::namespaced(self.client(), TOKEN_NS)
            .patch("vault-token", &pp, &Patch::Apply(&token))
            .await?;
        let store = json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
            "metadata": {"name": VAULT_STORE},
            "spec": {"provider": {"vault": {
                "server": self.bench.bao.addr, "path": "secret", "version": "v2",
                "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token", "namespace": TOKEN_NS}}
            }}}
        });
        let api: Api<DynamicObject> = Api::all_with(
            self.client(),
            &EsoKind::ClusterSecretStore.api_resource(EsoVersion::V1),
        );
        api.patch(VAULT_STORE, &pp, &Patch::Apply(&store)).await?;
        Ok(())
    }

    /// Starts ESO's controller, and starts it again within 0.5 s whenever it exits (it does at
    /// once while the ExternalSecret CRD is missing), as its Deployment's kubelet would after a
    /// CrashLoopBackOff of 10 s and more.
    fn start_eso(&self) -> Result<()> {
        let log = self.bench.log(self.order.seed, "eso");
        *lock(&self.eso) = Some(start_eso_logging_to(&self.bench.kubeconfig, &log)?);
        let (eso, restarts, stop) = (
            self.eso.clone(),
            self.eso_restarts.clone(),
            self.stop.clone(),
        );
        let kubeconfig = self.bench.kubeconfig.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                sleep(Duration::from_millis(500)).await;
                let mut guard = lock(&eso);
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if guard.as_mut().and_then(Proc::exited).is_some() {
                    restarts.fetch_add(1, Ordering::Relaxed);
                    *guard = start_eso_logging_to(&kubeconfig, &log).ok();
                }
            }
        });
        Ok(())
    }

    /// `kubectl apply` of the bundle's rendered ExternalSecrets, once; a refusal is final.
    async fn baseline_apply(&self, i: usize) {
        let b = &self.order.bundles[i];
        let file = self.bench.cp.dir().join(format!("{}-plain.yaml", b.name));
        let applied = async {
            std::fs::write(&file, plain_children(self.order, i)?)?;
            let out = tokio::process::Command::new(kubectl_path())
                .arg("--kubeconfig")
                .arg(&self.bench.kubeconfig)
                .args(["apply", "-f"])
                .arg(&file)
                .output()
                .await?;
            if !out.status.success() {
                bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
            }
            Ok(())
        };
        if let Err(e) = applied.await {
            lock(&self.baseline_refused).push(format!("{}: kubectl apply refused: {e:#}", b.name));
        }
    }

    /// Did the baseline end with every Secret present and right, within as long as the
    /// operator's run may take?
    async fn baseline(&self, last: Instant) -> (bool, Vec<String>) {
        let refused = lock(&self.baseline_refused).clone();
        if !refused.is_empty() {
            return (false, refused);
        }
        let deadline = last + CONVERGE_WITHIN;
        loop {
            let mut missing = Vec::new();
            for b in &self.order.bundles {
                let ns = plain(&self.order.namespaces[b.namespace]);
                for j in 0..b.secrets {
                    let name = format!("{}-s{j}", b.name);
                    let data = secret_data(&self.client(), &ns, &name).await.ok().flatten();
                    if data.as_ref().and_then(|d| d.get("value")) != Some(&value(&b.name, j)) {
                        missing.push(format!("Secret {ns}/{name} missing"));
                    }
                }
            }
            if missing.is_empty() {
                return (true, vec![]);
            }
            if Instant::now() > deadline {
                return (false, missing);
            }
            sleep(Duration::from_millis(250)).await;
        }
    }

    /// Removes everything the order installed, so the next one starts from nothing.
    /// Stops every process the order started (and the ESO controller's restarts).
    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        lock(&self.eso).take();
        lock(&self.procs).clear();
    }

    async fn reset(&self) -> Result<()> {
        self.stop();
        let bundles = Api::<SecretBundle>::all(self.client());
        if let Ok(list) = bundles.list(&ListParams::default()).await {
            let strip = Patch::Merge(json!({"metadata": {"finalizers": null}}));
            for b in list.items {
                bundles
                    .patch(&b.name_any(), &PatchParams::default(), &strip)
                    .await?;
            }
        }
        let crds = Api::<CustomResourceDefinition>::all(self.client());
        let mut names = vec![SecretBundle::crd_name().to_string()];
        names.extend(eso_crds()?.iter().map(ResourceExt::name_any));
        for name in &names {
            match crds.delete(name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        // The apiserver deletes every instance first; on a loaded machine that can take a while.
        let deadline = Instant::now() + Duration::from_secs(180);
        for name in &names {
            while let Some(crd) = crds.get_opt(name).await? {
                if Instant::now() > deadline {
                    let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
                    let said: Vec<_> = conditions
                        .iter()
                        .map(|c| {
                            format!(
                                "{}={}: {}",
                                c.type_,
                                c.status,
                                c.message.clone().unwrap_or_default()
                            )
                        })
                        .collect();
                    anyhow::bail!("{name} still exists after 180s: {}", said.join("; "));
                }
                sleep(Duration::from_millis(200)).await;
            }
        }
        match Api::<Secret>::namespaced(self.client(), TOKEN_NS)
            .delete("vault-token", &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        // Not awaited: names are per order, and the namespace controller empties them meanwhile.
        let namespaces = Api::<Namespace>::all(self.client());
        for ns in &self.order.namespaces {
            for name in [ns.clone(), plain(ns)] {
                let _ = namespaces.delete(&name, &DeleteParams::default()).await;
            }
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn eso_crds() -> Result<Vec<CustomResourceDefinition>> {
    let mut crds = eso::crds("v0.16.2")?;
    crds.extend(eso::crds("v0.16.2-generators")?);
    Ok(crds)
}

fn value(bundle: &str, j: usize) -> String {
    format!("{bundle}-value-{j}")
}

/// The baseline's namespace beside `ns`.
fn plain(ns: &str) -> String {
    format!("{ns}-plain")
}

/// Bundle `i` of `order` as its manifest.
pub fn bundle(order: &Order, i: usize) -> SecretBundle {
    let b = &order.bundles[i];
    let secrets: Vec<_> = (0..b.secrets)
        .map(|j| {
            json!({"name": format!("{}-s{j}", b.name), "data": [{"secretKey": "value",
            "remoteRef": {"key": format!("orders/{}", b.name), "property": format!("s{j}")}}]})
        })
        .collect();
    let depends_on: Vec<&str> = b
        .depends_on
        .iter()
        .map(|d| order.bundles[*d].name.as_str())
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "secrets.ameide.io/v1alpha1", "kind": "SecretBundle",
        "metadata": {"name": b.name},
        "spec": {"targetNamespace": order.namespaces[b.namespace], "dependsOn": depends_on,
                 "secretStoreRef": {"name": VAULT_STORE}, "secrets": secrets}
    }))
    .unwrap_or_else(|e| panic!("order bundle: {e}"))
}

/// Bundle `i`'s ExternalSecrets as `render` prints them, for the baseline namespace, without the
/// operator's labels and annotations (nobody manages them): YAML documents.
fn plain_children(order: &Order, i: usize) -> Result<String> {
    let mut b = bundle(order, i);
    b.spec.target_namespace = plain(&b.spec.target_namespace);
    let children = secretbundle_controller::reconcile::render::render(&b, EsoVersion::V1)?;
    let mut docs = Vec::new();
    for mut c in children {
        c.labels_mut().clear();
        c.annotations_mut().clear();
        docs.push(serde_yaml::to_string(&c)?);
    }
    Ok(docs.join("---\n"))
}
