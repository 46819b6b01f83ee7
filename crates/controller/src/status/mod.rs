//! Status: what a reconcile concluded, turned into kstatus conditions (`conditions`, pure) and
//! written off the reconcile path (`writer`), which compares with the cache's `digest` form.

mod conditions;
mod digest;
mod writer;

pub use conditions::{Report, child_status, next_status, ready_reason, summarize};
pub use digest::compact;
pub(crate) use writer::StatusWriter;
