//! Who wrote what, from the apiserver's audit log: each request once (its ResponseComplete
//! stage), attributed to the token it was made with, so the old and the new operator (the same
//! ServiceAccount) are told apart.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::controlplane::read_audit_log;

/// Writes (create, update, patch, delete) counted by who made them and on what.
#[derive(Debug, Default, Serialize)]
pub struct Tally {
    /// `who -> "verb resource[/subresource]" -> count`.
    pub writes: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Tally {
    pub fn count(&self, who: &str, what: &str) -> u64 {
        self.writes
            .get(who)
            .and_then(|w| w.get(what))
            .copied()
            .unwrap_or(0)
    }

    /// Every write by `who` to `resource` (any verb, any subresource).
    pub fn to_resource(&self, who: &str, resource: &str) -> u64 {
        self.writes.get(who).map_or(0, |w| {
            w.iter()
                .filter(|(k, _)| {
                    k.split_once(' ').is_some_and(|(_, r)| {
                        r == resource || r.starts_with(&format!("{resource}/"))
                    })
                })
                .map(|(_, n)| n)
                .sum()
        })
    }

    /// Writes to `resource` by anyone.
    pub fn total(&self, resource: &str) -> u64 {
        self.writes
            .keys()
            .map(|w| self.to_resource(w, resource))
            .sum()
    }
}

/// Tallies the writes received at or after `since` (RFC 3339, the audit log's own clock) in
/// the namespaces `only` (all when empty). `names` maps credential IDs to the names to report.
pub fn tally(
    log: &Path,
    since: &str,
    only: &[String],
    names: &BTreeMap<String, String>,
) -> Result<Tally> {
    let text = read_audit_log(log, 0)?;
    // The file must cover the whole window, or writes in a rotated-away part would go uncounted.
    let first: serde_json::Value =
        serde_json::from_str(text.lines().next().context("empty audit log")?)?;
    anyhow::ensure!(
        first["requestReceivedTimestamp"]
            .as_str()
            .unwrap_or_default()
            <= since,
        "{} starts after {since}: the audit log was rotated, so writes could be missed",
        log.display()
    );
    let mut t = Tally::default();
    for line in text.lines() {
        let e: serde_json::Value = serde_json::from_str(line)?;
        let s = |p: &str| e.pointer(p).and_then(|v| v.as_str()).unwrap_or_default();
        if s("/stage") != "ResponseComplete"
            || !matches!(s("/verb"), "create" | "update" | "patch" | "delete" | "deletecollection")
            // Same format and zone, so text order is time order.
            || s("/requestReceivedTimestamp") < since
            || (!only.is_empty() && !only.iter().any(|n| n == s("/objectRef/namespace")))
        {
            continue;
        }
        let credential = e
            .pointer("/user/extra/authentication.kubernetes.io~1credential-id/0")
            .and_then(|v| v.as_str());
        let who = credential
            .and_then(|c| names.get(c).cloned())
            .unwrap_or_else(|| s("/user/username").to_string());
        let mut what = format!("{} {}", s("/verb"), s("/objectRef/resource"));
        if !s("/objectRef/subresource").is_empty() {
            what = format!("{what}/{}", s("/objectRef/subresource"));
        }
        *t.writes.entry(who).or_default().entry(what).or_default() += 1;
    }
    Ok(t)
}

/// The audit log's clock now: the newest request it recorded.
pub fn now(log: &Path) -> Result<String> {
    let text = read_audit_log(log, 0)?;
    let last = text.lines().last().context("empty audit log")?;
    let e: serde_json::Value = serde_json::from_str(last)?;
    e["requestReceivedTimestamp"]
        .as_str()
        .map(str::to_string)
        .context("no timestamp")
}
