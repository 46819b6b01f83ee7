//! Summaries (min/median/max over repeats) and the markdown tables for bench/README.md.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::{Value, json};

/// Per figure: min, median and max over the repeats that measured it.
pub fn summarize(repeats: &[Value]) -> Value {
    let mut all: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in repeats {
        if let Some(m) = r["metrics"].as_object() {
            for (k, v) in m {
                if let Some(x) = v.as_f64() {
                    all.entry(k.clone()).or_default().push(x);
                }
            }
        }
    }
    let mut out = serde_json::Map::new();
    for (k, mut xs) in all {
        xs.sort_by(f64::total_cmp);
        let median = if xs.len() % 2 == 1 {
            xs[xs.len() / 2]
        } else {
            (xs[xs.len() / 2 - 1] + xs[xs.len() / 2]) / 2.0
        };
        out.insert(
            k,
            json!({"min": xs[0], "median": median, "max": xs[xs.len() - 1], "n": xs.len()}),
        );
    }
    Value::Object(out)
}

/// What each figure means, and the target it is held to (issues 10 and 17), in table order.
const ROWS: &[(&str, &str, &str)] = &[
    (
        "cold_qps50.operator_s",
        "cold start, QPS 50: operator (s)",
        "",
    ),
    (
        "cold_qps50.floor_s",
        "cold start, QPS 50: floor client (s)",
        "",
    ),
    (
        "cold_qps50.ratio",
        "cold start, QPS 50: operator / floor",
        "<= 1.25",
    ),
    (
        "cold_qps50.operator_requests_per_bundle",
        "cold start: requests per bundle (20 children)",
        "",
    ),
    (
        "cold_qps50.operator_cpu_s",
        "cold start, QPS 50: operator CPU (s)",
        "",
    ),
    (
        "cold_qps50.floor_cpu_s",
        "cold start, QPS 50: floor CPU (s)",
        "",
    ),
    (
        "cold_qps50.cpu_ratio",
        "cold start, QPS 50: CPU operator / floor",
        "<= 2",
    ),
    (
        "cold_unthrottled.operator_s",
        "cold start, unthrottled: operator (s)",
        "",
    ),
    (
        "cold_unthrottled.operator_status_s",
        "cold start, unthrottled: operator, every status written (s)",
        "",
    ),
    (
        "cold_unthrottled.floor_s",
        "cold start, unthrottled: floor client (s)",
        "",
    ),
    (
        "cold_unthrottled.floor_watch_s",
        "cold start, unthrottled: floor + watches (s)",
        "",
    ),
    (
        "cold_unthrottled.floor_bundles_s",
        "cold start, unthrottled: floor + watches + bundle writes (s)",
        "",
    ),
    (
        "cold_unthrottled.kubectl_s",
        "cold start, unthrottled: kubectl apply --server-side (s)",
        "",
    ),
    (
        "cold_unthrottled.ratio",
        "cold start, unthrottled: operator / floor",
        "<= 1.25",
    ),
    (
        "cold_unthrottled.ratio_watch",
        "cold start, unthrottled: operator / floor + watches",
        "<= 1.25",
    ),
    (
        "cold_unthrottled.operator_apiserver_cpu_s",
        "cold start, unthrottled: apiserver CPU for the operator (s)",
        "",
    ),
    (
        "cold_unthrottled.floor_watch_apiserver_cpu_s",
        "cold start, unthrottled: apiserver CPU for floor + watches (s)",
        "",
    ),
    (
        "cold_unthrottled.apiserver_cpu_ratio_watch",
        "cold start, unthrottled: apiserver CPU operator / floor + watches",
        "<= 1.25",
    ),
    (
        "cold_unthrottled.floor_bundles_apiserver_cpu_s",
        "cold start, unthrottled: apiserver CPU for floor + watches + bundle writes (s)",
        "",
    ),
    (
        "cold_unthrottled.ratio_bundles",
        "cold start, unthrottled: operator / floor + watches + bundle writes",
        "<= 1.1",
    ),
    (
        "cold_unthrottled.apiserver_cpu_ratio_bundles",
        "cold start, unthrottled: apiserver CPU operator / floor + watches + bundle writes",
        "<= 1.1",
    ),
    (
        "cold_unthrottled.operator_cpu_s",
        "cold start, unthrottled: operator CPU (s)",
        "",
    ),
    (
        "cold_unthrottled.floor_cpu_s",
        "cold start, unthrottled: floor CPU (s)",
        "",
    ),
    (
        "cold_unthrottled.cpu_ratio",
        "cold start, unthrottled: CPU operator / floor",
        "<= 2",
    ),
    (
        "shards.seconds_ratio",
        "two shards: cold start / one replica's",
        "<= 1",
    ),
    (
        "shards.rss_above_idle_ratio",
        "two shards: the larger one's RSS above idle / one replica's",
        "about 0.5",
    ),
];

fn target(key: &str) -> &'static str {
    if let Some((_, _, t)) = ROWS.iter().find(|(k, _, _)| *k == key) {
        return t;
    }
    match key {
        k if k.starts_with("one_ns_") && k.ends_with(".operator_s_per_bundle") => "flat",
        k if k.starts_with("restart_") && k.ends_with(".writes") => "0",
        k if k.starts_with("restart_") && k.ends_with(".requests") => "independent of N",
        k if k.starts_with("waiting_") => "0",
        "latency.crd_ms.p95" | "latency.dependents_ms.p95" => "<= 1000",
        "rss_mib.10k" => "<= 40",
        k if k.starts_with("latency_") && k.ends_with("_ms.p95") => "<= 1000",
        _ => "",
    }
}

fn label(key: &str) -> String {
    ROWS.iter()
        .find(|(k, _, _)| *k == key)
        .map_or_else(|| key.to_string(), |(_, l, _)| (*l).to_string())
}

/// Known rows first, in their order, then every other figure by name.
fn ordered(keys: impl Iterator<Item = String>) -> Vec<String> {
    let mut rest: Vec<String> = keys.collect();
    rest.sort();
    rest.dedup();
    let mut out: Vec<String> = ROWS
        .iter()
        .map(|(k, _, _)| (*k).to_string())
        .filter(|k| rest.contains(k))
        .collect();
    rest.retain(|k| !out.contains(k));
    out.extend(rest);
    out
}

fn cell(s: &Value) -> String {
    let f = |x: &Value| {
        let v = x.as_f64().unwrap_or(f64::NAN);
        if v.abs() >= 100.0 {
            format!("{v:.0}")
        } else if v.abs() >= 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.2}")
        }
    };
    if s.is_null() {
        return "-".into();
    }
    format!("{} / {} / {}", f(&s["min"]), f(&s["median"]), f(&s["max"]))
}

fn loads(result: &Value) -> String {
    let xs: Vec<f64> = result["repeats"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["load"].as_array().cloned().unwrap_or_default())
        .flat_map(|l| [l["load1_before"].as_f64(), l["load1_after"].as_f64()])
        .flatten()
        .collect();
    let max = xs.iter().copied().fold(f64::NAN, f64::max);
    let min = xs.iter().copied().fold(f64::NAN, f64::min);
    format!(
        "1-min load between {min:.1} and {max:.1} on {} cores",
        result["cores"]
    )
}

fn header(result: &Value) -> String {
    format!(
        "`{}` preset, {} repeat(s), commit {}, {}; {}",
        result["preset"].as_str().unwrap_or("?"),
        result["repeats"].as_array().map_or(0, Vec::len),
        result["commit"].as_str().unwrap_or("?"),
        result["operator_version"].as_str().unwrap_or("?"),
        loads(result)
    )
}

/// One run's table: min / median / max per figure.
pub fn table(result: &Value) -> Result<String> {
    let summary = result["summary"].as_object().cloned().unwrap_or_default();
    let mut out = format!(
        "{}\n\n| figure | min / median / max | target |\n|---|---|---|\n",
        header(result)
    );
    for k in ordered(summary.keys().cloned()) {
        out += &format!(
            "| {} | {} | {} |\n",
            label(&k),
            cell(&summary[&k]),
            target(&k)
        );
    }
    Ok(out)
}

/// Before and after side by side.
pub fn compare(before: &Value, after: &Value) -> Result<String> {
    let (b, a) = (&before["summary"], &after["summary"]);
    let keys = b
        .as_object()
        .into_iter()
        .chain(a.as_object())
        .flat_map(|m| m.keys().cloned());
    let mut out = format!(
        "Before: {}\n\nAfter: {}\n\n| figure | before: min / median / max | after: min / median / max | target |\n|---|---|---|---|\n",
        header(before),
        header(after)
    );
    for k in ordered(keys) {
        out += &format!(
            "| {} | {} | {} | {} |\n",
            label(&k),
            cell(&b[&k]),
            cell(&a[&k]),
            target(&k)
        );
    }
    Ok(out)
}
