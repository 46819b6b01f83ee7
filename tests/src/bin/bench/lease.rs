//! Lease renewal under load: the cold start of the `cold` size (10,000 children in the full
//! preset) with leader election on, and the renewal latency the operator itself records
//! (`secretbundle_leader_renewal_seconds`) while it creates every child. Leadership must never
//! lapse: the renew deadline is 10 s, so the p99 has to stay far below it.

use std::time::Instant;

use anyhow::{Context as _, Result};

use crate::cluster::{Cluster, OPERATOR, bundles, child_keys};
use crate::observer::Observer;
use crate::runner::Measured;
use crate::scenarios::{LONG, Metrics, Preset};

const HISTOGRAM: &str = "secretbundle_leader_renewal_seconds";

pub async fn lease(m: &mut Metrics, p: &Preset) -> Result<()> {
    let (count, secrets, spread) = p.cold;
    let nss: Vec<String> = (0..spread).map(|i| format!("team-{i}")).collect();
    let set = bundles("svc", count, secrets, &nss);
    let keys = child_keys(&set);
    let c = Cluster::seeded(&nss, set).await?;
    let kc = c.kubeconfig_for(OPERATOR).await?;
    let obs = Observer::start(&c.client);
    let t0 = Instant::now();
    let flags = [
        "--leader-election",
        "--lease-namespace=default",
        "--identity=bench",
    ];
    let mut op = Measured::operator_with(&kc, "lease-operator", None, &flags)?;
    let done = obs.all_children(&keys, LONG).await?;
    let page = op.metrics_page();
    op.stop().await?;
    let h = Buckets::parse(&page, HISTOGRAM).context("no renewal histogram on /metrics")?;
    m.insert("lease.children".into(), keys.len() as f64);
    m.insert(
        "lease.cold_s".into(),
        done.saturating_duration_since(t0).as_secs_f64(),
    );
    m.insert("lease.renewals".into(), h.count);
    m.insert("lease.renewal_mean_ms".into(), h.sum / h.count * 1000.0);
    m.insert(
        "lease.renewal_p99_le_ms".into(),
        h.quantile_bound(0.99) * 1000.0,
    );
    m.insert(
        "lease.renewal_max_le_ms".into(),
        h.quantile_bound(1.0) * 1000.0,
    );
    let lost = std::fs::read_to_string(&op.log)?
        .lines()
        .filter(|l| l.contains("lost the Lease") || l.contains("stepping down"))
        .count();
    m.insert("lease.leadership_lost".into(), lost as f64);
    Ok(())
}

/// A Prometheus histogram as /metrics prints it: cumulative (upper bound, count) pairs.
struct Buckets {
    bounds: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl Buckets {
    fn parse(page: &str, name: &str) -> Option<Self> {
        let (mut bounds, mut sum, mut count) = (Vec::new(), None, None);
        for line in page.lines() {
            let value = || line.rsplit(' ').next()?.parse::<f64>().ok();
            if let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{le=\"")) {
                let le = rest.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                bounds.push((le, value()?));
            } else if line.starts_with(&format!("{name}_sum")) {
                sum = value();
            } else if line.starts_with(&format!("{name}_count")) {
                count = value();
            }
        }
        Some(Buckets {
            bounds,
            sum: sum?,
            count: count.filter(|c| *c > 0.0)?,
        })
    }

    /// The upper bound of the bucket holding quantile `q`: the p99 is at most this.
    fn quantile_bound(&self, q: f64) -> f64 {
        let rank = q * self.count;
        self.bounds
            .iter()
            .find(|(_, n)| *n >= rank)
            .map_or(f64::INFINITY, |(le, _)| *le)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p99_bound_is_the_bucket_holding_it() {
        let page = "x_bucket{le=\"0.01\"} 90\nx_bucket{le=\"0.1\"} 99\nx_bucket{le=\"1.0\"} 100\n\
                    x_bucket{le=\"+Inf\"} 100\nx_sum 1.5\nx_count 100\n";
        let h = Buckets::parse(page, "x").expect("parsed");
        assert_eq!(h.quantile_bound(0.99), 0.1);
        assert_eq!(h.quantile_bound(1.0), 1.0);
        assert_eq!(h.quantile_bound(0.5), 0.01);
    }
}
