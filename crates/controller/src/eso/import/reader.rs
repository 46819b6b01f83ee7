//! Taking an ExternalSecret's spec apart field by field. Every key read is removed from its
//! object, so whatever is left at the end is, by construction, a field the import did not carry:
//! [`Reader::rest`] refuses each one. No field can be lost without being named.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::fields;

/// A field of an ExternalSecret that a bundle cannot express exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Where, e.g. `spec.dataFrom[1].sourceRef.storeRef`.
    pub field: String,
    /// Why, in words a user can act on.
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Collects the refusals of one ExternalSecret while its fields are taken.
#[derive(Default)]
pub(super) struct Reader {
    pub refusals: Vec<Refusal>,
}

pub(super) fn at(parent: &str, key: &str) -> String {
    format!("{parent}.{key}")
}

impl Reader {
    pub fn refuse(&mut self, field: String, message: impl Into<String>) {
        self.refusals.push(Refusal {
            field,
            message: message.into(),
        });
    }

    /// Removes `key`; an explicit `null` counts as absent, as the API server treats it.
    pub fn take(&mut self, m: &mut Map<String, Value>, key: &str) -> Option<Value> {
        m.remove(key).filter(|v| !v.is_null())
    }

    pub fn string(
        &mut self,
        m: &mut Map<String, Value>,
        parent: &str,
        key: &str,
    ) -> Option<String> {
        match self.take(m, key)? {
            Value::String(s) => Some(s),
            other => {
                self.refuse(at(parent, key), format!("expected a string, found {other}"));
                None
            }
        }
    }

    /// A string the bundle requires; its absence is refused.
    pub fn required(&mut self, m: &mut Map<String, Value>, parent: &str, key: &str) -> String {
        self.string(m, parent, key).unwrap_or_else(|| {
            self.refuse(at(parent, key), "required, but not set");
            String::new()
        })
    }

    pub fn boolean(&mut self, m: &mut Map<String, Value>, parent: &str, key: &str) -> Option<bool> {
        match self.take(m, key)? {
            Value::Bool(b) => Some(b),
            other => {
                self.refuse(
                    at(parent, key),
                    format!("expected true or false, found {other}"),
                );
                None
            }
        }
    }

    pub fn object(
        &mut self,
        m: &mut Map<String, Value>,
        parent: &str,
        key: &str,
    ) -> Option<Map<String, Value>> {
        match self.take(m, key)? {
            Value::Object(o) => Some(o),
            other => {
                self.refuse(
                    at(parent, key),
                    format!("expected an object, found {other}"),
                );
                None
            }
        }
    }

    pub fn list(&mut self, m: &mut Map<String, Value>, parent: &str, key: &str) -> Vec<Value> {
        match self.take(m, key) {
            None => Vec::new(),
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.refuse(at(parent, key), format!("expected a list, found {other}"));
                Vec::new()
            }
        }
    }

    /// The objects of a list, each with its path (`parent.key[i]`).
    pub fn objects(
        &mut self,
        m: &mut Map<String, Value>,
        parent: &str,
        key: &str,
    ) -> Vec<(String, Map<String, Value>)> {
        let mut out = Vec::new();
        for (i, item) in self.list(m, parent, key).into_iter().enumerate() {
            let path = format!("{parent}.{key}[{i}]");
            match item {
                Value::Object(o) => out.push((path, o)),
                other => self.refuse(path, format!("expected an object, found {other}")),
            }
        }
        out
    }

    pub fn string_map(
        &mut self,
        m: &mut Map<String, Value>,
        parent: &str,
        key: &str,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in self.object(m, parent, key).unwrap_or_default() {
            match v {
                Value::String(s) => {
                    out.insert(k, s);
                }
                other => self.refuse(
                    format!("{parent}.{key}.{k}"),
                    format!("expected a string, found {other}"),
                ),
            }
        }
        out
    }

    /// An enum-like field, parsed into the bundle's type; a value the bundle lacks is refused
    /// with the values it has (serde's own words list them).
    pub fn parsed<T: DeserializeOwned>(
        &mut self,
        m: &mut Map<String, Value>,
        parent: &str,
        key: &str,
    ) -> Option<T> {
        let v = self.take(m, key)?;
        match serde_json::from_value(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                self.refuse(at(parent, key), format!("bundles cannot express {v}: {e}"));
                None
            }
        }
    }

    /// Refuses every field left in `m`: the import read it nowhere.
    pub fn rest(&mut self, m: Map<String, Value>, parent: &str) {
        for key in m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, _)| k) {
            let path = at(parent, &key);
            let message = fields::why_refused(&path);
            self.refuse(path, message);
        }
    }
}
