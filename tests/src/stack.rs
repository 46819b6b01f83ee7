//! The real External Secrets Operator and a real Vault-API server (OpenBao dev mode), run as
//! processes beside the control plane. Tests may read Secrets; the operator never does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use secretbundle_api::SecretBundle;
use secretbundle_controller::eso::{EsoKind, EsoVersion};
use serde_json::json;

use crate::{apply_crds, eso, repo_root};

/// The ClusterSecretStore pointing at OpenBao.
pub const VAULT_STORE: &str = "ameide-vault";
const ROOT_TOKEN: &str = "root";

/// A child process killed on drop.
pub struct Proc(Option<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log` (a restart keeps what came before).
    pub fn spawn(cmd: &mut Command, log: &Path) -> Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        Ok(Proc(Some(child)))
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// The process id while it runs, e.g. to signal it.
    pub fn id(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }

    /// Stops the process as the kubelet stops a pod (SIGTERM) and waits until it has exited,
    /// so it had its chance to shut down cleanly (e.g. release its Lease).
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.0.take().context("not running")?;
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        anyhow::ensure!(term.success(), "kill -TERM failed");
        Ok(tokio::task::block_in_place(|| child.wait())?)
    }

    /// Kills the process now (e.g. to simulate a crash).
    pub fn kill(&mut self) {
        drop(Proc(self.0.take()));
    }
}

/// OpenBao in dev mode: in-memory, unsealed, KV v2 at `secret/`, root token `root`.
pub struct OpenBao {
    pub addr: String,
    _proc: Proc,
}

pub fn venv_bin(name: &str) -> PathBuf {
    repo_root().join(".venv/bin").join(name)
}

impl OpenBao {
    /// Starts OpenBao on a free port. Dev mode also listens on the next port (its cluster
    /// listener), which nothing reserved: when another process took it, try another port.
    pub async fn start(dir: &Path) -> Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_once(dir).await {
                Err(e) if attempt < 3 => {
                    eprintln!("OpenBao start attempt {attempt} failed, retrying: {e:#}");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(dir: &Path) -> Result<Self> {
        let port = crate::controlplane::free_port()?;
        let addr = format!("http://127.0.0.1:{port}");
        let mut proc = Proc::spawn(
            Command::new(venv_bin("bao")).args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={ROOT_TOKEN}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ]),
            &dir.join("openbao.log"),
        )?;
        let bao = OpenBao {
            addr,
            _proc: Proc(None),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !bao
            .cli(&["status"])
            .map(|o| o.status.success())
            .unwrap_or(false)
        {
            if let Some(status) = proc.exited() {
                bail!(
                    "bao exited with {status}; see {}",
                    dir.join("openbao.log").display()
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!("OpenBao not ready after 30s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(OpenBao { _proc: proc, ..bao })
    }

    fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        Ok(Command::new(venv_bin("bao"))
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", ROOT_TOKEN)
            .output()?)
    }

    /// Writes (replaces) a KV v2 secret at `secret/<path>`, through the HTTP API (no process).
    pub fn put(&self, path: &str, data: &[(&str, &str)]) -> Result<()> {
        let data: serde_json::Map<String, serde_json::Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        let (code, answer) = crate::process::http_post(
            self.addr.trim_start_matches("http://"),
            &format!("/v1/secret/data/{path}"),
            &[("X-Vault-Token", ROOT_TOKEN)],
            &json!({ "data": data }).to_string(),
        )?;
        if code != 200 {
            bail!("OpenBao put {path}: {code} {answer}");
        }
        Ok(())
    }

    /// Deletes `secret/<path>` with every version of it (KV v2 metadata delete).
    pub fn delete(&self, path: &str) -> Result<()> {
        let out = self.cli(&["kv", "metadata", "delete", "-mount=secret", path])?;
        if !out.status.success() {
            bail!(
                "bao kv metadata delete {path}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

/// The ESO controller binary, built from the pinned Go module by `hack/eso.sh`.
pub fn eso_binary() -> Result<PathBuf> {
    crate::controlplane::built("hack/eso.sh")
}

/// ESO's v0.16.2 CRDs, plus its GeneratorState (which its controller always watches), Password
/// and ClusterGenerator CRDs (all vendored in `tests/fixtures/eso-crds/`).
pub async fn install_eso_v0_16(client: &Client) -> Result<()> {
    let mut crds = eso::crds("v0.16.2")?;
    crds.extend(eso::crds("v0.16.2-generators")?);
    apply_crds(client, crds).await
}

/// Starts the ESO controller against the control plane (no webhook, no cert controller).
pub fn start_eso(kubeconfig: &Path, dir: &Path) -> Result<Proc> {
    start_eso_logging_to(kubeconfig, &dir.join("eso.log"))
}

/// [`start_eso`], logging to `log`.
pub fn start_eso_logging_to(kubeconfig: &Path, log: &Path) -> Result<Proc> {
    Proc::spawn(
        Command::new(eso_binary()?)
            .env("KUBECONFIG", kubeconfig)
            .args([
                "--metrics-addr=0",
                "--concurrent=4",
                "--enable-push-secret-reconciler=false",
                "--enable-cluster-push-secret-reconciler=false",
                "--enable-cluster-external-secret-reconciler=false",
                "--store-requeue-interval=5s",
                "--loglevel=info",
            ]),
        log,
    )
}

/// Creates the Vault token Secret and the `ameide-vault` ClusterSecretStore pointing at OpenBao.
pub async fn create_vault_store(client: &Client, bao: &OpenBao) -> Result<()> {
    let ns = "external-secrets";
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await;
    let token: Secret = serde_json::from_value(json!({
        "metadata": {"name": "vault-token", "namespace": ns},
        "stringData": {"token": ROOT_TOKEN}
    }))?;
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            "vault-token",
            &PatchParams::apply("secretbundle-tests"),
            &Patch::Apply(&token),
        )
        .await?;
    let store = json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
        "metadata": {"name": VAULT_STORE},
        "spec": {"provider": {"vault": {
            "server": bao.addr, "path": "secret", "version": "v2",
            "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token", "namespace": ns}}
        }}}
    });
    let api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &EsoKind::ClusterSecretStore.api_resource(EsoVersion::V1),
    );
    api.patch(
        VAULT_STORE,
        &PatchParams::apply("secretbundle-tests"),
        &Patch::Apply(&store),
    )
    .await?;
    Ok(())
}

/// A target Secret's data as strings (tests only: the operator cannot read Secrets).
pub async fn secret_data(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>> {
    let Some(secret) = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(
        secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect(),
    ))
}

/// The whole stack: control plane, operator, ESO v0.16.2 (CRDs and controller), OpenBao and
/// the `ameide-vault` store.
pub struct Stack {
    pub eso: Proc,
    pub bao: OpenBao,
    pub env: crate::Env,
}

impl Stack {
    pub async fn start() -> Result<Self> {
        Self::start_with(crate::controlplane::Options::default()).await
    }

    /// [`Stack::start`] on a control plane started with `options`.
    pub async fn start_with(options: crate::controlplane::Options) -> Result<Self> {
        let env = crate::Env::start_with(options).await?;
        install_eso_v0_16(&env.client).await?;
        // So the garbage collector knows ExternalSecrets (owners of ESO's Secrets) at once.
        env.cp.start_controller_manager()?;
        let bao = OpenBao::start(env.cp.dir()).await?;
        create_vault_store(&env.client, &bao).await?;
        let eso = start_eso(&env.cp.kubeconfig_path()?, env.cp.dir())?;
        Ok(Stack { eso, bao, env })
    }
}

/// Every Vault key the bundles read, with a demo value for each property they use.
pub fn demo_vault_keys(bundles: &[SecretBundle]) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut keys: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for s in bundles.iter().flat_map(|b| &b.spec.secrets) {
        for d in &s.data {
            let prop = d
                .remote_ref
                .property
                .clone()
                .unwrap_or_else(|| "value".into());
            let value = format!("demo-{}", prop.to_lowercase());
            keys.entry(d.remote_ref.key.clone())
                .or_default()
                .insert(prop, value);
        }
        for e in s.data_from.iter().filter_map(|d| d.extract.as_ref()) {
            let key = keys.entry(e.key.clone()).or_default();
            for (k, v) in [
                ("username", "demo"),
                ("password", "demo-password"),
                ("url", "https://example.invalid"),
            ] {
                key.insert(k.into(), v.into());
            }
        }
    }
    keys
}
