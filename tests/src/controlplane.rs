//! A real etcd + kube-apiserver + kube-controller-manager (garbage collector and namespace
//! controller) on free loopback ports, one per test, stopped on drop.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tempfile::TempDir;

use crate::pki;

/// A running control plane. Dropping it stops every process and removes the data dirs.
pub struct ControlPlane {
    etcd: Option<Child>,
    apiserver: Option<Child>,
    // How it was started, so it can be stopped and started again on the same port and etcd.
    apiserver_cmd: Vec<String>,
    pub etcd_url: String,
    // Restarted by tests that install CRDs, through a shared reference.
    controller_manager: Mutex<Option<Child>>,
    dir: Option<TempDir>,
    pub url: String,
    kubeconfig: Kubeconfig,
    // Held while this control plane runs: bounds how many run at once on the machine.
    _slot: crate::slots::Slot,
}

/// The workspace root (the tests crate lives one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The directory holding etcd, kube-apiserver and kube-controller-manager: SB_ASSETS, or what `hack/controlplane.sh`
/// prints (it honours KUBEBUILDER_ASSETS and is a no-op when its cache is warm).
pub fn assets() -> Result<PathBuf> {
    match std::env::var_os("SB_ASSETS") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => built("hack/controlplane.sh"),
    }
}

/// Runs a `hack/` build script once per test process and returns the path it prints.
pub fn built(script: &'static str) -> Result<PathBuf> {
    static BUILT: Mutex<BTreeMap<&str, std::result::Result<PathBuf, String>>> =
        Mutex::new(BTreeMap::new());
    let mut built = BUILT
        .lock()
        .map_err(|_| anyhow::anyhow!("build lock poisoned"))?;
    built
        .entry(script)
        .or_insert_with(|| {
            let out = Command::new(repo_root().join(script))
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("running {script}: {e}"))?;
            if !out.status.success() {
                return Err(format!("{script} failed"));
            }
            Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Opt-ins beyond what [`ControlPlane::start`] runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Log every request's metadata (user, verb, resource, times) as JSON lines to
    /// [`ControlPlane::audit_log`], so a test can see who wrote what from the apiserver's side.
    pub audit: bool,
    /// Serve watches from etcd rather than the apiserver's watch cache, so a watch resumed from
    /// a revision etcd has compacted away ends in `410 Gone` (the cache would still serve it).
    pub no_watch_cache: bool,
}

impl Options {
    /// With the audit log on.
    pub fn audited() -> Self {
        Options {
            audit: true,
            ..Options::default()
        }
    }
}

const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
rules: [{level: Metadata}]
";

impl ControlPlane {
    pub async fn start() -> Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// [`ControlPlane::start`] with `options`. A port picked free can be taken by another
    /// process before etcd or kube-apiserver binds it (the machine is shared): that start is
    /// retried on new ports, a few times.
    pub async fn start_with(options: Options) -> Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_once(options).await {
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    eprintln!("control plane start {attempt}: a port was taken, retrying: {e:#}");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(options: Options) -> Result<Self> {
        let assets = assets()?;
        let slot = crate::slots::acquire().await?;
        let dir = tempfile::Builder::new()
            .prefix("secretbundle-cp-")
            .tempdir()?;
        let p = dir.path();
        let pki = pki::generate()?;
        for (name, pem) in [
            ("ca.crt", &pki.ca_pem),
            ("apiserver.crt", &pki.serving_cert_pem),
            ("apiserver.key", &pki.serving_key_pem),
            ("sa.key", &pki.sa_key_pem),
            ("sa.pub", &pki.sa_pub_pem),
        ] {
            fs::write(p.join(name), pem)?;
        }

        let (client_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = spawn(
            Command::new(assets.join("etcd")).args([
                "--data-dir",
                &p.join("etcd").to_string_lossy(),
                "--listen-client-urls",
                &etcd_url,
                "--advertise-client-urls",
                &etcd_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("default={peer_url}"),
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ]),
            &p.join("etcd.log"),
        )?;
        let url = format!("https://127.0.0.1:{api_port}");
        let mut cp = ControlPlane {
            etcd: Some(etcd),
            apiserver: None,
            apiserver_cmd: Vec::new(),
            etcd_url: etcd_url.clone(),
            controller_manager: Mutex::new(None),
            dir: Some(dir),
            url: url.clone(),
            kubeconfig: Kubeconfig::default(),
            _slot: slot,
        };
        let p = cp.dir().to_path_buf();
        // The opt-in flags go first; the rest is the same for every test.
        let mut args = Vec::new();
        if options.audit {
            fs::write(p.join("audit-policy.yaml"), AUDIT_POLICY)?;
            args.extend([
                format!(
                    "--audit-policy-file={}",
                    p.join("audit-policy.yaml").display()
                ),
                format!("--audit-log-path={}", cp.audit_log().display()),
                // 0: one plain file. The default (100 MB, then rotated) loses what a test
                // counts from a mark once a large run writes more than that.
                "--audit-log-maxsize=0".into(),
            ]);
        }
        if options.no_watch_cache {
            args.push("--watch-cache=false".into());
        }
        args.extend([
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", p.join("certs").display()),
            format!("--tls-cert-file={}", p.join("apiserver.crt").display()),
            format!(
                "--tls-private-key-file={}",
                p.join("apiserver.key").display()
            ),
            format!("--client-ca-file={}", p.join("ca.crt").display()),
            format!("--service-account-key-file={}", p.join("sa.pub").display()),
            format!(
                "--service-account-signing-key-file={}",
                p.join("sa.key").display()
            ),
            format!("--service-account-issuer={url}"),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--authorization-mode=RBAC".into(),
            // No pods run here, and no controller mints their ServiceAccount tokens.
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
            // 127.0.0.1 cannot back the kubernetes Service endpoints; nothing here needs them.
            "--endpoint-reconciler-type=none".into(),
            "--enable-priority-and-fairness=false".into(),
            "--v=0".into(),
        ]);
        cp.apiserver_cmd = args;
        let apiserver = cp.spawn_apiserver()?;
        cp.apiserver = Some(apiserver);
        cp.kubeconfig = kubeconfig(&url, &pki)?;
        cp.wait_ready().await?;
        Ok(cp)
    }

    fn spawn_apiserver(&self) -> Result<Child> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("apiserver.log"))?;
        Command::new(assets()?.join("kube-apiserver"))
            .args(&self.apiserver_cmd)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting kube-apiserver")
    }

    /// The process ids of kube-apiserver and etcd, for benchmarks that read their CPU time.
    pub fn server_pids(&self) -> (Option<u32>, Option<u32>) {
        (
            self.apiserver.as_ref().map(Child::id),
            self.etcd.as_ref().map(Child::id),
        )
    }

    /// Stops kube-apiserver (SIGKILL: an outage, not a graceful drain). etcd keeps running.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts kube-apiserver again on the same port, with the same certificates and etcd, and
    /// waits until it is ready.
    pub async fn restart_apiserver(&mut self) -> Result<()> {
        self.stop_apiserver();
        self.apiserver = Some(self.spawn_apiserver()?);
        self.wait_ready().await
    }

    /// Compacts etcd up to its current revision (through etcd's JSON gateway) and returns that
    /// revision: a watch resumed from any older one can only end in `410 Gone`.
    pub fn compact_etcd(&self) -> Result<i64> {
        // The range answer's header carries the current revision; key "\0" is "AA==".
        let range = etcd_post(&self.etcd_url, "/v3/kv/range", r#"{"key":"AA=="}"#)?;
        let revision: i64 = range["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .with_context(|| format!("no revision in {range}"))?;
        etcd_post(
            &self.etcd_url,
            "/v3/kv/compaction",
            &format!(r#"{{"revision":"{revision}","physical":true}}"#),
        )?;
        Ok(revision)
    }

    /// Starts (or restarts) kube-controller-manager with the garbage collector and the namespace
    /// controller, the two whose behaviour users' clusters have and a bare apiserver lacks.
    ///
    /// The garbage collector discovers resource types every 30 s: restart it after installing
    /// CRDs whose objects a test expects it to collect, so it knows them at once.
    pub fn start_controller_manager(&self) -> Result<()> {
        self.start_controller_manager_with(&[])
    }

    /// [`ControlPlane::start_controller_manager`] with more controllers, e.g.
    /// `deployment-controller` and `replicaset-controller` to turn a Deployment into Pods.
    pub fn start_controller_manager_with(&self, extra: &[&str]) -> Result<()> {
        self.stop_controller_manager();
        let controllers = ["garbage-collector-controller", "namespace-controller"]
            .iter()
            .chain(extra)
            .copied()
            .collect::<Vec<_>>()
            .join(",");
        let assets = assets()?;
        let kubeconfig = self.kubeconfig_path()?;
        let kcm = spawn(
            Command::new(assets.join("kube-controller-manager")).args([
                &format!("--kubeconfig={}", kubeconfig.display()),
                &format!("--controllers={controllers}"),
                "--leader-elect=false",
                // No serving endpoint: nothing scrapes it, and it needs no certificates then.
                "--secure-port=0",
                "--concurrent-gc-syncs=5",
                "--concurrent-namespace-syncs=5",
                "--v=1",
            ]),
            &self.dir().join("controller-manager.log"),
        )?;
        *self.kcm() = Some(kcm);
        Ok(())
    }

    fn kcm(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.controller_manager
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stop_controller_manager(&self) {
        if let Some(mut child) = self.kcm().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A client acting as cluster admin.
    pub async fn client(&self) -> Result<Client> {
        Ok(Client::try_from(self.config().await?)?)
    }

    /// The cluster-admin client configuration (to build a client with extra layers).
    pub async fn config(&self) -> Result<Config> {
        Ok(
            Config::from_custom_kubeconfig(self.kubeconfig.clone(), &KubeConfigOptions::default())
                .await?,
        )
    }

    /// Writes the admin kubeconfig (for kubectl and child processes) and returns its path.
    pub fn kubeconfig_path(&self) -> Result<PathBuf> {
        let path = self.dir().join("kubeconfig");
        if !path.exists() {
            fs::write(&path, serde_yaml::to_string(&self.kubeconfig)?)?;
        }
        Ok(path)
    }

    /// Writes a kubeconfig that authenticates with `token` (e.g. a ServiceAccount's) and
    /// returns its path.
    pub fn token_kubeconfig_path(&self, name: &str, token: &str) -> Result<PathBuf> {
        let mut kc = self.kubeconfig.clone();
        for info in kc
            .auth_infos
            .iter_mut()
            .filter_map(|u| u.auth_info.as_mut())
        {
            info.client_certificate_data = None;
            info.client_key_data = None;
            info.token = Some(token.to_string().into());
        }
        let path = self.dir().join(format!("kubeconfig-{name}"));
        fs::write(&path, serde_yaml::to_string(&kc)?)?;
        Ok(path)
    }

    /// Writes an admin kubeconfig that reaches the apiserver at `server` (e.g. through a
    /// [`crate::proxy::Proxy`]) and returns its path.
    pub fn kubeconfig_via(&self, name: &str, server: &str) -> Result<PathBuf> {
        let mut kc = self.kubeconfig.clone();
        for cluster in kc.clusters.iter_mut().filter_map(|c| c.cluster.as_mut()) {
            cluster.server = Some(server.to_string());
        }
        let path = self.dir().join(format!("kubeconfig-{name}"));
        fs::write(&path, serde_yaml::to_string(&kc)?)?;
        Ok(path)
    }

    /// The apiserver's Kubernetes minor ("1.34"), from its `/version` (the binaries
    /// `hack/controlplane.sh` builds are stamped with their release, so this names the pin).
    pub async fn minor(&self) -> Result<String> {
        let info = self.client().await?.apiserver_version().await?;
        minor_of(&info.git_version).with_context(|| {
            format!(
                "/version reports {:?} (major {:?}, minor {:?}): no release stamped",
                info.git_version, info.major, info.minor
            )
        })
    }

    /// The apiserver's port.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_default()
    }

    /// The audit log written with [`Options::audit`]. Read it with [`read_audit_log`].
    pub fn audit_log(&self) -> PathBuf {
        self.dir().join("audit.log")
    }

    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), TempDir::path)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let client = self.client().await?;
        let dir = self.dir().to_path_buf();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let req = http::Request::get("/readyz").body(Vec::new())?;
            if let Ok(body) = client.request_text(req).await
                && body.trim() == "ok"
            {
                return Ok(());
            }
            for (name, child) in [
                ("etcd", &mut self.etcd),
                ("kube-apiserver", &mut self.apiserver),
            ] {
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    let log = fs::read_to_string(
                        dir.join(format!("{}.log", name.trim_start_matches("kube-"))),
                    )
                    .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    bail!(
                        "{name} exited with {status}:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver not ready after 90s; logs in {}",
                    dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// "1.34" from a release version like "v1.34.4" (or "v1.34.4+abc"); `None` for an
/// unstamped build's "v0.0.0-master+$Format:%H$".
fn minor_of(git_version: &str) -> Option<String> {
    let mut parts = git_version.strip_prefix('v')?.splitn(3, '.');
    let (major, minor) = (parts.next()?, parts.next()?);
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    (numeric(major) && numeric(minor) && major != "0").then(|| format!("{major}.{minor}"))
}

/// A POST to etcd's JSON gateway (plain HTTP on its client port); returns the JSON answer.
fn etcd_post(base: &str, path: &str, body: &str) -> Result<serde_json::Value> {
    let (code, answer) =
        crate::process::http_post(base.trim_start_matches("http://"), path, &[], body)?;
    if code != 200 {
        bail!("etcd {path}: {code} {answer}");
    }
    Ok(serde_json::from_str(&answer)?)
}

fn spawn(cmd: &mut Command, log: &Path) -> Result<Child> {
    let out = fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))
}

fn kubeconfig(url: &str, pki: &pki::Pki) -> Result<Kubeconfig> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let yaml = format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {{server: "{url}", certificate-authority-data: "{ca}"}}
users:
- name: admin
  user: {{client-certificate-data: "{cert}", client-key-data: "{key}"}}
contexts:
- name: test
  context: {{cluster: test, user: admin}}
current-context: test
"#,
        ca = b64(&pki.ca_pem),
        cert = b64(&pki.admin_cert_pem),
        key = b64(&pki.admin_key_pem),
    );
    Ok(Kubeconfig::from_yaml(&yaml)?)
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Clients first, then the apiserver, so nothing spins on a vanished etcd.
        self.stop_controller_manager();
        for child in [self.apiserver.take(), self.etcd.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for log in ["apiserver.log", "etcd.log", "controller-manager.log"] {
                let text = fs::read_to_string(self.dir().join(log)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                eprintln!(
                    "--- last lines of {log} ---\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        if std::env::var_os("SB_KEEP_LOGS").is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("control plane files kept in {}", dir.keep().display());
        }
    }
}

/// The events of the audit log at `path` from byte `since` on, one JSON object a line.
pub fn read_audit_log(path: &Path, since: u64) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let start = usize::try_from(since)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    Ok(complete_events(&String::from_utf8_lossy(&bytes[start..])).to_string())
}

/// The complete events of an audit log's text. The apiserver may be writing its last line while
/// the log is read (a large event goes out in several writes), so a last line without its
/// newline yet is left for the next read.
fn complete_events(text: &str) -> &str {
    text.rfind('\n').map_or("", |end| &text[..=end])
}

#[cfg(test)]
mod tests {
    use super::{complete_events, minor_of};

    #[test]
    fn an_audit_line_still_being_written_is_left_for_the_next_read() {
        assert_eq!(complete_events("{\"a\":1}\n{\"b\":"), "{\"a\":1}\n");
        assert_eq!(complete_events("{\"a\":1}\n"), "{\"a\":1}\n");
        assert_eq!(complete_events("{\"a\":"), "");
        assert_eq!(complete_events(""), "");
    }

    #[test]
    fn the_minor_is_read_from_a_stamped_release_only() {
        assert_eq!(minor_of("v1.34.4").as_deref(), Some("1.34"));
        assert_eq!(minor_of("v1.37.2+k3s1").as_deref(), Some("1.37"));
        assert_eq!(minor_of("v0.0.0-master+$Format:%H$"), None);
        assert_eq!(minor_of("1.34.4"), None);
        assert_eq!(minor_of("v1"), None);
    }
}
