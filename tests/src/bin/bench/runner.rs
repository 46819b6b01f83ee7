//! The processes being measured, each on its own: the operator (release build), the floor client
//! (this binary's `floor` subcommand) and `kubectl apply --server-side`. CPU and memory are read
//! from /proc, so they are the process's own and nothing of the benchmark's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use secretbundle_tests::process::http_get;
use secretbundle_tests::repo_root;
use secretbundle_tests::stack::Proc;

/// Where process logs go (kept after the run, overwritten by the next).
pub fn log_dir() -> PathBuf {
    let dir = repo_root().join("target/bench-logs");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// The operator binary: $SB_OPERATOR_BIN, or the release build `make bench` makes first.
pub fn operator_bin() -> PathBuf {
    std::env::var_os("SB_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/secretbundle-operator"))
}

/// Client-side rate limit: `Some((qps, burst))`, or none at all.
pub type Rate = Option<(u32, u32)>;

/// The operator's default limit, which the floor client copies.
pub const DEFAULT_RATE: Rate = Some((50, 100));

fn rate_args(rate: Rate) -> Vec<String> {
    // "Unthrottled" is the highest limit the CLI accepts, far above what two cores can send.
    let (qps, burst) = rate.unwrap_or((100_000, 100_000));
    vec![format!("--qps={qps}"), format!("--burst={burst}")]
}

/// A running process being measured.
pub struct Measured {
    pub proc: Proc,
    pub pid: u32,
    pub port: Option<u16>,
    pub log: PathBuf,
}

impl Measured {
    pub fn operator(kubeconfig: &Path, name: &str, rate: Rate) -> Result<Self> {
        Self::operator_with(kubeconfig, name, rate, &[])
    }

    /// The operator with `extra` flags after the usual ones.
    pub fn operator_with(
        kubeconfig: &Path,
        name: &str,
        rate: Rate,
        extra: &[&str],
    ) -> Result<Self> {
        let port = secretbundle_tests::controlplane::free_port()?;
        let log = log_dir().join(format!("{name}.log"));
        let mut cmd = Command::new(operator_bin());
        // As the image runs it: with the Dockerfile's environment (its malloc settings).
        for pair in secretbundle_tests::oci::dockerfile_final_stage()?.env {
            if let Some((k, v)) = pair.split_once('=') {
                cmd.env(k, v);
            }
        }
        let proc = Proc::spawn(
            cmd.env("KUBECONFIG", kubeconfig)
                .arg("run")
                .arg(format!("--http-addr=127.0.0.1:{port}"))
                .args(rate_args(rate))
                .args(extra),
            &log,
        )
        .with_context(|| format!("starting {}", operator_bin().display()))?;
        let pid = proc.id().context("operator exited at once")?;
        Ok(Measured {
            proc,
            pid,
            port: Some(port),
            log,
        })
    }

    /// This binary's `floor` subcommand: applies every bundle's children, then prints its CPU.
    /// With `watch`, the floor + watches anchor (see crate::floor).
    pub fn floor(
        kubeconfig: &Path,
        name: &str,
        rate: Rate,
        anchor: crate::floor::Anchor,
    ) -> Result<Self> {
        let log = log_dir().join(format!("{name}.log"));
        let proc = Proc::spawn(
            Command::new(std::env::current_exe()?)
                .arg("floor")
                .arg(kubeconfig)
                .args(rate_args(rate))
                .args(anchor.args()),
            &log,
        )?;
        let pid = proc.id().context("floor exited at once")?;
        Ok(Measured {
            proc,
            pid,
            port: None,
            log,
        })
    }

    pub fn kubectl(kubeconfig: &Path, name: &str, file: &Path) -> Result<Self> {
        let log = log_dir().join(format!("{name}.log"));
        let proc = Proc::spawn(
            Command::new(secretbundle_tests::kubectl_path())
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["apply", "--server-side", "--force-conflicts", "-f"])
                .arg(file),
            &log,
        )?;
        let pid = proc.id().context("kubectl exited at once")?;
        Ok(Measured {
            proc,
            pid,
            port: None,
            log,
        })
    }

    /// User plus system CPU seconds so far (also readable while it is a zombie).
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(&format!("/proc/{}/stat", self.pid))
    }

    /// Resident and peak resident memory, in MiB.
    pub fn rss_mib(&self) -> Result<(f64, f64)> {
        let f = self.status_mib(&["VmRSS:", "VmHWM:"])?;
        Ok((f[0], f[1]))
    }

    /// Resident memory by kind, in MiB: anonymous (heap, stacks) and file-backed (the binary's
    /// and libraries' pages it touched).
    pub fn rss_split_mib(&self) -> Result<(f64, f64)> {
        let f = self.status_mib(&["RssAnon:", "RssFile:"])?;
        Ok((f[0], f[1]))
    }

    /// Fields of /proc/PID/status given in kB, in MiB.
    fn status_mib(&self, names: &[&str]) -> Result<Vec<f64>> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        names
            .iter()
            .map(|name| {
                let line = status
                    .lines()
                    .find(|l| l.starts_with(name))
                    .with_context(|| format!("{name} missing"))?;
                let kib: f64 = line
                    .split_whitespace()
                    .nth(1)
                    .context("malformed")?
                    .parse()?;
                Ok(kib / 1024.0)
            })
            .collect()
    }

    /// The sum over every series of an operator metric (e.g. `secretbundle_reconciles_total`).
    pub fn metric_sum(&self, name: &str) -> f64 {
        self.metrics_page()
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The operator's /metrics page ("" if it does not answer).
    pub fn metrics_page(&self) -> String {
        self.port
            .and_then(|port| http_get(port, "/metrics").ok())
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// Waits for the process to exit by itself.
    pub async fn exited(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.proc.exited() {
                return Ok(status);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{} still running after {timeout:?}", self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit (the operator finishes its reconciles first).
    pub async fn stop(&mut self) -> Result<()> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM {}", self.pid);
        self.exited(Duration::from_secs(60)).await.map(|_| ())
    }
}

/// Clock ticks per second for /proc's CPU times.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a /proc/<pid>/stat file, in seconds.
pub fn cpu_seconds(stat_path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(stat_path)?;
    // Fields after the command name (which may hold spaces) start with the state, field 3.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> { Ok(fields.get(i).context("short stat")?.parse()?) };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks())
}

/// The 1-minute load average and the whole /proc/loadavg line.
pub fn load() -> (f64, String) {
    let line = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let one = line
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    (one, line.trim().to_string())
}
