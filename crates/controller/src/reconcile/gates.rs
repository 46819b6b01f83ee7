//! Gates: the preconditions a bundle waits for, checked in order. Pure functions over facts
//! that `observe` gathered from the cluster, so every branch is unit-tested here.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Selector, SelectorExt};
use secretbundle_api::{SecretBundle, StoreKind};

use super::render::render;
use crate::eso::{Capabilities, EsoVersion, ServedSchema, features};
pub use crate::facts::dependency_fact;
use crate::facts::{DependencyFact, Facts, NamespaceFact, StoreCondition, StoreFact};
use crate::reason::Reason;

/// A closed gate: why the bundle does not apply anything now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub reason: Reason,
    pub message: String,
}

impl Blocked {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// Checks the gates in order; `Ok` carries the ESO version to write children in.
pub fn evaluate(bundle: &SecretBundle, facts: &Facts) -> Result<EsoVersion, Blocked> {
    let ns = &bundle.spec.target_namespace;
    if bundle.spec.suspend {
        return Err(Blocked::new(
            Reason::Suspended,
            "spec.suspend is true; nothing is applied or pruned",
        ));
    }
    let labels = match &facts.namespace {
        NamespaceFact::Absent => {
            return Err(Blocked::new(
                Reason::WaitingForNamespace,
                format!("namespace {ns:?} does not exist"),
            ));
        }
        NamespaceFact::Terminating => {
            return Err(Blocked::new(
                Reason::WaitingForNamespace,
                format!("namespace {ns:?} is terminating"),
            ));
        }
        NamespaceFact::Active { labels } => labels,
    };
    let version = facts.crd.clone().map_err(|p| {
        Blocked::new(
            Reason::WaitingForCRD,
            format!(
                "CustomResourceDefinition {} {p}",
                crate::eso::EXTERNAL_SECRET_CRD
            ),
        )
    })?;
    eso_support(bundle, version, facts.eso_schema.as_deref())?;
    if let Some(cycle) = &facts.cycle {
        return Err(Blocked::new(
            Reason::DependencyCycle,
            format!("spec.dependsOn forms a cycle: {}", cycle.join(" -> ")),
        ));
    }
    let waiting: Vec<String> = facts
        .dependencies
        .iter()
        .filter_map(|(name, fact)| match fact {
            DependencyFact::Ready => None,
            DependencyFact::Missing => Some(format!("{name} (not found)")),
            DependencyFact::NotReady { reason, .. } => Some(format!("{name} ({reason})")),
        })
        .collect();
    if !waiting.is_empty() {
        // Idle only if every pending dependency is itself idle, failing or missing: while one is
        // being worked on, so is this bundle, and GitOps tools must not move past it yet.
        let progressing = facts.dependencies.iter().any(|(_, f)| {
            matches!(
                f,
                DependencyFact::NotReady {
                    progressing: true,
                    ..
                }
            )
        });
        let reason = if progressing {
            Reason::DependencyProgressing
        } else {
            Reason::WaitingForDependency
        };
        return Err(Blocked::new(
            reason,
            format!("waiting for bundles to be Ready: {}", waiting.join(", ")),
        ));
    }
    for (key, fact) in &facts.stores {
        match fact {
            StoreFact::Absent => {
                return Err(Blocked::new(
                    Reason::WaitingForStore,
                    format!("{key} does not exist"),
                ));
            }
            StoreFact::NotReady { message } => {
                return Err(Blocked::new(
                    Reason::StoreNotReady,
                    format!("{key} is not Ready: {message}"),
                ));
            }
            StoreFact::Ready { conditions } => {
                if key.kind == StoreKind::ClusterSecretStore
                    && !namespace_allowed(conditions, ns, labels)
                {
                    return Err(Blocked::new(
                        Reason::StoreNotAllowed,
                        format!("{key} spec.conditions do not admit namespace {ns:?}"),
                    ));
                }
            }
        }
    }
    Ok(version)
}

/// Whether the installed ExternalSecret CRD can express every field the bundle's children use.
/// A spec that does not render is left to the apply step, which reports it as InvalidSpec.
pub fn eso_support(
    bundle: &SecretBundle,
    version: EsoVersion,
    schema: Option<&ServedSchema>,
) -> Result<(), Blocked> {
    let (Some(schema), Ok(children)) = (schema, render(bundle, version)) else {
        return Ok(());
    };
    features::check(&children, Capabilities::Installed(schema))
        .map_err(|e| Blocked::new(Reason::EsoUpgradeRequired, e.to_string()))
}

/// ESO's rule: no conditions admit every namespace; otherwise any selector, name or
/// (unanchored) regex of any condition must match.
pub fn namespace_allowed(
    conditions: &[StoreCondition],
    ns: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    if conditions.is_empty() {
        return true;
    }
    let mut labels = labels.clone();
    // The apiserver sets this label on every namespace; selectors by name rely on it.
    labels.insert("kubernetes.io/metadata.name".into(), ns.into());
    conditions.iter().any(|c| {
        let by_selector = c
            .namespace_selector
            .clone()
            .and_then(|s| Selector::try_from(s).ok())
            .is_some_and(|s| s.matches(&labels));
        let by_regex = c
            .namespace_regexes
            .iter()
            .any(|r| regex::Regex::new(r).is_ok_and(|re| re.is_match(ns)));
        by_selector || c.namespaces.iter().any(|n| n == ns) || by_regex
    })
}

/// A path `start -> ... -> start` through `dependsOn`, if one exists.
pub fn find_cycle(start: &str, depends_on: &dyn Fn(&str) -> Vec<String>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        start: &str,
        depends_on: &dyn Fn(&str) -> Vec<String>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> bool {
        for next in depends_on(node) {
            if next == start {
                path.push(next);
                return true;
            }
            if done.insert(next.clone()) {
                path.push(next.clone());
                if visit(&next, start, depends_on, path, done) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut done = BTreeSet::new();
    visit(start, start, depends_on, &mut path, &mut done).then_some(path)
}

#[cfg(test)]
#[path = "gates_tests.rs"]
mod tests;
