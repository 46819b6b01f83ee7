//! A pod's network, minus the CNI plugin and kube-proxy: run inside the pod's own network
//! namespace, it stands in for the `kubernetes` Service on 127.0.0.1:443 (forwarding to
//! `DIR/apiserver.sock`, which the test forwards to the real kube-apiserver) and makes each
//! container port reachable from outside as `DIR/port-N.sock`, the way a kubelet probes the
//! pod's IP. Unix sockets live in the filesystem, so they cross network namespaces.
//!
//! `podnet DIR PORT...`: prints `ready` once listening; exits when stdin closes.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().context("usage: podnet DIR PORT...")?);
    let ports: Vec<u16> = args
        .map(|p| p.parse().context("PORT"))
        .collect::<Result<_>>()?;

    let service = TcpListener::bind("127.0.0.1:443").await?;
    let apiserver = dir.join("apiserver.sock");
    tokio::spawn(async move {
        while let Ok((conn, _)) = service.accept().await {
            let to = apiserver.clone();
            tokio::spawn(async move { pipe(conn, UnixStream::connect(&to).await).await });
        }
    });
    for port in ports {
        let listener = unix_listener(&dir.join(format!("port-{port}.sock")))?;
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    pipe(conn, TcpStream::connect(("127.0.0.1", port)).await).await
                });
            }
        });
    }
    let mut stdout = tokio::io::stdout();
    stdout.write_all(b"ready\n").await?;
    stdout.flush().await?;
    drop(stdout);
    // The test holds the other end of stdin for the pod's life.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    Ok(())
}

fn unix_listener(path: &Path) -> Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))
}

async fn pipe<A, B>(mut a: A, b: std::io::Result<B>)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Ok(mut b) = b {
        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
    }
}
