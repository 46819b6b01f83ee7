//! The bundle cache keeps a bundle's per-secret status as a digest: at 20 secrets a bundle, the
//! list was a tenth of the operator's memory, and only the status writer reads it, to tell
//! whether a write would change anything. Comparing digests answers that as well.

use secretbundle_api::{SecretBundleStatus, SecretStatus};

/// Names the digest entry; no ExternalSecret can be named so (not a DNS subdomain).
const MARK: &str = "#sha256:";

/// `status` as the cache keeps it: `secrets` replaced by one entry carrying their SHA-256.
pub fn compact(status: &mut SecretBundleStatus) {
    if is_digest(&status.secrets) {
        return;
    }
    let bytes = serde_json::to_vec(&status.secrets).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let mut name = String::with_capacity(MARK.len() + 64);
    name.push_str(MARK);
    for b in digest.as_ref() {
        name.push_str(&format!("{b:02x}"));
    }
    status.secrets = vec![SecretStatus {
        name,
        ready: false,
        reason: String::new(),
        message: String::new(),
    }];
}

fn is_digest(secrets: &[SecretStatus]) -> bool {
    matches!(secrets, [one] if one.name.starts_with(MARK))
}

/// Whether two statuses say the same, either of them compacted or not.
pub fn same(a: Option<&SecretBundleStatus>, b: Option<&SecretBundleStatus>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            let (mut a, mut b) = (a.clone(), b.clone());
            compact(&mut a);
            compact(&mut b);
            a == b
        }
        (a, b) => a.is_none() && b.is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(secrets: &[(&str, bool)]) -> SecretBundleStatus {
        SecretBundleStatus {
            secrets: secrets
                .iter()
                .map(|(n, r)| SecretStatus {
                    name: (*n).into(),
                    ready: *r,
                    reason: "SecretSynced".into(),
                    message: String::new(),
                })
                .collect(),
            ..SecretBundleStatus::default()
        }
    }

    #[test]
    fn a_compacted_status_compares_as_the_full_one() {
        let full = status(&[("a", true), ("b", false)]);
        let mut cached = full.clone();
        compact(&mut cached);
        assert_eq!(cached.secrets.len(), 1);
        assert!(same(Some(&cached), Some(&full)));
        assert!(same(Some(&full), Some(&cached)));
        let again = cached.clone();
        compact(&mut cached);
        assert_eq!(cached, again, "compacting twice changes nothing");
        assert!(!same(
            Some(&cached),
            Some(&status(&[("a", true), ("b", true)]))
        ));
        assert!(!same(Some(&cached), Some(&status(&[]))));
        assert!(!same(Some(&cached), None));
        assert!(same(None, None));
    }
}
