//! A map kept equal to what one watch reports, relists included, that says which keys changed
//! so only the bundles they affect are woken. The operator's own writes may be put in directly
//! (write-through); a watch event never replaces a newer value with an older one.

use std::collections::HashMap;
use std::hash::Hash;

use kube::runtime::watcher;

/// A cached value: how to tell an update from a replay, and which of two values is newer.
pub trait Cached {
    /// The object's resourceVersion as a number, when it has one that parses.
    fn version(&self) -> Option<u64> {
        None
    }
    /// Whether two values say the same thing (no bundle needs to hear about the change).
    fn same(&self, other: &Self) -> bool;
    /// Takes over what was learnt about the value this one replaces.
    fn carry_from(&mut self, _old: &Self) {}
}

/// One key's change: what it was and what it is now.
pub type Changed<K, V> = (K, Option<V>, Option<V>);

#[derive(Debug)]
pub struct Mirror<K, V> {
    items: HashMap<K, V>,
    /// Objects of a relist in progress; they replace `items` when it completes.
    relist: Option<HashMap<K, V>>,
    synced: bool,
}

impl<K, V> Default for Mirror<K, V> {
    fn default() -> Self {
        Self {
            items: HashMap::new(),
            relist: None,
            synced: false,
        }
    }
}

/// `new` may replace `old`: it is not older. resourceVersions are compared as numbers, which
/// the apiserver's are; anything else counts as newer.
fn not_older<V: Cached>(new: &V, old: &V) -> bool {
    match (new.version(), old.version()) {
        (Some(n), Some(o)) => n >= o,
        _ => true,
    }
}

impl<K: Hash + Eq + Clone, V: Cached + Clone> Mirror<K, V> {
    /// Whether a complete list has been seen since the watch started (or was last cleared).
    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.items.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.items.iter()
    }

    /// Applies one watch event, the object already reduced to `(key, value)`.
    pub fn apply(&mut self, event: watcher::Event<(K, V)>) -> Vec<Changed<K, V>> {
        match event {
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                vec![]
            }
            watcher::Event::InitApply((k, v)) => {
                self.relist.get_or_insert_default().insert(k, v);
                vec![]
            }
            watcher::Event::InitDone => self.finish_relist(),
            watcher::Event::Apply((k, v)) => self.put(k, v).into_iter().collect(),
            watcher::Event::Delete((k, v)) => self.remove(&k, v.version()).into_iter().collect(),
        }
    }

    fn finish_relist(&mut self) -> Vec<Changed<K, V>> {
        let mut listed = self.relist.take().unwrap_or_default();
        self.synced = true;
        let mut changed = Vec::new();
        for (k, old) in std::mem::take(&mut self.items) {
            match listed.remove(&k) {
                // Written through after the list was taken: keep ours.
                Some(new) if !not_older(&new, &old) => drop(self.items.insert(k, old)),
                Some(mut new) => {
                    new.carry_from(&old);
                    if !old.same(&new) {
                        changed.push((k.clone(), Some(old), Some(new.clone())));
                    }
                    self.items.insert(k, new);
                }
                None => changed.push((k, Some(old), None)),
            }
        }
        for (k, new) in listed {
            changed.push((k.clone(), None, Some(new.clone())));
            self.items.insert(k, new);
        }
        changed
    }

    /// Stores `value` unless a newer one is there; returns the change, if it is one.
    pub fn put(&mut self, key: K, mut value: V) -> Option<Changed<K, V>> {
        if let Some(old) = self.items.get(&key) {
            value.carry_from(old);
        }
        match self.items.get(&key) {
            Some(old) if !not_older(&value, old) => None,
            Some(old) if old.same(&value) => {
                self.items.insert(key, value);
                None
            }
            _ => {
                let old = self.items.insert(key.clone(), value.clone());
                Some((key, old, Some(value)))
            }
        }
    }

    /// Removes `key`, unless what is cached is newer than the deletion at `version`.
    pub fn remove(&mut self, key: &K, version: Option<u64>) -> Option<Changed<K, V>> {
        let keep = self
            .items
            .get(key)
            .and_then(Cached::version)
            .zip(version)
            .is_some_and(|(cached, deleted)| cached > deleted);
        if keep {
            return None;
        }
        let old = self.items.remove(key)?;
        Some((key.clone(), Some(old), None))
    }

    /// Forgets everything (the watch stopped); returns what was there.
    pub fn clear(&mut self) -> Vec<Changed<K, V>> {
        self.synced = false;
        self.relist = None;
        self.items
            .drain()
            .map(|(k, v)| (k, Some(v), None))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct V(u64, &'static str);

    impl Cached for V {
        fn version(&self) -> Option<u64> {
            Some(self.0)
        }
        fn same(&self, other: &Self) -> bool {
            self.1 == other.1
        }
    }

    fn keys(c: &[Changed<&'static str, V>]) -> Vec<&'static str> {
        let mut k: Vec<_> = c.iter().map(|c| c.0).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn relist_reports_exactly_what_changed() {
        let mut m = Mirror::default();
        assert!(!m.synced());
        m.apply(watcher::Event::Init);
        m.apply(watcher::Event::InitApply(("a", V(1, "x"))));
        m.apply(watcher::Event::InitApply(("b", V(1, "x"))));
        assert!(m.get(&"a").is_none(), "a relist lands only when complete");
        assert_eq!(keys(&m.apply(watcher::Event::InitDone)), ["a", "b"]);
        assert!(m.synced());

        m.apply(watcher::Event::Init);
        m.apply(watcher::Event::InitApply(("a", V(2, "x"))));
        m.apply(watcher::Event::InitApply(("c", V(2, "x"))));
        assert_eq!(
            keys(&m.apply(watcher::Event::InitDone)),
            ["b", "c"],
            "a is the same, b went, c came"
        );
    }

    #[test]
    fn never_goes_back_to_an_older_version() {
        let mut m = Mirror::default();
        assert!(m.put("a", V(5, "written")).is_some());
        assert!(
            m.apply(watcher::Event::Apply(("a", V(4, "stale"))))
                .is_empty()
        );
        assert_eq!(m.get(&"a"), Some(&V(5, "written")));
        assert!(
            m.apply(watcher::Event::Delete(("a", V(4, "stale"))))
                .is_empty(),
            "a deletion older than the cached object is not this object's"
        );
        assert!(m.put("a", V(6, "new")).is_some());
        assert!(m.put("a", V(7, "new")).is_none(), "same content");
        assert_eq!(
            keys(&m.apply(watcher::Event::Delete(("a", V(8, ""))))),
            ["a"]
        );
        assert!(m.get(&"a").is_none());
    }
}
