//! Impersonation, as kube-apiserver's filter does it (`kubectl --as`,
//! `--as-group`, `--as-uid`): a caller allowed the `impersonate` verb on
//! `users` (or `serviceaccounts`, for a ServiceAccount's user name),
//! `groups`, `uids` and `userextras/<key>` (group
//! `authentication.k8s.io`) acts as that user, with exactly the rights
//! the user would have. Also the user a SubjectAccessReview names.
//!
//! The users of the tokens made at first start (`gantry:admin`,
//! `gantry:read-only`, `gantry:controller`) are those identities; any
//! other user is authorized by RBAC alone, except members of
//! `system:masters`, who may do anything (as kube-apiserver lets them).

use std::sync::Arc;

use axum::http::HeaderMap;

use super::{
    access::{Attributes, Bindings, Decision, Identity},
    status::ApiError,
};
use crate::service_account_token;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA: &str = "impersonate-extra-";

/// A user known by name, groups and perhaps ServiceAccount only: one
/// impersonated, or named by a SubjectAccessReview.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) groups: Vec<String>,
    /// `(namespace, name)` when the user name is a ServiceAccount's.
    pub(crate) service_account: Option<(String, String)>,
}

/// `system:serviceaccount:NS:NAME` as `(NS, NAME)`.
fn service_account_of(user: &str) -> Option<(String, String)> {
    let (namespace, name) = user
        .strip_prefix(service_account_token::USERNAME_PREFIX)?
        .split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':'))
        .then(|| (namespace.to_owned(), name.to_owned()))
}

/// The identity of user `name` in `groups`. A ServiceAccount given no
/// groups gets its own; every user but `system:anonymous` is in
/// `system:authenticated`.
pub(crate) fn user(name: &str, mut groups: Vec<String>) -> Identity {
    if let Some(fixed) = [Identity::Admin, Identity::ReadOnly, Identity::Controller]
        .into_iter()
        .find(|fixed| fixed.username() == name)
    {
        return fixed;
    }
    let service_account = service_account_of(name);
    if let Some((namespace, _)) = &service_account
        && groups.is_empty()
    {
        groups = service_account_token::groups(namespace);
    }
    if name != "system:anonymous" && !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".to_owned());
    }
    Identity::User(Arc::new(User {
        name: name.to_owned(),
        groups,
        service_account,
    }))
}

/// What must be allowed the verb `impersonate`: group, resource,
/// subresource, namespace, name.
type Asked<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, &'a str);

/// The identity a request acts as: `caller`, or the user it impersonates
/// if the caller may impersonate every part of it.
///
/// # Errors
/// 400 for groups, a uid or extras without a user; 403 naming what the
/// caller may not impersonate.
pub(crate) fn acting_as(
    caller: Identity,
    headers: &HeaderMap,
    bindings: &impl Bindings,
) -> Result<Identity, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    };
    let extras: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(name, value)| {
            let key = name.as_str().strip_prefix(EXTRA)?;
            Some((key.to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let (users, groups, uids) = (values(USER), values(GROUP), values(UID));
    let Some(name) = users.first() else {
        if groups.is_empty() && uids.is_empty() && extras.is_empty() {
            return Ok(caller);
        }
        return Err(ApiError::BadRequest(
            "impersonating groups, a uid or extras needs Impersonate-User too".into(),
        ));
    };
    let service_account = service_account_of(name);
    let mut asked: Vec<Asked<'_>> = vec![match &service_account {
        Some((namespace, account)) => ("", "serviceaccounts", None, Some(namespace), account),
        None => ("", "users", None, None, name),
    }];
    asked.extend(
        groups
            .iter()
            .map(|g| ("", "groups", None, None, g.as_str())),
    );
    asked.extend(
        uids.iter()
            .map(|u| ("authentication.k8s.io", "uids", None, None, u.as_str())),
    );
    asked.extend(extras.iter().map(|(key, value)| {
        let key = Some(key.as_str());
        (
            "authentication.k8s.io",
            "userextras",
            key,
            None,
            value.as_str(),
        )
    }));
    for (group, resource, subresource, namespace, name) in asked {
        let attributes = Attributes {
            verb: "impersonate",
            group,
            resource: Some(resource),
            subresource,
            namespace,
            name: Some(name),
        };
        if caller.may(&attributes, bindings) != Decision::Allow {
            let sub = subresource.map(|s| format!("/{s}")).unwrap_or_default();
            let scope = namespace
                .map(|ns| format!(" in namespace \"{ns}\""))
                .unwrap_or_default();
            return Err(ApiError::Forbidden(format!(
                "{resource}{sub} \"{name}\"{scope} is forbidden: User \"{}\" cannot \
                 impersonate it: {}",
                caller.username(),
                caller.limit()
            )));
        }
    }
    Ok(user(name, groups))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    struct Nobody;

    impl Bindings for Nobody {
        fn bound(&self, _: &str, _: &str, _: &str) -> bool {
            false
        }
        fn referenced(&self, _: &str, _: &str, _: &str, _: &str) -> bool {
            false
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).expect("a value"));
        }
        headers
    }

    #[test]
    fn the_admin_acts_as_whom_it_names_with_what_groups_it_names() {
        let acting = |pairs| acting_as(Identity::Admin, &headers(pairs), &Nobody);
        assert!(matches!(acting(&[]), Ok(Identity::Admin)));
        let Ok(Identity::User(alice)) = acting(&[(USER, "alice"), (GROUP, "devs")]) else {
            panic!("alice");
        };
        assert_eq!(
            (alice.name.as_str(), alice.groups.clone()),
            ("alice", vec!["devs".into(), "system:authenticated".into()])
        );
        let Ok(Identity::User(robot)) = acting(&[(USER, "system:serviceaccount:ci:robot")]) else {
            panic!("a service account");
        };
        assert_eq!(robot.service_account, Some(("ci".into(), "robot".into())));
        assert!(robot.groups.contains(&"system:serviceaccounts:ci".into()));
        assert!(matches!(
            acting(&[(USER, "gantry:read-only")]),
            Ok(Identity::ReadOnly)
        ));
        assert!(matches!(
            acting(&[(GROUP, "devs")]),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn only_who_may_impersonate_does_and_a_master_may_do_anything() {
        for caller in [Identity::ReadOnly, Identity::Controller] {
            let refused = acting_as(caller, &headers(&[(USER, "gantry:admin")]), &Nobody);
            assert!(
                matches!(&refused, Err(ApiError::Forbidden(m)) if m.contains("users \"gantry:admin\"")),
                "{refused:?}"
            );
        }
        let list = Attributes {
            verb: "list",
            resource: Some("secrets"),
            namespace: Some("prod"),
            ..Attributes::default()
        };
        assert_eq!(
            user("root", vec!["system:masters".into()]).may(&list, &Nobody),
            Decision::Allow
        );
        assert_eq!(
            user("alice", Vec::new()).may(&list, &Nobody),
            Decision::Deny
        );
    }
}
