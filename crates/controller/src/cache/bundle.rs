//! A bundle as the bundle cache keeps it. serde grows every list it decodes by doubling from
//! four, so a decoded bundle of 20 secrets with one key each holds room for 32 secrets and 80
//! keys: about 10 KB a bundle, 0.5 KiB per child, that nothing will ever fill. The cache's
//! copy only changes by being replaced, so its lists are cut to their length.

use secretbundle_api::SecretBundleSpec;

/// Cuts every list of `spec` (and of its entries) to its length; the content is unchanged.
pub fn shrink(spec: &mut SecretBundleSpec) {
    spec.depends_on.shrink_to_fit();
    spec.secrets.shrink_to_fit();
    for secret in &mut spec.secrets {
        secret.data.shrink_to_fit();
        secret.data_from.shrink_to_fit();
        for from in &mut secret.data_from {
            from.rewrite.shrink_to_fit();
        }
        if let Some(template) = secret.template.as_mut() {
            template.template_from.shrink_to_fit();
            for from in &mut template.template_from {
                for source in [from.config_map.as_mut(), from.secret.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    source.items.shrink_to_fit();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secretbundle_api::SecretBundle;
    use serde_json::json;

    fn decoded() -> SecretBundle {
        let secrets: Vec<_> = (0..20)
            .map(|j| {
                json!({"name": format!("s{j}"), "data": [{"secretKey": "k", "remoteRef": {"key": "a"}}],
                       "dataFrom": [{"extract": {"key": "b"}, "rewrite": [{"regexp": {"source": "x", "target": "y"}}]}],
                       "template": {"templateFrom": [{"configMap": {"name": "c", "items": [{"key": "i"}]}}]}})
            })
            .collect();
        let text = json!({
            "apiVersion": "secrets.ameide.io/v1alpha1", "kind": "SecretBundle",
            "metadata": {"name": "b"},
            "spec": {"targetNamespace": "ns", "secretStoreRef": {"name": "s"},
                     "dependsOn": ["a"], "secrets": secrets},
        })
        .to_string();
        serde_json::from_str(&text).expect("a valid bundle")
    }

    #[test]
    fn decoded_lists_have_room_to_spare_and_shrinking_cuts_it_keeping_the_content() {
        let mut bundle = decoded();
        assert!(bundle.spec.secrets.capacity() > bundle.spec.secrets.len());
        assert!(bundle.spec.secrets[0].data.capacity() > 1);
        let before = bundle.clone();
        shrink(&mut bundle.spec);
        assert_eq!(bundle, before);
        let spec = &bundle.spec;
        assert_eq!(spec.secrets.capacity(), 20);
        assert_eq!(spec.depends_on.capacity(), 1);
        for s in &spec.secrets {
            assert_eq!(s.data.capacity(), 1);
            assert_eq!(s.data_from.capacity(), 1);
            assert_eq!(s.data_from[0].rewrite.capacity(), 1);
            let template = s.template.as_ref().expect("a template");
            assert_eq!(template.template_from.capacity(), 1);
            let source = template.template_from[0].config_map.as_ref();
            assert_eq!(source.map(|c| c.items.capacity()), Some(1));
        }
    }
}
