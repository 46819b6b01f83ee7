//! Sharding: a label selector in the syntax of `kubectl -l` (and of Flux's
//! `--watch-label-selector`) that picks the bundles one operator deployment reconciles.

use std::collections::BTreeSet;

use kube::core::{Expression, Selector};

/// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k` (`==` is `=`).
pub fn parse(text: &str) -> Result<Selector, String> {
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
    Ok(exprs.into_iter().collect())
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

    #[test]
    fn rejects_what_is_not_a_selector() {
        for bad in ["", "a,,b", "a in b", "bad key=x", "=x"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
