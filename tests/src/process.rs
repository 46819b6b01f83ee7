//! The operator as its own process (the real binary), and a tiny HTTP GET for its endpoints.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::stack::Proc;

/// The operator binary: $SB_OPERATOR_BIN, or the debug build `make test` makes first.
pub fn operator_bin() -> PathBuf {
    std::env::var_os("SB_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("target/debug/secretbundle-operator"))
}

/// A running `secretbundle-operator run`, with its HTTP port.
pub struct Operator {
    pub port: u16,
    pub proc: Proc,
}

impl Operator {
    pub fn start(kubeconfig: &Path, log: &Path, extra: &[&str]) -> Result<Self> {
        let port = crate::controlplane::free_port()?;
        let proc = Proc::spawn(
            Command::new(operator_bin())
                .env("KUBECONFIG", kubeconfig)
                // SB_OPERATOR_LOG, e.g. "debug", to see more when a test fails.
                .env(
                    "RUST_LOG",
                    std::env::var("SB_OPERATOR_LOG").unwrap_or_else(|_| "info".into()),
                )
                .arg("run")
                .arg(format!("--http-addr=127.0.0.1:{port}"))
                .args(extra),
            log,
        )
        .context("run `cargo build -p secretbundle-operator` first")?;
        Ok(Operator { port, proc })
    }

    /// GET `path` on the operator's HTTP port; `None` while it does not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path).ok()
    }

    /// The value of one metric line (exact series, e.g. `secretbundle_reconciles_total{reason="Ready"}`).
    pub fn metric(&self, series: &str) -> f64 {
        self.get("/metrics")
            .and_then(|(_, body)| {
                body.lines()
                    .find(|l| l.starts_with(series))?
                    .rsplit(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }
}

impl Operator {
    /// Waits until a metric reaches `min` (metrics are updated just after the status write).
    pub async fn await_metric(&self, series: &str, min: f64) -> Result<()> {
        let deadline = tokio::time::Instant::now() + crate::wait::TIMEOUT;
        while self.metric(series) < min {
            if tokio::time::Instant::now() > deadline {
                bail!("{series} stayed below {min}: {:?}", self.get("/metrics"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

/// A plain-HTTP POST (HTTP/1.0, so the answer is never chunked) to `addr` (`host:port`).
pub fn http_post(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    let mut head =
        format!("POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    write!(s, "{head}Content-Length: {}\r\n\r\n{body}", body.len())?;
    read_response(s)
}

pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    read_response(s)
}

fn read_response(mut s: TcpStream) -> Result<(u16, String)> {
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let Some((head, body)) = resp.split_once("\r\n\r\n") else {
        bail!("malformed response")
    };
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}
