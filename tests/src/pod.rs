//! A Pod's container run the way a kubelet and container runtime would run it, minus both: from
//! the image's unpacked filesystem as a read-only root (`chroot` in a private mount namespace),
//! as the user the securityContext names with no capabilities and no privilege escalation, with
//! the command and args Kubernetes derives from the image and the container, the env with
//! downward-API fields filled in from the Pod object, and the ServiceAccount token (TokenRequest
//! bound to the Pod), CA and namespace at /var/run/secrets/kubernetes.io/serviceaccount.
//!
//! Each pod has its own network namespace, so every replica binds its declared port; `podnet`
//! (src/bin/podnet.rs) stands in for the `kubernetes` Service and for the kubelet's probes.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Container, Pod, Probe, ServiceAccount};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, PostParams};
use serde::Deserialize;
use tempfile::TempDir;
use tokio::task::JoinHandle;

use crate::controlplane::ControlPlane;

/// Where kubelet mounts the ServiceAccount token, and kube-rs reads it.
const SA_MOUNT: &str = "var/run/secrets/kubernetes.io/serviceaccount";
/// What container runtimes set when the image declares no PATH.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
    pub pid: u32,
    child: Child,
    // Held for the pod's life: podnet exits when it closes.
    stdin: Option<ChildStdin>,
    forward: JoinHandle<()>,
    dir: TempDir,
}

impl PodRun {
    /// Starts the first container of `pod` from `rootfs` (the image unpacked), talking to
    /// `cp`'s apiserver with a token for the Pod's ServiceAccount, issued by `admin`; `podnet`
    /// is the binary of src/bin/podnet.rs (`env!("CARGO_BIN_EXE_podnet")` in a test).
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

        let (uid, gid) = user(pod, container, image)?;
        let sc = container.security_context.clone().unwrap_or_default();
        let read_only = sc.read_only_root_filesystem.unwrap_or(false);
        let no_new_privs = sc.allow_privilege_escalation == Some(false);
        let ports: Vec<String> = container
            .ports
            .iter()
            .flatten()
            .map(|p| p.container_port.to_string())
            .collect();

        // The kubernetes Service, as podnet serves it inside the pod's network namespace.
        let socket = dir.path().join("apiserver.sock");
        let listener = tokio::net::UnixListener::bind(&socket)?;
        let api_port = cp.port();
        let forward = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut api) =
                        tokio::net::TcpStream::connect(("127.0.0.1", api_port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut conn, &mut api).await;
                    }
                });
            }
        });

        let log = dir.path().join("container.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--net",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
        ])
        .arg(SCRIPT)
        .arg("pod")
        .arg(rootfs)
        .arg(&sa)
        .arg(dir.path())
        .arg(podnet)
        .arg(ports.join(" "))
        .arg(read_only.to_string())
        .arg(if no_new_privs { "--no-new-privs" } else { "--" })
        .arg(format!("{uid}:{gid}"))
        .args(argv(container, image)?)
        .env_clear()
        .envs(environment(pod, container, image)?)
        .stdin(Stdio::piped())
        .stdout(out.try_clone()?)
        .stderr(out);
        let mut child = cmd.spawn().context("starting unshare")?;
        let stdin = child.stdin.take();
        Ok(PodRun {
            name,
            pid: child.id(),
            child,
            stdin,
            forward,
            dir,
        })
    }

    /// An HTTP GET to the container's `port`, as the kubelet probes it; `None` while it does not
    /// answer.
    pub fn get(&self, port: i32, path: &str) -> Option<(u16, String)> {
        let sock = self.dir.path().join(format!("port-{port}.sock"));
        let mut s = UnixStream::connect(sock).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n").ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        let (head, body) = resp.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    }

    /// The container's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("container.log")).unwrap_or_default()
    }

    /// Lines of /proc/PID/status the securityContext decides (Uid, Gid, Groups, Cap*,
    /// NoNewPrivs), and the mount options of its root.
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
        // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ...; the container's "/".
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
        self.forward.abort();
    }
}

/// Runs in the pod's new mount and network namespaces, as root, then becomes the container.
const SCRIPT: &str = r#"set -eu
rootfs=$1 sa=$2 dir=$3 podnet=$4 ports=$5 ro=$6 nnp=$7 user=$8; shift 8
ip link set lo up
mount --bind "$rootfs" "$rootfs"
mount --bind "$sa" "$rootfs/var/run/secrets/kubernetes.io/serviceaccount"
mount -o remount,bind,ro "$rootfs/var/run/secrets/kubernetes.io/serviceaccount"
if [ "$ro" = true ]; then mount -o remount,bind,ro "$rootfs"; fi
mkfifo "$dir/podnet.ready"
"$podnet" "$dir" $ports <&0 >"$dir/podnet.ready" 2>>"$dir/podnet.log" &
read -r _ <"$dir/podnet.ready"
exec setpriv $nnp chroot --userspec="$user" "$rootfs" "$@"
"#;

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
