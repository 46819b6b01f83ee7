//! Prometheus metrics. Every label value comes from a bounded set (reasons, error categories).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
};
use prometheus_client::registry::Registry;

use crate::reason::Reason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabel {
    category: &'static str,
}

pub struct Metrics {
    reconciles: Family<ReasonLabel, Counter>,
    failures: Family<CategoryLabel, Counter>,
    status_failures: Family<CategoryLabel, Counter>,
    duration: Histogram,
    bundles: Family<ReasonLabel, Gauge>,
    children_applied: Counter,
    children_pruned: Counter,
    leader_renewals: Histogram,
    by_bundle: Mutex<BTreeMap<String, Reason>>,
}

impl Metrics {
    /// Creates the metrics and registers them under the `secretbundle` prefix.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            reconciles: Family::default(),
            failures: Family::default(),
            status_failures: Family::default(),
            duration: Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            bundles: Family::default(),
            children_applied: Counter::default(),
            children_pruned: Counter::default(),
            // Fine below the 10 s renew deadline, so a p99 can be read from it.
            leader_renewals: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
            ]),
            by_bundle: Mutex::default(),
        };
        let r = registry.sub_registry_with_prefix("secretbundle");
        r.register(
            "reconciles",
            "Reconciles that completed, by the bundle's Ready reason",
            m.reconciles.clone(),
        );
        r.register(
            "reconcile_failures",
            "Reconciles that failed, by error category",
            m.failures.clone(),
        );
        r.register(
            "status_write_failures",
            "Status writes the apiserver did not accept (retried with backoff), by error category",
            m.status_failures.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            m.duration.clone(),
        );
        r.register(
            "bundles",
            "Bundles by Ready reason (WaitingFor* are closed gates)",
            m.bundles.clone(),
        );
        r.register(
            "children_applied",
            "ExternalSecrets written by server-side apply",
            m.children_applied.clone(),
        );
        r.register(
            "children_pruned",
            "ExternalSecrets deleted because they left the spec",
            m.children_pruned.clone(),
        );
        r.register(
            "leader_renewal_seconds",
            "Time from sending a Lease renewal to its answer (with leader election)",
            m.leader_renewals.clone(),
        );
        // One series per reason from the start, so absent reasons read 0 rather than nothing.
        for r in Reason::ALL {
            m.bundles
                .get_or_create(&ReasonLabel { reason: r.as_str() })
                .set(0);
        }
        m
    }

    pub fn start(&self) -> Instant {
        Instant::now()
    }

    /// Records one reconcile's duration, and its error category when it failed.
    pub fn finished(&self, started: Instant, failure: Option<&'static str>) {
        self.duration.observe(started.elapsed().as_secs_f64());
        if let Some(category) = failure {
            self.failures
                .get_or_create(&CategoryLabel { category })
                .inc();
        }
    }

    /// Records the Ready reason a reconcile left the bundle with.
    pub fn reconciled(&self, bundle: &str, reason: Reason) {
        self.reconciles
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
        self.set_reason(bundle, Some(reason));
    }

    /// The bundle is gone (or no longer this shard's): it leaves `bundles{reason}`.
    pub fn forget(&self, bundle: &str) {
        self.set_reason(bundle, None);
    }

    /// Forgets every bundle `keep` says is gone (after a relist, which reports no deletions).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<String> = match self.by_bundle.lock() {
            Ok(by_bundle) => by_bundle.keys().filter(|b| !keep(b)).cloned().collect(),
            Err(_) => return,
        };
        for b in gone {
            self.forget(&b);
        }
    }

    /// A status write failed; it is retried.
    pub fn status_write_failed(&self, category: &'static str) {
        self.status_failures
            .get_or_create(&CategoryLabel { category })
            .inc();
    }

    pub fn applied(&self) {
        self.children_applied.inc();
    }

    pub fn pruned(&self) {
        self.children_pruned.inc();
    }

    /// Where the leader elector records each renewal's latency.
    pub fn leader_renewals(&self) -> Histogram {
        self.leader_renewals.clone()
    }

    /// Moves one bundle between `bundles{reason}` series: only the two affected gauges change.
    fn set_reason(&self, bundle: &str, reason: Option<Reason>) {
        let Ok(mut by_bundle) = self.by_bundle.lock() else {
            return;
        };
        let old = match reason {
            Some(r) => by_bundle.insert(bundle.to_string(), r),
            None => by_bundle.remove(bundle),
        };
        if old == reason {
            return;
        }
        let gauge = |r: Reason| {
            self.bundles
                .get_or_create(&ReasonLabel { reason: r.as_str() })
                .clone()
        };
        if let Some(r) = old {
            gauge(r).dec();
        }
        if let Some(r) = reason {
            gauge(r).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).expect("encode");
        out
    }

    #[test]
    fn a_forgotten_bundle_leaves_the_gauges() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        m.reconciled("a", Reason::Conflict);
        m.reconciled("b", Reason::Conflict);
        assert!(scrape(&registry).contains("secretbundle_bundles{reason=\"Conflict\"} 2"));
        m.forget("a");
        m.retain(|b| b != "b");
        assert!(scrape(&registry).contains("secretbundle_bundles{reason=\"Conflict\"} 0"));
    }

    /// Every metric docs/operations.md names is served, and every metric served is documented.
    #[test]
    fn the_operations_guide_names_the_metrics_there_are() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        m.finished(m.start(), Some("forbidden"));
        m.status_write_failed("server_error");
        m.reconciled("a", Reason::Ready);
        let served = scrape(&registry);
        let served: std::collections::BTreeSet<String> = served
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(|name| match served.contains(&format!("{name}_total")) {
                true => format!("{name}_total"),
                false => name.to_string(),
            })
            .collect();
        let docs = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/operations.md"
        ))
        .expect("docs/operations.md");
        let re = regex::Regex::new(r"secretbundle_[a-z_]+").expect("regex");
        let named: std::collections::BTreeSet<String> = re
            .find_iter(&docs)
            .map(|m| m.as_str().to_string())
            .collect();
        for n in &named {
            let base = n
                .trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .trim_end_matches("_sum");
            assert!(
                served.contains(base),
                "docs name {n}, which is not served: {served:?}"
            );
        }
        for s in &served {
            assert!(named.contains(s), "{s} is served but not documented");
        }
        // Each failure category is documented, and alerts name only real ones.
        for c in crate::error::CATEGORIES {
            assert!(
                docs.contains(&format!("`{c}`")),
                "category {c} is not documented"
            );
        }
        let alert = regex::Regex::new(r#"category="([a-z_]+)""#).expect("regex");
        for c in alert.captures_iter(&docs) {
            assert!(
                crate::error::CATEGORIES.contains(&&c[1]),
                "docs alert on unknown category {}",
                &c[1]
            );
        }
    }
}
