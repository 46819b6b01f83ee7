//! Spawned tasks tied to their owner.

use tokio::task::JoinHandle;

/// Stops a spawned task when its owner goes away, even if the owner is itself cancelled.
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
