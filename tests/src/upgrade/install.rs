//! Installing a release as users do (Helm, or plain manifests with kustomize), and running the
//! operator as its Deployment says: there is no kubelet, so the process stands in for the pod.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::controlplane::{ControlPlane, built, free_port};
use crate::stack::Proc;

/// Where both the chart and the manifests install the operator.
pub const NAMESPACE: &str = "secretbundle-system";
/// The Helm release name; with it the chart's resources are named like the manifests'.
pub const RELEASE: &str = "secretbundle-operator";

/// How the operator is installed and upgraded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Mode {
    /// `helm install` of the old chart, then the new CRD by hand and `helm upgrade`.
    Helm,
    /// `kubectl apply --server-side -k deploy/kustomize/base`, old then new.
    Manifests,
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn kubectl(kubeconfig: &Path) -> Command {
    let mut c = Command::new(crate::kubectl_path());
    c.arg("--kubeconfig").arg(kubeconfig);
    c
}

fn helm(kubeconfig: &Path) -> Result<Command> {
    let mut c = Command::new(built("hack/tools.sh")?.join("helm"));
    c.arg("--kubeconfig").arg(kubeconfig);
    Ok(c)
}

/// The first install, from the source tree `src` of that release.
pub fn install(mode: Mode, src: &Path, kubeconfig: &Path) -> Result<()> {
    match mode {
        Mode::Helm => run(helm(kubeconfig)?
            .args([
                "install",
                RELEASE,
                "--namespace",
                NAMESPACE,
                "--create-namespace",
            ])
            .arg(src.join("deploy/helm/secretbundle-operator"))),
        Mode::Manifests => run(kubectl(kubeconfig)
            .args(["apply", "--server-side", "-k"])
            .arg(src.join("deploy/kustomize/base"))),
    }
    .map(drop)
}

/// The upgrade to the release in `src`, as docs/upgrading.md tells users to do it. Helm never
/// upgrades what a chart keeps in `crds/`, so with Helm the CRD is applied first, by hand.
pub fn upgrade(mode: Mode, src: &Path, kubeconfig: &Path) -> Result<()> {
    match mode {
        Mode::Helm => {
            run(kubectl(kubeconfig)
                .args(["apply", "--server-side", "--force-conflicts", "-f"])
                .arg(src.join("deploy/helm/secretbundle-operator/crds")))?;
            run(helm(kubeconfig)?
                .args(["upgrade", RELEASE, "--namespace", NAMESPACE])
                .arg(src.join("deploy/helm/secretbundle-operator")))
        }
        Mode::Manifests => run(kubectl(kubeconfig)
            .args(["apply", "--server-side", "-k"])
            .arg(src.join("deploy/kustomize/base"))),
    }
    .map(drop)
}

/// The pod the Deployment would run: its container's args and env (downward API filled in)
/// and its ServiceAccount.
#[derive(Debug)]
pub struct Pod {
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub service_account: String,
}

/// Reads the operator's Deployment back from the cluster (what was installed, not a file).
pub async fn pod(client: &Client, pod_name: &str) -> Result<Pod> {
    let d = Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .get(RELEASE)
        .await?;
    let spec = d.spec.template.spec.context("no pod spec")?;
    let c = spec
        .containers
        .iter()
        .find(|c| c.name == "operator")
        .context("no container named operator")?;
    let mut env = BTreeMap::new();
    for e in c.env.iter().flatten() {
        let value = match (
            &e.value,
            e.value_from.as_ref().and_then(|v| v.field_ref.as_ref()),
        ) {
            (Some(v), _) => v.clone(),
            (None, Some(f)) if f.field_path == "metadata.namespace" => NAMESPACE.into(),
            (None, Some(f)) if f.field_path == "metadata.name" => pod_name.into(),
            _ => bail!("env {} has a source this test does not fill in", e.name),
        };
        env.insert(e.name.clone(), value);
    }
    Ok(Pod {
        args: c.args.clone().unwrap_or_default(),
        env,
        service_account: spec.service_account_name.context("no serviceAccountName")?,
    })
}

/// One operator process standing in for a pod, with the token it authenticates with.
pub struct Running {
    pub proc: Proc,
    pub port: u16,
    /// The token's JWT ID, which the audit log records with every request made with it.
    pub credential: String,
}

impl Running {
    /// Starts `bin` as `pod` says, authenticated by a token issued for its ServiceAccount
    /// (so it has exactly the installed RBAC). The HTTP address is moved to a free local port:
    /// two "pods" share this host during a rolling update.
    pub async fn start(
        cp: &ControlPlane,
        admin: &Client,
        bin: &Path,
        pod: &Pod,
        name: &str,
    ) -> Result<Self> {
        let token = Api::<ServiceAccount>::namespaced(admin.clone(), NAMESPACE)
            .create_token_request(
                &pod.service_account,
                &PostParams::default(),
                &TokenRequest::default(),
            )
            .await?
            .status
            .and_then(|s| s.token)
            .context("TokenRequest returned no token")?;
        let credential = jti(&token)?;
        let kubeconfig = cp.token_kubeconfig_path(name, &token)?;
        let port = free_port()?;
        let args = pod.args.iter().map(|a| {
            if a.starts_with("--http-addr=") {
                format!("--http-addr=127.0.0.1:{port}")
            } else {
                a.clone()
            }
        });
        let log: PathBuf = cp.dir().join(format!("{name}.log"));
        let proc = Proc::spawn(
            Command::new(bin)
                .env_clear()
                .envs(&pod.env)
                .env("KUBECONFIG", kubeconfig)
                .env("RUST_LOG", "info")
                .args(args),
            &log,
        )?;
        Ok(Running {
            proc,
            port,
            credential,
        })
    }

    /// A metric's value from the operator's /metrics (exact series).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = crate::process::http_get(self.port, "/metrics").ok()?;
        body.lines()
            .find(|l| l.starts_with(series))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    }
}

/// The `jti` claim of a ServiceAccount token (the audit log's credential ID is `JTI=<it>`).
fn jti(token: &str) -> Result<String> {
    let payload = token.split('.').nth(1).context("token is not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes)?;
    claims["jti"]
        .as_str()
        .map(|j| format!("JTI={j}"))
        .context("token has no jti")
}
