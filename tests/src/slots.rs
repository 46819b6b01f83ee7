//! A bound on control planes running at once on this machine, across test binaries and
//! processes: each [`ControlPlane`](crate::ControlPlane) holds one slot (an exclusive lock on a
//! file) for its lifetime, so suites run side by side do not overload a small machine and turn
//! their deadlines into measurements of the load.
//!
//! `SB_CONTROL_PLANES` sets the number of slots (default 2, the parallelism `cargo test` used
//! before on two cores); the lock files live in `SB_SLOTS_DIR` (default the system temp dir).
//! The kernel releases a slot when its holder exits, however it exits.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use anyhow::{Context as _, Result};

/// One held slot; dropping it frees it.
#[derive(Debug)]
pub struct Slot {
    _file: File,
    pub index: usize,
}

/// How many control planes may run at once.
pub fn capacity() -> usize {
    std::env::var("SB_CONTROL_PLANES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(2)
}

fn dir() -> PathBuf {
    std::env::var_os("SB_SLOTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("secretbundle-slots"))
}

fn open(dir: &std::path::Path, index: usize) -> Result<File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("control-plane-{index}.lock"));
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Takes a free slot, or waits (off the async runtime's threads) until one is freed.
pub async fn acquire() -> Result<Slot> {
    acquire_in(dir(), capacity()).await
}

async fn acquire_in(dir: PathBuf, n: usize) -> Result<Slot> {
    for index in 0..n {
        let file = open(&dir, index)?;
        if file.try_lock().is_ok() {
            return Ok(Slot { _file: file, index });
        }
    }
    // All taken: block on one of them, spread by process and time so waiters share the slots.
    let index = (std::process::id() as usize + nanos()) % n;
    tokio::task::spawn_blocking(move || -> Result<Slot> {
        let file = open(&dir, index)?;
        file.lock()
            .with_context(|| format!("locking control-plane slot {index}"))?;
        Ok(Slot { _file: file, index })
    })
    .await
    .context("slot waiter panicked")?
}

fn nanos() -> usize {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as usize)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slot_is_held_until_dropped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let a = acquire_in(dir.clone(), 1).await.expect("first");
        let waiter = tokio::spawn(acquire_in(dir, 1));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a second holder must wait");
        drop(a);
        let b = tokio::time::timeout(std::time::Duration::from_secs(30), waiter)
            .await
            .expect("the freed slot is taken")
            .expect("join")
            .expect("slot");
        assert_eq!(b.index, 0);
    }
}
