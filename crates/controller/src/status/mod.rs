//! Status: what a reconcile concluded, turned into kstatus conditions (`conditions`, pure) and
//! written off the reconcile path (`writer`).

mod conditions;
mod writer;

pub use conditions::{Report, child_status, next_status, ready_reason, summarize};
pub(crate) use writer::StatusWriter;
