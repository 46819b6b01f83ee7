//! Sharding: a label selector in the syntax of `kubectl -l` (and of Flux's
//! `--watch-label-selector`) that picks the bundles one operator deployment reconciles.
//!
//! A shard caches only its own: its bundles in full, its children in full, and of everything
//! else only what a bundle of its own needs (another shard's bundle as a dependency, another
//! shard's child as a name already taken). So that a shard can select its children, each child
//! carries its bundle's values of the labels the selector reads.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::core::{Expression, Selector, SelectorExt};
use secretbundle_api::{BUNDLE_LABEL, SecretBundle};

/// One replica's share of the bundles.
#[derive(Clone, Debug)]
pub struct Shard {
    text: String,
    expressions: Vec<Expression>,
    /// Built once: every reconcile and status write of a sharded replica matches against it.
    selector: Selector,
}

impl Shard {
    pub fn new(text: &str) -> Result<Self, String> {
        let expressions = expressions(text)?;
        Ok(Shard {
            text: text.to_string(),
            selector: expressions.iter().cloned().collect(),
            expressions,
        })
    }

    /// The bundles of this shard.
    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.matches(labels)
    }

    /// The label keys the selector reads: what children carry of their bundle's labels.
    fn keys(&self) -> BTreeSet<&str> {
        self.expressions.iter().map(key_of).collect()
    }

    /// Gives each child its bundle's values of the selector's keys, so that a child is in
    /// exactly its bundle's shard (a key the bundle lacks, the child lacks too).
    pub fn stamp(&self, bundle: &SecretBundle, children: &mut [DynamicObject]) {
        let keys = self.keys();
        let carried: Vec<(&String, &String)> = bundle
            .labels()
            .iter()
            .filter(|(k, _)| keys.contains(k.as_str()) && *k != BUNDLE_LABEL)
            .collect();
        for child in children {
            let labels = child.labels_mut();
            for (k, v) in &carried {
                labels.insert((*k).clone(), (*v).clone());
            }
        }
    }

    /// The label selector of this shard's children.
    pub fn children(&self) -> String {
        format!("{BUNDLE_LABEL},{}", self.selector)
    }

    /// Every bundle of other shards, exactly when the selector has one requirement (its
    /// negation is a selector too); otherwise `None`: every bundle, this shard's included.
    pub fn others(&self) -> Option<String> {
        match self.expressions.as_slice() {
            [one] => Some(Selector::from(negate(one)).to_string()),
            _ => None,
        }
    }

    /// The label selector of the other shards' children (all children when the selector's
    /// negation is not one).
    pub fn others_children(&self) -> String {
        match self.others() {
            Some(others) => format!("{BUNDLE_LABEL},{others}"),
            None => BUNDLE_LABEL.to_string(),
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn key_of(e: &Expression) -> &str {
    match e {
        Expression::In(k, _)
        | Expression::NotIn(k, _)
        | Expression::Equal(k, _)
        | Expression::NotEqual(k, _)
        | Expression::Exists(k)
        | Expression::DoesNotExist(k) => k,
    }
}

fn negate(e: &Expression) -> Expression {
    match e.clone() {
        Expression::In(k, v) => Expression::NotIn(k, v),
        Expression::NotIn(k, v) => Expression::In(k, v),
        Expression::Equal(k, v) => Expression::NotEqual(k, v),
        Expression::NotEqual(k, v) => Expression::Equal(k, v),
        Expression::Exists(k) => Expression::DoesNotExist(k),
        Expression::DoesNotExist(k) => Expression::Exists(k),
    }
}

/// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k` (`==` is `=`).
pub fn parse(text: &str) -> Result<Selector, String> {
    Ok(expressions(text)?.into_iter().collect())
}

fn expressions(text: &str) -> Result<Vec<Expression>, String> {
    let mut exprs = Vec::new();
    for req in split_top_level(text) {
        let req = req.trim();
        if req.is_empty() {
            return Err(format!("empty requirement in {text:?}"));
        }
        exprs.push(requirement(req)?);
    }
    if exprs.is_empty() {
        return Err("empty selector".into());
    }
    Ok(exprs)
}

/// Splits on commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

fn requirement(req: &str) -> Result<Expression, String> {
    let key = |k: &str| -> Result<String, String> {
        let k = k.trim();
        let valid = !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if valid {
            Ok(k.to_string())
        } else {
            Err(format!("invalid label key {k:?}"))
        }
    };
    if let Some(k) = req.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(key(k)?));
    }
    if let Some((k, v)) = req.split_once("!=") {
        return Ok(Expression::NotEqual(key(k)?, v.trim().to_string()));
    }
    if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
        return Ok(Expression::Equal(key(k)?, v.trim().to_string()));
    }
    for (op, notin) in [(" notin ", true), (" in ", false)] {
        if let Some((k, set)) = req.split_once(op) {
            let set = set.trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| format!("expected (values) in {req:?}"))?;
            let values: BTreeSet<String> = inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            return Ok(if notin {
                Expression::NotIn(key(k)?, values)
            } else {
                Expression::In(key(k)?, values)
            });
        }
    }
    Ok(Expression::Exists(key(req)?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kube::core::SelectorExt;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn parses_what_kubectl_accepts() {
        let s = parse("shard=one, tier in (a, b),!legacy,team,env notin (dev)").expect("parses");
        assert_eq!(
            s.to_string(),
            "shard=one,tier in (a,b),!legacy,team,env notin (dev)"
        );
        assert!(s.matches(&labels(&[("shard", "one"), ("tier", "b"), ("team", "x")])));
        assert!(!s.matches(&labels(&[("shard", "one"), ("tier", "b")])));
        assert!(!s.matches(&labels(&[
            ("shard", "one"),
            ("tier", "b"),
            ("team", "x"),
            ("legacy", "")
        ])));
        assert!(parse("a==b").expect("==").matches(&labels(&[("a", "b")])));
        assert!(parse("a!=b").expect("!=").matches(&labels(&[])));
    }

    fn bundle(pairs: &[(&str, &str)]) -> SecretBundle {
        let mut b: SecretBundle = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b"},
            "spec": {"targetNamespace": "ns", "secretStoreRef": {"name": "vault"}, "secrets": []},
        }))
        .expect("bundle");
        b.metadata.labels = Some(labels(pairs));
        b
    }

    fn child(labels: &[(&str, &str)]) -> DynamicObject {
        let ar = kube::core::ApiResource::erase::<SecretBundle>(&());
        let mut o = DynamicObject::new("db", &ar);
        for (k, v) in labels {
            o.labels_mut().insert((*k).into(), (*v).into());
        }
        o
    }

    /// A child is in exactly its bundle's shard, for each shard of a split by one key and for
    /// selectors of several requirements; the other shards' selector is the exact complement.
    #[test]
    fn a_stamped_child_is_in_its_bundles_shard_and_no_other() {
        let shards = [
            "k=a",
            "!k",
            "k in (a,b)",
            "k notin (a)",
            "k",
            "k!=b",
            "k=a,team=x",
        ];
        let bundles = [
            vec![("k", "a")],
            vec![("k", "b")],
            vec![],
            vec![("k", "a"), ("team", "x"), ("other", "y")],
            vec![("team", "x")],
        ];
        for text in shards {
            let shard = Shard::new(text).expect("shard");
            let children = parse(&shard.children()).expect("children");
            let others = parse(&shard.others_children()).expect("others");
            let peers = shard.others().map(|o| parse(&o).expect("others"));
            for pairs in &bundles {
                let b = bundle(pairs);
                let mut made = [child(&[(BUNDLE_LABEL, "b")])];
                shard.stamp(&b, &mut made);
                let l = made[0].labels();
                assert_eq!(l.get("other"), None, "only the selector's keys are carried");
                let mine = shard.matches(b.labels());
                assert_eq!(children.matches(l), mine, "{text} {pairs:?}");
                if let Some(peers) = &peers {
                    assert_eq!(peers.matches(b.labels()), !mine, "{text} {pairs:?}");
                    assert_eq!(others.matches(l), !mine, "{text} {pairs:?}");
                } else {
                    assert!(others.matches(l), "all children, by metadata");
                }
            }
        }
        assert_eq!(
            Shard::new("k=a").expect("shard").others_children(),
            format!("{BUNDLE_LABEL},k!=a")
        );
        assert_eq!(Shard::new("k=a,team=x").expect("shard").others(), None);
    }

    #[test]
    fn rejects_what_is_not_a_selector() {
        for bad in ["", "a,,b", "a in b", "bad key=x", "=x"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
