//! A Pod's container run the way a kubelet and container runtime would run it, minus both: from
//! the image's unpacked filesystem as its root (`chroot` in private mount, network and UTS
//! namespaces), read-only if the securityContext says so, as the user it names, with an empty
//! capability bounding set (`drop: [ALL]`) and no privilege escalation, with the command and
//! args Kubernetes derives from the image and the container, the env with downward-API fields
//! filled in from the Pod object, and the ServiceAccount token (TokenRequest bound to the Pod),
//! CA and namespace at /var/run/secrets/kubernetes.io/serviceaccount.
//!
//! Not modelled (refused where the Pod asks for it): other capability sets, privileged
//! containers, env from Secrets or ConfigMaps, volumes. Not applied at all: the seccomp profile,
//! resource limits (cgroups), and the pid and IPC namespaces; the container gets a /dev with the
//! usual devices but no /proc, /sys or /etc/hosts (the operator needs none of them).
//!
//! Host tools: unshare, mount, ip, hostname (util-linux, iproute2) and capsh (libcap), as root.
//!
//! Each pod has its own network namespace, so every replica binds its declared port; `podnet`
//! (src/bin/podnet.rs) stands in for the `kubernetes` Service and for the kubelet's probes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Container, Pod, Probe, SecurityContext, ServiceAccount};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, PostParams};
use serde::Deserialize;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::runtime::Runtime;

use crate::controlplane::ControlPlane;

/// Where kubelet mounts the ServiceAccount token, and kube-rs reads it.
const SA_MOUNT: &str = "var/run/secrets/kubernetes.io/serviceaccount";
/// What container runtimes set when the image declares no PATH.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How often a probe is retried while it fails (a kubelet's periodSeconds, shortened).
const PROBE_PERIOD: Duration = Duration::from_millis(200);
/// Generous, as elsewhere: the machine may run several control planes at once.
const DEADLINE: Duration = Duration::from_secs(60);

/// The parts of an image's config a runtime uses to start a container.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub user: String,
}

/// A running container of one Pod; killed on drop.
pub struct PodRun {
    pub name: String,
    /// The container's process: unshare, the script, env and capsh each exec the next.
    pub pid: u32,
    child: Child,
    // Held for the pod's life: podnet exits when it closes.
    stdin: Option<ChildStdin>,
    // The far end of the `kubernetes` Service, on a runtime of its own: it must keep forwarding
    // (Lease renewals included) while the test's runtime is busy or blocked.
    forward: Option<Runtime>,
    dir: TempDir,
}

impl PodRun {
    /// Starts the first container of `pod` from `rootfs` (the image unpacked), talking to
    /// `cp`'s apiserver with a token for the Pod's ServiceAccount, issued by `admin`; `podnet`
    /// is the binary of src/bin/podnet.rs (`env!("CARGO_BIN_EXE_podnet")` in a test). Returns
    /// once the container's process runs (podnet listens on its ports).
    pub async fn start(
        cp: &ControlPlane,
        admin: &Client,
        pod: &Pod,
        image: &ImageConfig,
        rootfs: &Path,
        podnet: &Path,
    ) -> Result<Self> {
        let name = pod.metadata.name.clone().context("pod name")?;
        let ns = pod.metadata.namespace.clone().context("pod namespace")?;
        let spec = pod.spec.as_ref().context("pod spec")?;
        let container = spec.containers.first().context("no container")?;
        let sc = container.security_context.clone().unwrap_or_default();
        confinable(&sc)?;
        let capsh = host_tool("capsh")?;
        let dir = tempfile::Builder::new()
            .prefix("secretbundle-pod-")
            .tempdir()?;

        // The projected ServiceAccount volume, as kubelet writes it (mode 0644).
        let sa_name = spec
            .service_account_name
            .clone()
            .unwrap_or("default".into());
        let token = bound_token(admin, &ns, &sa_name, pod).await?;
        let sa = dir.path().join("serviceaccount");
        std::fs::create_dir(&sa)?;
        std::fs::write(sa.join("token"), token)?;
        std::fs::copy(cp.dir().join("ca.crt"), sa.join("ca.crt"))?;
        std::fs::write(sa.join("namespace"), &ns)?;
        // The runtime creates mount points in the container's root before it goes read-only.
        std::fs::create_dir_all(rootfs.join(SA_MOUNT))?;
        std::fs::create_dir_all(rootfs.join("dev"))?;

        let (uid, gid) = user(pod, container, image)?;
        let ports: Vec<i32> = container
            .ports
            .iter()
            .flatten()
            .map(|p| p.container_port)
            .collect();
        let forward = forward_apiserver(&dir.path().join("apiserver.sock"), cp.port())?;

        // What the runtime finally executes: the container's env alone, then capsh enters the
        // root and becomes the user (groups and gid while NSS still works, the uid last: it
        // ends every capability) with an empty bounding set.
        let argv = argv(container, image)?;
        let (program, args) = argv.split_first().context("empty command")?;
        let mut exec: Vec<OsString> = vec!["env".into(), "-i".into()];
        for (k, v) in environment(pod, container, image)? {
            exec.push(format!("{k}={v}").into());
        }
        exec.push(capsh.into());
        exec.extend(
            [
                format!("--gid={gid}"),
                format!("--groups={gid}"),
                format!("--chroot={}", rootfs.display()),
                "--drop=all".into(),
                format!("--uid={uid}"),
            ]
            .map(OsString::from),
        );
        if sc.allow_privilege_escalation == Some(false) {
            exec.push("--no-new-privs".into());
        }
        exec.push(format!("--shell={program}").into());
        exec.push("--".into());
        exec.extend(args.iter().map(OsString::from));

        let log = dir.path().join("container.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(host_tool("unshare")?);
        cmd.args([
            "--mount",
            "--net",
            "--uts",
            "--propagation",
            "private",
            "--",
        ])
        .args(["/bin/sh", "-c", SCRIPT, "pod"])
        .arg(rootfs)
        .arg(&sa)
        .arg(dir.path())
        .arg(podnet)
        .arg(
            ports
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        )
        .arg(sc.read_only_root_filesystem.unwrap_or(false).to_string())
        .arg(&name)
        .args(exec)
        .stdin(Stdio::piped())
        .stdout(out.try_clone()?)
        .stderr(out);
        let mut child = cmd.spawn().context("starting unshare")?;
        let stdin = child.stdin.take();
        let mut run = PodRun {
            name,
            pid: child.id(),
            child,
            stdin,
            forward: Some(forward),
            dir,
        };
        run.await_podnet(&ports).await?;
        Ok(run)
    }

    /// Until podnet listens on every port (the script then execs the container), or the pod
    /// has failed.
    async fn await_podnet(&mut self, ports: &[i32]) -> Result<()> {
        let deadline = Instant::now() + DEADLINE;
        while !ports.iter().all(|p| self.socket(*p).exists()) {
            if let Some(status) = self.exited() {
                bail!("pod {} exited ({status}):\n{}", self.name, self.log());
            }
            if Instant::now() > deadline {
                bail!("pod {}: podnet not listening after {DEADLINE:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn socket(&self, port: i32) -> PathBuf {
        self.dir.path().join(format!("port-{port}.sock"))
    }

    /// An HTTP GET to the container's `port`, as the kubelet probes it: (code, body), or
    /// `None` while it does not answer.
    pub async fn get(&self, port: i32, path: &str) -> Option<(u16, String)> {
        let request = async {
            let mut s = tokio::net::UnixStream::connect(self.socket(port)).await?;
            let line = format!("GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n");
            s.write_all(line.as_bytes()).await?;
            let mut resp = Vec::new();
            s.read_to_end(&mut resp).await?;
            std::io::Result::Ok(String::from_utf8_lossy(&resp).into_owned())
        };
        // A kubelet's probe has a timeout too (timeoutSeconds, 1 s by default).
        let resp = tokio::time::timeout(Duration::from_secs(5), request)
            .await
            .ok()?
            .ok()?;
        let (head, body) = resp.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    }

    /// Probes `port` and `path` until it answers 200, as the kubelet would before it calls
    /// the container ready (or live); the body. Fails once the container has exited.
    pub async fn await_ok(&mut self, port: i32, path: &str) -> Result<String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let answer = self.get(port, path).await;
            if let Some((200, body)) = answer {
                return Ok(body);
            }
            if let Some(status) = self.exited() {
                bail!("pod {} exited ({status}):\n{}", self.name, self.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "pod {}: GET :{port}{path} answered {answer:?} after {DEADLINE:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(PROBE_PERIOD).await;
        }
    }

    /// The container's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("container.log")).unwrap_or_default()
    }

    /// Lines of /proc/PID/status the securityContext decides (Uid, Gid, Groups, Cap*,
    /// NoNewPrivs), and `mount POINT` → options of each mount the container sees.
    pub fn confinement(&self) -> Result<BTreeMap<String, String>> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let mut out: BTreeMap<String, String> = status
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| {
                matches!(*k, "Uid" | "Gid" | "Groups" | "NoNewPrivs") || k.starts_with("Cap")
            })
            .map(|(k, v)| {
                (
                    k.to_string(),
                    v.split_whitespace().collect::<Vec<_>>().join(" "),
                )
            })
            .collect();
        // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ..., mount points relative to
        // the process's root; mounts outside its root are not listed.
        let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", self.pid))?;
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let (Some(point), Some(opts)) = (f.get(4), f.get(5)) {
                out.insert(format!("mount {point}"), (*opts).to_string());
            }
        }
        Ok(out)
    }

    /// Whether the container has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, as when a node dies: no Lease release, no cleanup.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stdin.take();
    }
}

impl Drop for PodRun {
    fn drop(&mut self) {
        self.kill();
        if let Some(rt) = self.forward.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs in the pod's new mount, network and UTS namespaces, as root; then execs its arguments
/// (which become the container).
const SCRIPT: &str = r#"set -eu
rootfs=$1 sa=$2 dir=$3 podnet=$4 ports=$5 ro=$6 name=$7; shift 7
hostname "$name"
ip link set lo up
mount --bind "$rootfs" "$rootfs"
mount --bind "$sa" "$rootfs/var/run/secrets/kubernetes.io/serviceaccount"
mount -o remount,bind,ro "$rootfs/var/run/secrets/kubernetes.io/serviceaccount"
# /dev as runtimes make it (minus pts, shm, mqueue): the binary needs /dev/urandom, as
# getrandom falls back to it in a static binary.
mount -t tmpfs -o nosuid,strictatime,mode=755,size=65536k tmpfs "$rootfs/dev"
for d in null zero full random urandom tty; do
  touch "$rootfs/dev/$d"
  mount --bind "/dev/$d" "$rootfs/dev/$d"
done
if [ "$ro" = true ]; then mount -o remount,bind,ro "$rootfs"; fi
mkfifo "$dir/podnet.ready"
# An asynchronous list's stdin is /dev/null before its own redirections: hand podnet the pipe
# on fd 3.
exec 3<&0
"$podnet" "$dir" $ports <&3 >"$dir/podnet.ready" 2>>"$dir/podnet.log" &
read -r _ <"$dir/podnet.ready"
exec "$@" </dev/null 3<&-
"#;

/// Forwards connections on the Unix socket `path` (podnet's end of the `kubernetes` Service)
/// to the apiserver on 127.0.0.1:`port`.
fn forward_apiserver(path: &Path, port: u16) -> Result<Runtime> {
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_io()
        .build()?;
    rt.spawn(async move {
        let Ok(listener) = tokio::net::UnixListener::from_std(listener) else {
            return;
        };
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut api) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut api).await;
                }
            });
        }
    });
    Ok(rt)
}

/// What the runtime here can do of a container's securityContext; anything else is refused
/// rather than silently run differently.
fn confinable(sc: &SecurityContext) -> Result<()> {
    if sc.privileged == Some(true) {
        bail!("privileged containers are not modelled");
    }
    let caps = sc.capabilities.clone().unwrap_or_default();
    let drops_all = caps.drop.iter().flatten().any(|c| c == "ALL");
    if !drops_all || caps.add.is_some_and(|a| !a.is_empty()) {
        bail!("only capabilities {{drop: [ALL]}} is modelled (not a runtime's default set)");
    }
    Ok(())
}

/// `name` on the test's PATH.
fn host_tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is not on PATH (the pod harness needs it)"))
}

/// A token for `sa` bound to `pod`, as kubelet requests it: invalid once the Pod is deleted.
async fn bound_token(admin: &Client, ns: &str, sa: &str, pod: &Pod) -> Result<String> {
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "spec": {
            "audiences": [],
            "expirationSeconds": 3607,
            "boundObjectRef": {
                "apiVersion": "v1", "kind": "Pod",
                "name": pod.metadata.name, "uid": pod.metadata.uid,
            },
        }
    }))?;
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for ServiceAccount {ns}/{sa}"))?
        .status
        .and_then(|s| s.token)
        .context("TokenRequest returned no token")
}

/// Kubernetes' rule: `command` replaces the image's ENTRYPOINT, `args` its CMD, and a
/// `command` without `args` drops the CMD.
fn argv(container: &Container, image: &ImageConfig) -> Result<Vec<String>> {
    let (command, args) = match (&container.command, &container.args) {
        (Some(c), Some(a)) => (c.clone(), a.clone()),
        (Some(c), None) => (c.clone(), Vec::new()),
        (None, Some(a)) => (image.entrypoint.clone(), a.clone()),
        (None, None) => (image.entrypoint.clone(), image.cmd.clone()),
    };
    if command.is_empty() {
        bail!("neither the container nor the image names a command");
    }
    Ok(command.into_iter().chain(args).collect())
}

/// The container's uid and gid: its securityContext, else the pod's, else the image's USER.
fn user(pod: &Pod, container: &Container, image: &ImageConfig) -> Result<(i64, i64)> {
    let psc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let csc = container.security_context.clone().unwrap_or_default();
    let (img_uid, img_gid) = image.user.split_once(':').unwrap_or((&image.user, "0"));
    let uid = match csc.run_as_user.or(psc.run_as_user) {
        Some(u) => u,
        None => img_uid.parse().context("image USER is not numeric")?,
    };
    let gid = match csc.run_as_group.or(psc.run_as_group) {
        Some(g) => g,
        None => img_gid.parse().context("image group is not numeric")?,
    };
    if csc.run_as_non_root.or(psc.run_as_non_root) == Some(true) && uid == 0 {
        bail!("runAsNonRoot, but the container would run as uid 0");
    }
    Ok((uid, gid))
}

/// The container's environment: the image's, the `kubernetes` Service's (as podnet serves it),
/// HOSTNAME, and the container's `env` with downward-API fields read from the Pod.
fn environment(
    pod: &Pod,
    container: &Container,
    image: &ImageConfig,
) -> Result<BTreeMap<String, String>> {
    let mut env: BTreeMap<String, String> = image
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.entry("PATH".into()).or_insert(DEFAULT_PATH.into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    for (k, v) in [
        ("HOSTNAME", name.as_str()),
        ("HOME", "/"),
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
        ("KUBERNETES_PORT", "tcp://127.0.0.1:443"),
    ] {
        env.insert(k.into(), v.into());
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                let field = from
                    .field_ref
                    .as_ref()
                    .with_context(|| format!("env {}: only fieldRef is supported", var.name))?;
                field_ref(pod, &field.field_path)?
            }
            (None, None) => String::new(),
        };
        env.insert(var.name.clone(), value);
    }
    Ok(env)
}

fn field_ref(pod: &Pod, path: &str) -> Result<String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        other => bail!("downward API field {other} is not filled in here"),
    })
}

/// The container port a probe (or a Service's targetPort) means: a number, or a port's name.
pub fn port_of(container: &Container, port: &IntOrString) -> Result<i32> {
    match port {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
            .with_context(|| format!("no container port named {name:?}")),
    }
}

/// The HTTP GET of a probe: (port, path).
pub fn http_probe(container: &Container, probe: Option<&Probe>) -> Result<(i32, String)> {
    let get = probe
        .and_then(|p| p.http_get.as_ref())
        .context("no httpGet probe")?;
    Ok((
        port_of(container, &get.port)?,
        get.path.clone().unwrap_or("/".into()),
    ))
}
