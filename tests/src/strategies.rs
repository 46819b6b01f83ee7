//! Proptest strategies for bundles the CRD schema accepts: names, keys and durations drawn from
//! the patterns the schema enforces, every optional field sometimes set. Shared by the pure
//! property tests and the schema round trip against the real ESO CRDs.

use proptest::collection::{btree_map, btree_set, vec};
use proptest::option;
use proptest::prelude::*;
use secretbundle_api::{
    AdoptionPolicy, BundleSecret, ConversionStrategy, CreationPolicy, DataFrom, DecodingStrategy,
    DeletionPolicy, RemoteRef, SecretBundle, SecretBundleSpec, SecretData, SecretDeletionPolicy,
    SecretStoreRef, StoreKind,
};

/// A DNS-1123 label (namespaces, ExternalSecret names).
pub fn dns_label() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,14}[a-z0-9]"
}

/// A key of the target Secret.
fn secret_key() -> impl Strategy<Value = String> {
    "[-._a-zA-Z0-9]{1,24}"
}

/// A Go duration as the schema admits it, zeros included.
pub fn duration() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("0s".to_string()),
        Just("1h".to_string()),
        Just("1h30m".to_string()),
        Just("0.5s".to_string()),
        (1u32..1000, prop::sample::select(vec!["ms", "s", "m", "h"]))
            .prop_map(|(n, u)| format!("{n}{u}")),
    ]
}

fn store_ref() -> impl Strategy<Value = SecretStoreRef> {
    (
        dns_label(),
        option::of(prop_oneof![
            Just(StoreKind::ClusterSecretStore),
            Just(StoreKind::SecretStore)
        ]),
    )
        .prop_map(|(name, kind)| SecretStoreRef { name, kind })
}

fn remote_ref() -> impl Strategy<Value = RemoteRef> {
    (
        "[a-z][a-z0-9/_-]{0,30}",
        option::of("[a-zA-Z0-9._-]{1,16}"),
        option::of("[0-9]{1,3}"),
        option::of(prop_oneof![
            Just(ConversionStrategy::Default),
            Just(ConversionStrategy::Unicode)
        ]),
        option::of(prop_oneof![
            Just(DecodingStrategy::None),
            Just(DecodingStrategy::Base64)
        ]),
    )
        .prop_map(
            |(key, property, version, conversion_strategy, decoding_strategy)| RemoteRef {
                key,
                property,
                version,
                conversion_strategy,
                decoding_strategy,
                metadata_policy: None,
            },
        )
}

fn secret(name: String) -> impl Strategy<Value = BundleSecret> {
    let data = btree_map(secret_key(), remote_ref(), 0..4).prop_map(|m| {
        m.into_iter()
            .map(|(secret_key, remote_ref)| SecretData {
                secret_key,
                remote_ref,
            })
            .collect::<Vec<_>>()
    });
    let data_from = vec(
        remote_ref().prop_map(|extract| DataFrom {
            extract: Some(extract),
            find: None,
            source_ref: None,
            rewrite: vec![],
        }),
        0..2,
    );
    // Policies every vendored ESO release serves, in combinations its CRD rules admit.
    let policies = (
        option::of(prop_oneof![
            Just(CreationPolicy::Owner),
            Just(CreationPolicy::Orphan)
        ]),
        option::of(Just(SecretDeletionPolicy::Retain)),
        option::of(any::<bool>()),
    );
    (
        data,
        data_from,
        option::of(store_ref()),
        option::of(duration()),
        option::of(prop_oneof![
            Just("Opaque".to_string()),
            Just("kubernetes.io/dockerconfigjson".to_string())
        ]),
        btree_map("[a-z]{1,8}", "[a-z0-9]{0,8}", 0..2),
        option::of(prop_oneof![
            Just(AdoptionPolicy::Never),
            Just(AdoptionPolicy::IfExists)
        ]),
        policies,
    )
        .prop_filter("data or dataFrom", |(d, f, ..)| {
            !d.is_empty() || !f.is_empty()
        })
        .prop_map(
            move |(data, data_from, store, refresh, secret_type, labels, adoption, policies)| {
                BundleSecret {
                    name: name.clone(),
                    // Unique by construction: every entry writes the Secret named after itself.
                    target_name: None,
                    secret_type,
                    labels: labels.clone(),
                    annotations: labels,
                    secret_store_ref: store,
                    refresh_interval: refresh,
                    adoption_policy: adoption,
                    creation_policy: policies.0,
                    deletion_policy: policies.1,
                    immutable: policies.2,
                    refresh_policy: None,
                    template: None,
                    data,
                    data_from,
                }
            },
        )
}

/// A bundle the schema accepts, with a UID as a stored one has.
pub fn bundle() -> impl Strategy<Value = SecretBundle> {
    let secrets = btree_set(dns_label(), 1..5)
        .prop_flat_map(|names| names.into_iter().map(secret).collect::<Vec<_>>());
    (
        dns_label(),
        dns_label(),
        store_ref(),
        duration(),
        btree_set(dns_label(), 0..3),
        any::<bool>(),
        prop_oneof![Just(DeletionPolicy::Delete), Just(DeletionPolicy::Orphan)],
        secrets,
    )
        .prop_map(
            |(name, ns, store, refresh, deps, suspend, deletion_policy, secrets)| {
                let depends_on = deps.into_iter().filter(|d| *d != name).collect();
                let mut b = SecretBundle::new(
                    &name,
                    SecretBundleSpec {
                        target_namespace: ns,
                        secret_store_ref: store,
                        refresh_interval: refresh,
                        depends_on,
                        suspend,
                        deletion_policy,
                        adoption_policy: AdoptionPolicy::Never,
                        secrets,
                    },
                );
                b.metadata.uid = Some(format!("uid-{name}"));
                b.metadata.generation = Some(1);
                b
            },
        )
}
