//! Proptest strategies for bundles the CRD schema accepts: names, keys and durations drawn from
//! the patterns the schema enforces, every optional field sometimes set. Shared by the pure
//! property tests and the schema round trip against the real ESO CRDs.

use proptest::collection::{btree_map, btree_set, vec};
use proptest::option;
use proptest::prelude::*;
use secretbundle_api::{
    AdoptionPolicy, BundleSecret, ConversionStrategy, CreationPolicy, DataFrom, DecodingStrategy,
    DeletionPolicy, Find, FindName, GeneratorRef, MetadataPolicy, RefreshPolicy, RemoteRef,
    Rewrite, RewriteRegexp, RewriteTransform, SecretBundle, SecretBundleSpec, SecretData,
    SecretDeletionPolicy, SecretStoreRef, SecretTemplate, SourceRef, StoreKind, TemplateAs,
    TemplateFrom, TemplateItem, TemplateMergePolicy, TemplateSource, TemplateTarget,
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

fn conversion() -> impl Strategy<Value = ConversionStrategy> {
    prop_oneof![
        Just(ConversionStrategy::Default),
        Just(ConversionStrategy::Unicode)
    ]
}

fn decoding() -> impl Strategy<Value = DecodingStrategy> {
    prop_oneof![
        Just(DecodingStrategy::Auto),
        Just(DecodingStrategy::Base64),
        Just(DecodingStrategy::Base64Url),
        Just(DecodingStrategy::None)
    ]
}

fn remote_ref() -> impl Strategy<Value = RemoteRef> {
    (
        "[a-z][a-z0-9/_-]{0,30}",
        option::of("[a-zA-Z0-9._-]{1,16}"),
        option::of("[0-9]{1,3}"),
        option::of(conversion()),
        option::of(decoding()),
        option::of(prop_oneof![
            Just(MetadataPolicy::None),
            Just(MetadataPolicy::Fetch)
        ]),
    )
        .prop_map(
            |(key, property, version, conversion_strategy, decoding_strategy, metadata_policy)| {
                RemoteRef {
                    key,
                    property,
                    version,
                    conversion_strategy,
                    decoding_strategy,
                    metadata_policy,
                }
            },
        )
}

fn find() -> impl Strategy<Value = Find> {
    (
        option::of("[a-z][a-z0-9/_-]{0,20}"),
        option::of("\\^?[a-z]{1,8}".prop_map(|regexp| FindName { regexp })),
        btree_map("[a-z]{1,8}", "[a-z0-9]{0,8}", 0..2),
        option::of(conversion()),
        option::of(decoding()),
    )
        .prop_filter("find needs a name or tags", |(_, name, tags, ..)| {
            name.is_some() || !tags.is_empty()
        })
        .prop_map(
            |(path, name, tags, conversion_strategy, decoding_strategy)| Find {
                path,
                name,
                tags,
                conversion_strategy,
                decoding_strategy,
            },
        )
}

fn rewrite() -> impl Strategy<Value = Rewrite> {
    prop_oneof![
        ("\\^[a-z]{1,8}", "[a-z_]{0,8}").prop_map(|(source, target)| Rewrite {
            regexp: Some(RewriteRegexp { source, target }),
            transform: None,
        }),
        Just(Rewrite {
            regexp: None,
            transform: Some(RewriteTransform {
                template: "{{ .value | upper }}".into()
            }),
        }),
    ]
}

/// Mostly kinds every vendored ESO knows; SSHKey only v2.9.0 (the gate refuses it elsewhere).
fn generator() -> impl Strategy<Value = SourceRef> {
    (
        prop::sample::select(vec![
            "Password",
            "UUID",
            "ClusterGenerator",
            "Fake",
            "SSHKey",
        ]),
        dns_label(),
    )
        .prop_map(|(kind, name)| SourceRef {
            generator_ref: GeneratorRef {
                kind: kind.into(),
                name,
            },
        })
}

fn data_from() -> impl Strategy<Value = DataFrom> {
    let source = prop_oneof![
        remote_ref().prop_map(|e| (Some(e), None, None)),
        find().prop_map(|f| (None, Some(f), None)),
        generator().prop_map(|g| (None, None, Some(g))),
    ];
    (source, vec(rewrite(), 0..2)).prop_map(|((extract, find, source_ref), rewrite)| DataFrom {
        extract,
        find,
        source_ref,
        rewrite,
    })
}

fn template() -> impl Strategy<Value = SecretTemplate> {
    let source = (
        dns_label(),
        secret_key(),
        option::of(prop_oneof![
            Just(TemplateAs::Values),
            Just(TemplateAs::KeysAndValues)
        ]),
    )
        .prop_map(|(name, key, template_as)| TemplateSource {
            name,
            items: vec![TemplateItem { key, template_as }],
        });
    let from = (
        source,
        any::<bool>(),
        option::of(prop_oneof![
            Just(TemplateTarget::Data),
            Just(TemplateTarget::Annotations),
            Just(TemplateTarget::Labels)
        ]),
    )
        .prop_map(|(src, from_secret, target)| TemplateFrom {
            config_map: (!from_secret).then(|| src.clone()),
            secret: from_secret.then_some(src),
            target,
        });
    (
        btree_map(secret_key(), "[a-z ]{0,8}\\{\\{ \\.[a-z]{1,6} \\}\\}", 0..3),
        option::of(prop_oneof![
            Just(TemplateMergePolicy::Replace),
            Just(TemplateMergePolicy::Merge)
        ]),
        vec(from, 0..2),
        option::of(Just("v2".to_string())),
    )
        .prop_map(
            |(data, merge_policy, template_from, engine_version)| SecretTemplate {
                engine_version,
                data,
                merge_policy,
                template_from,
            },
        )
}

/// creationPolicy and ESO's deletionPolicy, in the combinations the schema admits.
fn policies() -> impl Strategy<Value = (Option<CreationPolicy>, Option<SecretDeletionPolicy>)> {
    (
        option::of(prop_oneof![
            Just(CreationPolicy::Owner),
            Just(CreationPolicy::Orphan),
            Just(CreationPolicy::Merge),
            Just(CreationPolicy::None)
        ]),
        option::of(prop_oneof![
            Just(SecretDeletionPolicy::Delete),
            Just(SecretDeletionPolicy::Merge),
            Just(SecretDeletionPolicy::Retain)
        ]),
    )
        .prop_filter("policies ESO admits", |(c, d)| match d {
            Some(SecretDeletionPolicy::Delete) => matches!(c, None | Some(CreationPolicy::Owner)),
            Some(SecretDeletionPolicy::Merge) => c != &Some(CreationPolicy::None),
            _ => true,
        })
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
    let data_from = vec(data_from(), 0..2);
    let target = (
        option::of(prop_oneof![
            Just(RefreshPolicy::CreatedOnce),
            Just(RefreshPolicy::Periodic),
            Just(RefreshPolicy::OnChange)
        ]),
        policies(),
        option::of(any::<bool>()),
        option::of(template()),
    );
    (
        data,
        data_from,
        target,
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
    )
        .prop_filter("data or dataFrom", |(d, f, ..)| {
            !d.is_empty() || !f.is_empty()
        })
        .prop_map(
            move |(
                data,
                data_from,
                (refresh_policy, (creation_policy, deletion_policy), immutable, template),
                store,
                refresh,
                secret_type,
                labels,
                adoption,
            )| BundleSecret {
                name: name.clone(),
                // Unique by construction: every entry writes the Secret named after itself.
                target_name: None,
                secret_type,
                labels: labels.clone(),
                annotations: labels,
                secret_store_ref: store.map(Box::new),
                refresh_interval: refresh,
                adoption_policy: adoption,
                refresh_policy,
                creation_policy,
                deletion_policy,
                immutable,
                template: template.map(Box::new),
                data,
                data_from,
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
