//! The image and the chart as users pull them: a local OCI registry (`crane registry serve` on
//! 127.0.0.1, plain HTTP), the image `make image` builds, the chart packaged and pushed with
//! Helm, and the Dockerfile's final stage read independently of the builder, to compare.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tempfile::TempDir;

use crate::controlplane::{built, free_port};
use crate::pod::ImageConfig;
use crate::repo_root;
use crate::stack::Proc;

/// Where users pull the image from, below the registry's address.
pub const IMAGE_REPO: &str = "ameideio/secretbundle-operator";
/// Where the chart is pushed, below the registry's address (as `oci://ADDR/charts`).
pub const CHART_REPO: &str = "charts";

/// What `hack/image.sh` built: `layout/` (OCI layout), `dependencies.txt`, `crane`, `oci-image`.
pub fn image_dir() -> Result<PathBuf> {
    built("hack/image.sh").context("building the image (needs `make static`)")
}

/// Runs `cmd`; its stdout, or an error with its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// An in-memory-index, on-disk-blob OCI registry on a free loopback port, stopped on drop.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    crane: PathBuf,
    dir: TempDir,
    _proc: Proc,
}

impl Registry {
    pub async fn start() -> Result<Self> {
        let crane = image_dir()?.join("crane");
        let dir = tempfile::Builder::new()
            .prefix("secretbundle-registry-")
            .tempdir()?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let blobs = dir.path().join("blobs");
        std::fs::create_dir(&blobs)?;
        let proc = Proc::spawn(
            Command::new(&crane)
                .args(["registry", "serve", "--address", &addr, "--disk"])
                .arg(&blobs),
            &dir.path().join("registry.log"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "registry on {addr} did not start; see {}",
                    dir.path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Registry {
            addr,
            crane,
            dir,
            _proc: proc,
        })
    }

    /// `crane ARGS` (it speaks plain HTTP to 127.0.0.1 by itself).
    pub fn crane(&self, args: &[&str]) -> Result<String> {
        output(Command::new(&self.crane).args(args))
    }

    /// Pushes the image `make image` built as `ADDR/ameideio/secretbundle-operator:TAG`.
    pub fn push_image(&self, tag: &str) -> Result<String> {
        let reference = format!("{}/{IMAGE_REPO}:{tag}", self.addr);
        let layout = image_dir()?.join("layout");
        self.crane(&["push", &layout.to_string_lossy(), &reference])?;
        Ok(reference)
    }

    /// The parts of the image's config a runtime starts its containers from.
    pub fn image_config(&self, reference: &str) -> Result<ImageConfig> {
        let config: serde_json::Value = serde_json::from_str(&self.crane(&["config", reference])?)?;
        Ok(serde_json::from_value(config["config"].clone())?)
    }

    /// The image's filesystem, as a runtime unpacks it, in a new directory under `into`.
    pub fn export_rootfs(&self, reference: &str, into: &Path) -> Result<PathBuf> {
        let tar = into.join("rootfs.tar");
        self.crane(&["export", reference, &tar.to_string_lossy()])?;
        let rootfs = into.join("rootfs");
        std::fs::create_dir_all(&rootfs)?;
        output(
            Command::new("tar")
                .arg("-xf")
                .arg(&tar)
                .arg("-C")
                .arg(&rootfs)
                .arg("--same-owner"),
        )?;
        Ok(rootfs)
    }

    /// `helm package` of the chart in deploy/helm and `helm push` to `oci://ADDR/charts`;
    /// returns the chart's reference, `oci://ADDR/charts/secretbundle-operator`.
    pub fn push_chart(&self) -> Result<String> {
        let chart = repo_root().join("deploy/helm/secretbundle-operator");
        let out = self.dir.path().join("chart");
        std::fs::create_dir_all(&out)?;
        let packaged = output(self.helm().arg("package").arg(&chart).arg("-d").arg(&out))?;
        let tgz = packaged
            .split_whitespace()
            .last()
            .context("helm package printed no path")?;
        output(self.helm().args([
            "push",
            tgz,
            &format!("oci://{}/{CHART_REPO}", self.addr),
            "--plain-http",
        ]))?;
        Ok(format!(
            "oci://{}/{CHART_REPO}/secretbundle-operator",
            self.addr
        ))
    }

    /// `helm` with its cache, config and registry login kept in this registry's directory.
    pub fn helm(&self) -> Command {
        let home = self.dir.path().join("helm");
        let helm = built("hack/tools.sh")
            .map(|d| d.join("helm"))
            .unwrap_or_else(|_| PathBuf::from("helm"));
        let mut cmd = Command::new(helm);
        cmd.env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        cmd
    }
}

/// The final stage of the Dockerfile, as a Docker engine would read it.
#[derive(Debug, Default)]
pub struct Stage {
    pub from: String,
    /// `ARG` names and defaults.
    pub args: BTreeMap<String, String>,
    /// (source, destination) of each `COPY`.
    pub copies: Vec<(String, String)>,
    pub user: String,
    pub expose: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

impl Stage {
    /// A label's value with `${ARG}` replaced by `args` (else the ARG's default).
    pub fn label(&self, key: &str, args: &BTreeMap<&str, &str>) -> Option<String> {
        let mut value = self.labels.get(key)?.clone();
        for (name, default) in &self.args {
            let v = args.get(name.as_str()).copied().unwrap_or(default);
            value = value.replace(&format!("${{{name}}}"), v);
        }
        Some(value)
    }
}

/// Reads the Dockerfile's last stage (written apart from tools/image, so the two can disagree).
pub fn dockerfile_final_stage() -> Result<Stage> {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile"))?;
    let joined = text.replace("\\\n", " ");
    let mut stage = Stage::default();
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (instr, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        let json = || -> Result<Vec<String>> {
            serde_json::from_str(rest).with_context(|| format!("{instr} {rest}"))
        };
        match instr {
            "FROM" => {
                stage = Stage {
                    from: rest.to_string(),
                    ..Stage::default()
                }
            }
            "ARG" => {
                let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
                stage.args.insert(k.into(), v.into());
            }
            "COPY" => {
                let f: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                if let [src, dst] = f[..] {
                    stage.copies.push((src.into(), dst.into()));
                }
            }
            "USER" => stage.user = rest.into(),
            "EXPOSE" => stage.expose = rest.split_whitespace().map(String::from).collect(),
            "LABEL" | "ENV" => {
                for pair in rest.split_whitespace() {
                    let (k, v) = pair.split_once('=').context("KEY=VALUE")?;
                    let v = v.trim_matches('"');
                    if instr == "LABEL" {
                        stage.labels.insert(k.into(), v.into());
                    } else {
                        stage.env.push(format!("{k}={v}"));
                    }
                }
            }
            "ENTRYPOINT" => stage.entrypoint = json()?,
            "CMD" => stage.cmd = json()?,
            _ => {}
        }
    }
    Ok(stage)
}
