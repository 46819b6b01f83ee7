//! The bundle cache keeps a bundle's per-secret status as a digest: at 20 secrets a bundle, the
//! list was a tenth of the operator's memory, and only the status writer reads it, to tell
//! whether a write would change anything. Comparing digests answers that as well.

use std::borrow::Cow;

use secretbundle_api::{SecretBundleStatus, SecretStatus};

use crate::applied::hash::sha256_hex;

/// Names the digest entry; no ExternalSecret can be named so (not a DNS subdomain).
const MARK: &str = "#sha256:";

/// `status` as the cache keeps it: `secrets` replaced by one entry carrying their SHA-256.
pub fn compact(status: &mut SecretBundleStatus) {
    if is_digest(&status.secrets) {
        return;
    }
    status.secrets = vec![SecretStatus {
        name: digest(&status.secrets).into_owned(),
        ready: false,
        reason: String::new(),
        message: String::new(),
    }];
}

fn is_digest(secrets: &[SecretStatus]) -> bool {
    matches!(secrets, [one] if one.name.starts_with(MARK))
}

/// The digest entry's name: read from a compacted list, computed from a full one.
fn digest(secrets: &[SecretStatus]) -> Cow<'_, str> {
    match secrets {
        [one] if is_digest(secrets) => Cow::Borrowed(&one.name),
        _ => Cow::Owned(sha256_hex(
            MARK,
            &serde_json::to_vec(secrets).unwrap_or_default(),
        )),
    }
}

/// Whether two statuses say the same, either of them compacted or not. Nothing is copied: the
/// writer asks this on every reconcile.
pub fn same(a: Option<&SecretBundleStatus>, b: Option<&SecretBundleStatus>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return a.is_none() && b.is_none();
    };
    // Exhaustive, so a field added to the status is compared here too.
    let SecretBundleStatus {
        observed_generation,
        conditions,
        eso_api_version,
        ready_secrets,
        total_secrets,
        secrets_ready,
        last_handled_refresh,
        secrets,
    } = a;
    let same_secrets = if is_digest(secrets) || is_digest(&b.secrets) {
        digest(secrets) == digest(&b.secrets)
    } else {
        *secrets == b.secrets
    };
    *observed_generation == b.observed_generation
        && *conditions == b.conditions
        && *eso_api_version == b.eso_api_version
        && *ready_secrets == b.ready_secrets
        && *total_secrets == b.total_secrets
        && *secrets_ready == b.secrets_ready
        && *last_handled_refresh == b.last_handled_refresh
        && same_secrets
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
