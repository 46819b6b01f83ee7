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
    duration: Histogram,
    bundles: Family<ReasonLabel, Gauge>,
    children_applied: Counter,
    children_pruned: Counter,
    by_bundle: Mutex<BTreeMap<String, Reason>>,
}

impl Metrics {
    /// Creates the metrics and registers them under the `secretbundle` prefix.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            bundles: Family::default(),
            children_applied: Counter::default(),
            children_pruned: Counter::default(),
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

    pub fn forget(&self, bundle: &str) {
        self.set_reason(bundle, None);
    }

    pub fn applied(&self) {
        self.children_applied.inc();
    }

    pub fn pruned(&self) {
        self.children_pruned.inc();
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
