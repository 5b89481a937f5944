//! Kubernetes RBAC, for the identities whose rights are not fixed (the
//! service-account tokens of `crate::service_account_token`): a request is
//! allowed when a RoleBinding in its namespace, or a ClusterRoleBinding,
//! binds the caller (its ServiceAccount, user name or a group) to a Role
//! or ClusterRole with a rule that covers it. As kube-apiserver's RBAC
//! authorizer: rules only allow; `*` matches any verb, group or
//! resource; `resource/subresource` names a subresource; `resourceNames`
//! limits a rule to named objects (so never to a list or a create); and
//! every authenticated caller may read discovery and the OpenAPI
//! (`system:discovery`, `system:basic-user`).

use serde_json::Value;

use super::access::Attributes;

/// Who asks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Subject<'a> {
    pub(crate) user: &'a str,
    pub(crate) groups: &'a [String],
    /// `(namespace, name)` of its ServiceAccount, if it is one.
    pub(crate) service_account: Option<(&'a str, &'a str)>,
}

/// Whether a binding (in `namespace`, for a RoleBinding) names `who`.
fn binds(binding: &Value, namespace: Option<&str>, who: &Subject<'_>) -> bool {
    let subjects = binding
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    subjects.into_iter().any(|subject| {
        let text = |field: &str| subject.get(field).and_then(Value::as_str);
        let name = text("name").unwrap_or_default();
        match text("kind") {
            Some("ServiceAccount") => who.service_account.is_some_and(|(ns, sa)| {
                // A RoleBinding's subject defaults to its own namespace.
                let subject_ns = text("namespace").or(namespace).unwrap_or_default();
                sa == name && ns == subject_ns
            }),
            Some("User") => who.user == name,
            Some("Group") => who.groups.iter().any(|g| g == name),
            _ => false,
        }
    })
}

fn contains(list: Option<&Value>, wanted: &str) -> bool {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|item| item == "*" || item == wanted)
}

/// Whether one PolicyRule covers the request.
pub(crate) fn rule_allows(rule: &Value, asked: &Attributes<'_>) -> bool {
    let Some(resource) = asked.resource else {
        return false;
    };
    if !contains(rule.get("verbs"), asked.verb) || !contains(rule.get("apiGroups"), asked.group) {
        return false;
    }
    let named = match asked.subresource {
        Some(sub) => {
            let full = format!("{resource}/{sub}");
            contains(rule.get("resources"), &full)
                || rule
                    .get("resources")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|r| r.as_str() == Some(&format!("*/{sub}")))
        }
        None => contains(rule.get("resources"), resource),
    };
    if !named {
        return false;
    }
    let names: Vec<&str> = rule
        .get("resourceNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    names.is_empty() || asked.name.is_some_and(|n| names.contains(&n))
}

/// The RBAC objects a decision reads.
pub(crate) trait Policies {
    /// The RoleBindings of `namespace`.
    fn role_bindings(&self, namespace: &str) -> Vec<std::sync::Arc<Value>>;
    fn cluster_role_bindings(&self) -> Vec<std::sync::Arc<Value>>;
    fn role(&self, namespace: &str, name: &str) -> Option<std::sync::Arc<Value>>;
    fn cluster_role(&self, name: &str) -> Option<std::sync::Arc<Value>>;
}

/// Whether RBAC allows `who` what `asked` says.
pub(crate) fn allows(policies: &impl Policies, who: &Subject<'_>, asked: &Attributes<'_>) -> bool {
    if asked.resource.is_none() {
        // Discovery, OpenAPI and /version: `system:discovery`.
        return matches!(asked.verb, "get" | "list" | "watch" | "*");
    }
    let rules_of = |role_ref: &Value, namespace: Option<&str>| {
        let name = role_ref
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let role = match (role_ref.get("kind").and_then(Value::as_str), namespace) {
            (Some("Role"), Some(ns)) => policies.role(ns, name),
            (Some("ClusterRole"), _) => policies.cluster_role(name),
            _ => None,
        };
        role.map(|r| r.get("rules").cloned().unwrap_or(Value::Null))
    };
    let covered = |binding: &Value, namespace: Option<&str>| {
        binds(binding, namespace, who)
            && binding.get("roleRef").is_some_and(|role_ref| {
                rules_of(role_ref, namespace).is_some_and(|rules| {
                    rules
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|rule| rule_allows(rule, asked))
                })
            })
    };
    let cluster_wide = policies
        .cluster_role_bindings()
        .iter()
        .any(|binding| covered(binding, None));
    cluster_wide
        || asked.namespace.is_some_and(|ns| {
            policies
                .role_bindings(ns)
                .iter()
                .any(|binding| covered(binding, Some(ns)))
        })
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::Arc};

    use serde_json::json;

    use super::*;

    #[derive(Default)]
    struct Held {
        role_bindings: BTreeMap<String, Vec<Arc<Value>>>,
        cluster_role_bindings: Vec<Arc<Value>>,
        roles: BTreeMap<(String, String), Arc<Value>>,
        cluster_roles: BTreeMap<String, Arc<Value>>,
    }

    impl Policies for Held {
        fn role_bindings(&self, namespace: &str) -> Vec<Arc<Value>> {
            self.role_bindings
                .get(namespace)
                .cloned()
                .unwrap_or_default()
        }
        fn cluster_role_bindings(&self) -> Vec<Arc<Value>> {
            self.cluster_role_bindings.clone()
        }
        fn role(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
            self.roles.get(&(namespace.into(), name.into())).cloned()
        }
        fn cluster_role(&self, name: &str) -> Option<Arc<Value>> {
            self.cluster_roles.get(name).cloned()
        }
    }

    fn asked<'a>(
        verb: &'a str,
        resource: &'a str,
        namespace: &'a str,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            group: if resource == "services" {
                "gantry.dev"
            } else {
                ""
            },
            resource: Some(resource),
            subresource: None,
            namespace: Some(namespace),
            name,
        }
    }

    #[test]
    fn bindings_grant_their_roles_rules_where_they_apply() {
        let mut held = Held::default();
        held.roles.insert(
            ("ci".into(), "deployer".into()),
            Arc::new(json!({"rules": [
                {"apiGroups": ["gantry.dev"], "resources": ["services"], "verbs": ["get", "list", "patch"]},
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["settings"]},
            ]})),
        );
        held.role_bindings.insert(
            "ci".into(),
            vec![Arc::new(json!({
                "roleRef": {"kind": "Role", "name": "deployer"},
                "subjects": [{"kind": "ServiceAccount", "name": "deployer"}],
            }))],
        );
        held.cluster_roles.insert(
            "lease-reader".into(),
            Arc::new(
                json!({"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["watch"]}]}),
            ),
        );
        held.cluster_role_bindings.push(Arc::new(json!({
            "roleRef": {"kind": "ClusterRole", "name": "lease-reader"},
            "subjects": [{"kind": "Group", "name": "system:serviceaccounts:ci"}],
        })));
        let groups = vec!["system:serviceaccounts:ci".to_owned()];
        let deployer = Subject {
            user: "system:serviceaccount:ci:deployer",
            groups: &groups,
            service_account: Some(("ci", "deployer")),
        };
        let yes = |a: Attributes<'_>| allows(&held, &deployer, &a);
        assert!(yes(asked("patch", "services", "ci", Some("web"))));
        assert!(yes(asked("list", "services", "ci", None)));
        assert!(!yes(asked("delete", "services", "ci", Some("web"))), "verb");
        assert!(
            !yes(asked("get", "services", "prod", Some("web"))),
            "namespace"
        );
        assert!(!yes(asked("get", "secrets", "ci", Some("x"))), "resource");
        assert!(yes(asked("get", "configmaps", "ci", Some("settings"))));
        assert!(
            !yes(asked("get", "configmaps", "ci", Some("other"))),
            "name"
        );
        assert!(
            !yes(asked("list", "configmaps", "ci", None)),
            "names never list"
        );
        assert!(
            yes(asked("watch", "secrets", "prod", None)),
            "by its group, anywhere"
        );
        let other = Subject {
            user: "system:serviceaccount:ci:other",
            groups: &[],
            service_account: Some(("ci", "other")),
        };
        assert!(!allows(
            &held,
            &other,
            &asked("get", "services", "ci", Some("web"))
        ));
        let discovery = Attributes {
            verb: "get",
            ..Attributes::default()
        };
        assert!(allows(&held, &other, &discovery));
    }

    #[test]
    fn subresources_are_named_with_their_resource() {
        let rule = json!({"apiGroups": ["gantry.dev"], "resources": ["services/scale"], "verbs": ["update"]});
        let mut scale = asked("update", "services", "ci", Some("web"));
        assert!(!rule_allows(&rule, &scale));
        scale.subresource = Some("scale");
        assert!(rule_allows(&rule, &scale));
        let any = json!({"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["*"]});
        assert!(rule_allows(&any, &scale));
    }
}
