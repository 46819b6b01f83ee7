//! Which ESO serves which field the operator writes, and the refusal to apply a child the
//! installed ESO cannot express.
//!
//! On a cluster the installed CRD's schema decides ([`ServedSchema`]); offline (`render
//! --eso-version v0.10.7`) a table of the fields newer than the oldest supported release does.
//! A unit test holds the table to the vendored CRDs of every release in
//! `tests/fixtures/eso-crds`.

use kube::api::DynamicObject;
use serde_json::Value;

use super::EsoVersion;
use super::schema::{self, Gap, ServedSchema};

/// An ESO release, e.g. `v0.16.2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Release(pub u16, pub u16, pub u16);

impl Release {
    /// The oldest release whose fields the operator knows (the oldest vendored CRDs).
    pub const OLDEST_KNOWN: Release = Release(0, 10, 7);

    /// Parses `v0.16.2` or `0.16.2`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.strip_prefix('v').unwrap_or(s).split('.');
        let mut next = || parts.next()?.parse().ok();
        let r = Release(next()?, next()?, next()?);
        parts.next().is_none().then_some(r)
    }

    /// The API version the operator writes for this release: `v1` from ESO v0.16 on.
    pub fn api_version(self) -> EsoVersion {
        if self >= Release(0, 16, 0) {
            EsoVersion::V1
        } else {
            EsoVersion::V1beta1
        }
    }
}

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.0, self.1, self.2)
    }
}

/// A field (or one value of it) that ESO releases older than `since` cannot express.
#[derive(Clone, Copy, Debug)]
pub struct Feature {
    /// Path in the ExternalSecret, list indices left out.
    pub path: &'static str,
    /// A value of an enum-like field; `None` for the field itself.
    pub value: Option<&'static str>,
    /// The first release known to serve it.
    pub since: Release,
}

const KIND: &str = "spec.dataFrom[].sourceRef.generatorRef.kind";

/// Every field the operator writes that some supported release lacks. Everything else it
/// writes is served from [`Release::OLDEST_KNOWN`] on.
pub const FEATURES: &[Feature] = &[
    // external-secrets#4594; v0.16.1 is the first published release carrying it.
    Feature {
        path: "spec.refreshPolicy",
        value: None,
        since: Release(0, 16, 1),
    },
    // Generator kinds v0.16.2 does not know; v2.9.0 is the first vendored release that does.
    gen_kind("SSHKey"),
    gen_kind("MFA"),
    gen_kind("CloudsmithAccessToken"),
    gen_kind("GitlabDeployToken"),
    gen_kind("BeyondtrustWorkloadCredentialsDynamicSecret"),
];

const fn gen_kind(kind: &'static str) -> Feature {
    Feature {
        path: KIND,
        value: Some(kind),
        since: Release(2, 9, 0),
    }
}

/// What an ESO can express: the schema its installed CRD serves, or a named release.
#[derive(Clone, Copy, Debug)]
pub enum Capabilities<'a> {
    Installed(&'a ServedSchema),
    Release(Release),
}

impl Capabilities<'_> {
    fn gaps(&self, spec: &Value) -> Vec<Gap> {
        match self {
            Capabilities::Installed(schema) => schema.gaps(spec),
            Capabilities::Release(r) => release_gaps(*r, spec),
        }
    }

    fn describe(&self) -> String {
        match self {
            Capabilities::Installed(s) => format!(
                "the installed ExternalSecret CRD ({})",
                s.version.api_version()
            ),
            Capabilities::Release(r) => format!("ESO {r}"),
        }
    }
}

/// The fields of `spec` that `release` does not serve, by the table.
fn release_gaps(release: Release, spec: &Value) -> Vec<Gap> {
    let mut out: Vec<Gap> = Vec::new();
    leaves(spec, "spec".into(), &mut |path, value| {
        // A missing object is one gap, not one per field inside it.
        if out.iter().any(|g| covers(&g.path, path)) {
            return;
        }
        let pattern = schema::pattern(path);
        let missing = FEATURES.iter().find(|f| {
            release < f.since
                && match f.value {
                    Some(v) => f.path == pattern && Some(v) == value,
                    None => covers(f.path, &pattern),
                }
        });
        if let Some(f) = missing {
            out.push(Gap {
                path: path.to_string(),
                value: f.value.map(String::from),
            });
        }
    });
    out
}

/// Whether `field` is `path` or lies under it.
fn covers(field: &str, path: &str) -> bool {
    path.strip_prefix(field)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Calls `f` for every field path of `value`, parents before children, with its string value.
fn leaves(value: &Value, path: String, f: &mut impl FnMut(&str, Option<&str>)) {
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                let p = format!("{path}.{k}");
                f(&p, v.as_str());
                leaves(v, p, f);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                leaves(v, format!("{path}[{i}]"), f);
            }
        }
        _ => {}
    }
}

/// A field of a bundle that the ESO in question cannot express.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    /// Bundle field, e.g. `spec.secrets[0].refreshPolicy`.
    pub field: String,
    pub gap: Gap,
    /// The first release known to serve it, when known.
    pub since: Option<Release>,
}

/// Why a bundle is not applied: the ESO it would be applied to cannot express some fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EsoTooOld {
    /// "the installed ExternalSecret CRD (external-secrets.io/v1beta1)" or "ESO v0.10.7".
    pub by: String,
    pub fields: Vec<Unsupported>,
}

impl std::fmt::Display for EsoTooOld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 3;
        for (i, u) in self.fields.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            // Only the table knows which release brought a field; without it, say what is missing.
            let needs = match u.since {
                Some(r) => format!("needs ESO {r} or later"),
                None => "cannot be expressed".into(),
            };
            match &u.gap.value {
                Some(v) => write!(
                    f,
                    "{} {v} {needs}: {} does not accept {v:?} for {}",
                    u.field, self.by, u.gap.path
                )?,
                None => write!(f, "{} {needs}: {} has no {}", u.field, self.by, u.gap.path)?,
            }
        }
        if self.fields.len() > SHOWN {
            write!(f, "; and {} more", self.fields.len() - SHOWN)?;
        }
        f.write_str(
            ". Nothing is applied until ESO (its CRDs) is upgraded; the bundle then proceeds by itself",
        )
    }
}

/// Checks rendered children (in `spec.secrets` order) against what `caps` can express.
pub fn check(children: &[DynamicObject], caps: Capabilities<'_>) -> Result<(), EsoTooOld> {
    let mut fields = Vec::new();
    for (i, child) in children.iter().enumerate() {
        let Some(spec) = child.data.get("spec") else {
            continue;
        };
        for gap in caps.gaps(spec) {
            let pattern = gap.pattern();
            let since = FEATURES
                .iter()
                .find(|f| {
                    covers(f.path, &pattern)
                        && (f.value.is_none() || f.value == gap.value.as_deref())
                })
                .map(|f| f.since);
            fields.push(Unsupported {
                field: format!("spec.secrets[{i}].{}", bundle_field(&gap.path)),
                gap,
                since,
            });
        }
    }
    if fields.is_empty() {
        Ok(())
    } else {
        Err(EsoTooOld {
            by: caps.describe(),
            fields,
        })
    }
}

/// The bundle field an ExternalSecret field is rendered from (see `render`).
fn bundle_field(es_path: &str) -> String {
    const MAP: &[(&str, &str)] = &[
        ("spec.target.template.type", "type"),
        ("spec.target.template.metadata.labels", "labels"),
        ("spec.target.template.metadata.annotations", "annotations"),
        ("spec.target.template.engineVersion", "template"),
        ("spec.target.template.", "template."),
        ("spec.target.name", "targetName"),
        ("spec.target.", ""),
        ("spec.", ""),
    ];
    for (es, bundle) in MAP {
        if let Some(rest) = es_path.strip_prefix(es) {
            let rest = if es.ends_with('.') { rest } else { "" };
            let field = format!("{bundle}{rest}");
            // The generator's apiVersion is the operator's; the user wrote the reference.
            return field.replace(".generatorRef.apiVersion", ".generatorRef");
        }
    }
    es_path.to_string()
}

#[cfg(test)]
#[path = "features_tests.rs"]
mod tests;
