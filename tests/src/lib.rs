//! Test harness: a real control plane per test, the operator running in-process against it on
//! its own identity (the shipped RBAC, audited), ESO CRDs vendored in `tests/fixtures/eso-crds/`,
//! and helpers that await conditions with a deadline.

pub mod controlplane;
pub mod eso;
pub mod expect;
pub mod faults;
pub mod fleet;
pub mod identity;
pub mod install;
pub mod migration;
pub mod oci;
pub mod orders;
pub mod pki;
pub mod pod;
pub mod process;
pub mod proxy;
pub mod skew;
pub mod slots;
pub mod stack;
pub mod strategies;
pub mod truth;
pub mod upgrade;
pub mod wait;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use prometheus_client::registry::Registry;
use secretbundle_api::SecretBundle;
use secretbundle_controller::Metrics;
use secretbundle_faults::{Faults, Plan};
use serde_json::json;
use tokio::task::JoinHandle;

pub use controlplane::{ControlPlane, repo_root};

/// A control plane with our CRD installed and, unless stopped, the operator running as its own
/// ServiceAccount with the shipped RBAC. On teardown the apiserver's audit log must show that it
/// never touched a Secret and wrote nothing outside its own kinds; otherwise the test fails.
pub struct Env {
    /// Cluster admin, for the test's own actions.
    pub client: Client,
    /// The operator's identity ([`identity::USER`]).
    pub operator_client: Client,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    /// Injected into the in-process operator's client, when set (see [`Env::start_faulty`]).
    pub faults: Option<Faults>,
    operator_config: kube::Config,
    operator: Option<JoinHandle<()>>,
    // Dropped last: the operator stops before its API server does.
    pub cp: ControlPlane,
}

impl Env {
    /// Starts a control plane, installs the SecretBundle CRD and starts the operator.
    pub async fn start() -> Result<Self> {
        Self::start_with(controlplane::Options::default()).await
    }

    /// [`Env::start`] on a control plane started with `options`; with the faults of
    /// `SB_FAULT_RATE`/`SB_FAULT_SEED` when set, so any suite can be replayed under faults.
    pub async fn start_with(options: controlplane::Options) -> Result<Self> {
        Self::start_faulty(options, faults::from_env()).await
    }

    /// [`Env::start_with`], the operator's client injecting `plan`'s faults (`None`: none).
    pub async fn start_faulty(options: controlplane::Options, plan: Option<Plan>) -> Result<Self> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn,kube_client=off,secretbundle_controller=info")
            .with_test_writer()
            .try_init();
        // Always audited: teardown checks what the operator did (see `Drop`).
        let cp = ControlPlane::start_with(controlplane::Options {
            audit: true,
            ..options
        })
        .await?;
        let client = cp.client().await?;
        apply_crds(&client, vec![SecretBundle::crd()]).await?;
        // After our CRD, so the garbage collector knows bundles from its first discovery.
        cp.start_controller_manager()?;
        let operator_config = identity::operator_config(&cp, &client).await?;
        let operator_client = Client::try_from(operator_config.clone())?;
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::new(&mut registry));
        if let Some(p) = &plan {
            eprintln!("injecting faults: rate {}, seed {}", p.rate, p.seed);
        }
        let mut env = Env {
            client,
            operator_client,
            metrics,
            registry: Arc::new(registry),
            faults: plan.map(Faults::new),
            operator_config,
            operator: None,
            cp,
        };
        env.start_operator();
        Ok(env)
    }

    /// [`Env::start`], plus ESO v2.9.0's CRDs (v1 only) and a Ready [`eso::TEST_STORE`]: the
    /// common ground of tests that write ExternalSecret status the way ESO does.
    pub async fn start_with_eso_v1() -> Result<Self> {
        Self::eso_v1_ground(Self::start().await?).await
    }

    /// [`Env::start_with_eso_v1`] with the operator's client injecting `plan`'s faults.
    pub async fn start_with_eso_v1_faults(plan: Plan) -> Result<Self> {
        let env = Self::start_faulty(controlplane::Options::default(), Some(plan)).await?;
        Self::eso_v1_ground(env).await
    }

    async fn eso_v1_ground(env: Self) -> Result<Self> {
        env.install_eso_crds("v2.9.0").await?;
        eso::ready_cluster_store(
            &env.client,
            secretbundle_controller::eso::EsoVersion::V1,
            eso::TEST_STORE,
        )
        .await?;
        Ok(env)
    }

    pub fn start_operator(&mut self) {
        let client = match &self.faults {
            Some(f) => faults::client(&self.operator_config, f, None),
            None => Ok(self.operator_client.clone()),
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => panic!("building the operator's client: {e:#}"),
        };
        let metrics = self.metrics.clone();
        let run = secretbundle_controller::run(client, metrics, 4, std::future::pending());
        self.operator = Some(tokio::spawn(run));
    }

    /// Restarts the in-process operator with a client limited like the binary's (`--qps`,
    /// `--burst`), for tests of how fast it is when it must pace its requests.
    pub async fn start_limited_operator(&mut self, qps: u32, burst: u32) -> Result<()> {
        self.stop_operator();
        let layer = secretbundle_controller::limit::LimitLayer(
            secretbundle_controller::limit::Limiter::new(qps, burst),
        );
        let client = match &self.faults {
            Some(f) => faults::client(&self.cp.config().await?, f, Some(&layer))?,
            None => kube::client::ClientBuilder::try_from(self.cp.config().await?)?
                .with_layer(&layer)
                .build(),
        };
        let run =
            secretbundle_controller::run(client, self.metrics.clone(), 4, std::future::pending());
        self.operator = Some(tokio::spawn(run));
        Ok(())
    }

    pub fn stop_operator(&mut self) {
        if let Some(task) = self.operator.take() {
            task.abort();
        }
    }

    /// Every bundle's status must end equal to the one the cluster implies
    /// ([`truth::assert_statuses_true`]); the faults injected so far are printed.
    pub async fn assert_statuses_true(&self) -> Result<()> {
        if let Some(f) = &self.faults {
            eprintln!("faults injected: {}", f.stats());
        }
        truth::assert_statuses_true(&self.client).await.map(drop)
    }

    pub fn bundles(&self) -> Api<SecretBundle> {
        Api::all(self.client.clone())
    }

    pub async fn create_namespace(&self, name: &str) -> Result<()> {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(())
    }

    /// Deletes a namespace: it goes Terminating, the namespace controller empties it, and it
    /// disappears. Returns once the delete is accepted; see [`Env::await_namespace_gone`].
    pub async fn delete_namespace(&self, name: &str) -> Result<()> {
        Api::<Namespace>::all(self.client.clone())
            .delete(name, &DeleteParams::default())
            .await?;
        Ok(())
    }

    /// Waits until the namespace controller has finished deleting `name`.
    pub async fn await_namespace_gone(&self, name: &str) -> Result<()> {
        wait::until_deleted(&Api::<Namespace>::all(self.client.clone()), name).await
    }

    pub async fn apply_bundle(&self, bundle: &SecretBundle) -> Result<SecretBundle> {
        let pp = PatchParams::apply("secretbundle-tests").force();
        Ok(self
            .bundles()
            .patch(&bundle.name_any(), &pp, &Patch::Apply(bundle))
            .await?)
    }

    /// [`Env::apply_bundle`] for a bundle the caller no longer needs (handy with join_all).
    pub async fn apply_bundle_owned(&self, bundle: SecretBundle) -> Result<SecretBundle> {
        self.apply_bundle(&bundle).await
    }

    /// Installs the ESO CRDs of one release from `tests/fixtures/eso-crds/<version>/`.
    /// The garbage collector is restarted so it collects ESO objects from now on.
    pub async fn install_eso_crds(&self, version: &str) -> Result<()> {
        apply_crds(&self.client, eso::crds(version)?).await?;
        self.cp.start_controller_manager()
    }

    pub async fn delete_eso_crds(&self) -> Result<()> {
        let api = Api::<CustomResourceDefinition>::all(self.client.clone());
        for kind in [
            "externalsecrets",
            "secretstores",
            "clustersecretstores",
            "clusterexternalsecrets",
        ] {
            let name = format!("{kind}.external-secrets.io");
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            wait::until_deleted(&api, &name).await?;
        }
        Ok(())
    }

    /// `kubectl apply -f` of `yaml`, as a user would: whether it was accepted, and what kubectl
    /// printed (stdout and stderr).
    pub fn kubectl_apply(&self, yaml: &str) -> Result<(bool, String)> {
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), yaml)?;
        let out = self.kubectl(&["apply", "-f", &file.path().to_string_lossy()])?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    /// `kubectl apply --server-side -f` of `yaml`: whether it was accepted, and what kubectl
    /// printed.
    pub fn kubectl_apply_server_side(&self, yaml: &str) -> Result<(bool, String)> {
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), yaml)?;
        let out = self.kubectl(&[
            "apply",
            "--server-side",
            "-f",
            &file.path().to_string_lossy(),
        ])?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    /// Runs `kubectl` from the project venv against this control plane.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output> {
        kubectl_with(&self.cp.kubeconfig_path()?, args)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_operator();
        // Every test doubles as an audit of the operator; a test already failing says enough.
        if std::thread::panicking() {
            return;
        }
        match identity::audit_violations(&self.cp.audit_log()) {
            Ok(v) if v.is_empty() => {}
            Ok(v) => panic!("the operator did what it must never do:\n{}", v.join("\n")),
            Err(e) => panic!("reading the audit log: {e:#}"),
        }
    }
}

/// Creates or updates CRDs and waits until each is Established.
pub async fn apply_crds(client: &Client, crds: Vec<CustomResourceDefinition>) -> Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let pp = PatchParams::apply("secretbundle-tests").force();
    for crd in &crds {
        api.patch(&crd.name_any(), &pp, &Patch::Apply(crd))
            .await
            .with_context(|| format!("applying {}", crd.name_any()))?;
    }
    for crd in &crds {
        wait::crd_established(&api, &crd.name_any()).await?;
    }
    Ok(())
}

/// The kubectl binary: $KUBECTL, or the one `make test` installs into `.venv`.
pub fn kubectl_path() -> PathBuf {
    std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/kubectl"))
}

pub fn kubectl_with(kubeconfig: &std::path::Path, args: &[&str]) -> Result<Output> {
    Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .with_context(|| format!("running {} (run `make venv`)", kubectl_path().display()))
}

/// Parses a bundle from YAML (tests write bundles the way users do).
pub fn bundle(yaml: &str) -> SecretBundle {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("test bundle is not valid: {e}\n{yaml}"))
}

/// A bundle named `name` for namespace `ns` with one ExternalSecret per entry of `secrets`,
/// reading from the ClusterSecretStore [`eso::TEST_STORE`].
pub fn simple_bundle(name: &str, ns: &str, secrets: &[&str]) -> SecretBundle {
    let secrets: Vec<_> = secrets
        .iter()
        .map(|s| json!({"name": s, "data": [{"secretKey": "value", "remoteRef": {"key": format!("{name}/{s}"), "property": "value"}}]}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "secrets.ameide.io/v1alpha1",
        "kind": "SecretBundle",
        "metadata": {"name": name},
        "spec": {"targetNamespace": ns, "secretStoreRef": {"name": eso::TEST_STORE}, "secrets": secrets}
    }))
    .unwrap_or_else(|e| panic!("simple bundle: {e}"))
}
