//! Who a request comes from and what it may do: the admin token may do
//! anything; the read-only token may get, list and watch everything but
//! Secrets, as Kubernetes' `view` role may (Secrets hold credentials, and
//! reading a ServiceAccount's token is acting as it). Clients ask
//! through SelfSubjectAccessReview (`kubectl auth can-i`) and
//! SelfSubjectReview (`kubectl auth whoami`), answered here from the
//! same rule the authentication layer enforces, never stored.

use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::{objects::meta::now, pki::Credentials};

/// The identity a bearer token stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Identity {
    Admin,
    ReadOnly,
}

/// The verbs the read-only token may use.
const READ_VERBS: [&str; 3] = ["get", "list", "watch"];

/// What a request acts on: an API group (`""` for the core group) and a
/// resource (`*` for all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Resource<'a> {
    pub(crate) group: &'a str,
    pub(crate) resource: &'a str,
}

impl Resource<'_> {
    /// Whether this is, or takes in, the core group's Secrets.
    fn holds_secrets(self) -> bool {
        matches!(self.group, "" | "*") && matches!(self.resource, "secrets" | "*")
    }
}

/// The resource a REST path acts on: `/api/v1/[watch/][namespaces/NS/]R…`
/// or `/apis/G/V/…` alike. `None` for paths that are not resources
/// (discovery, OpenAPI, `/version`).
pub(crate) fn resource_of(path: &str) -> Option<Resource<'_>> {
    let mut segments = path.trim_matches('/').split('/');
    let group = match segments.next()? {
        "api" => "",
        "apis" => segments.next()?,
        _ => return None,
    };
    segments.next()?; // the version
    let mut rest: Vec<&str> = segments.collect();
    if rest.first() == Some(&"watch") {
        rest.remove(0);
    }
    // `namespaces/NS` is a namespace itself unless something follows it.
    if rest.len() >= 3 && rest[0] == "namespaces" {
        rest.drain(..2);
    }
    rest.first().map(|&resource| Resource { group, resource })
}

/// The Kubernetes verb an HTTP method is, for the rule above (a GET may
/// be a get, list or watch: all reads).
pub(crate) fn verb_of(method: &axum::http::Method) -> &'static str {
    match *method {
        axum::http::Method::GET | axum::http::Method::HEAD => "get",
        axum::http::Method::POST => "create",
        axum::http::Method::PUT => "update",
        axum::http::Method::PATCH => "patch",
        axum::http::Method::DELETE => "delete",
        _ => "*",
    }
}

/// Who `token` is. Compared in constant time, so that how long a refusal
/// takes says nothing about how much of a token was right.
pub(crate) fn identify(token: &str, credentials: &Credentials) -> Option<Identity> {
    let is = |known: &str| bool::from(token.as_bytes().ct_eq(known.as_bytes()));
    // Both are compared whichever matches, for the same reason.
    let (admin, read_only) = (
        is(&credentials.admin_token),
        is(&credentials.read_only_token),
    );
    if admin {
        Some(Identity::Admin)
    } else if read_only {
        Some(Identity::ReadOnly)
    } else {
        None
    }
}

impl Identity {
    pub(crate) fn username(self) -> &'static str {
        match self {
            Self::Admin => "gantry:admin",
            Self::ReadOnly => "gantry:read-only",
        }
    }

    fn groups(self) -> &'static [&'static str] {
        match self {
            Self::Admin => &["system:masters", "system:authenticated"],
            Self::ReadOnly => &["system:authenticated"],
        }
    }

    /// What this identity may not do, for refusals.
    pub(crate) fn limit(self) -> &'static str {
        match self {
            Self::Admin => "the admin token may do anything",
            Self::ReadOnly => "the read-only token may only get, list and watch, and not Secrets",
        }
    }

    /// Whether this identity may use `verb` (Kubernetes' verbs: get,
    /// list, create, …; `*` for all) on `resource` (`None` for a path
    /// that is not a resource).
    pub(crate) fn may(self, verb: &str, resource: Option<Resource<'_>>) -> bool {
        match self {
            Self::Admin => true,
            Self::ReadOnly => {
                READ_VERBS.contains(&verb) && !resource.is_some_and(Resource::holds_secrets)
            }
        }
    }

    /// The answer to a SelfSubjectAccessReview: the review with its
    /// status filled in.
    pub(crate) fn access_review(self, mut review: Value) -> Value {
        let spec = review.get("spec").cloned().unwrap_or(Value::Null);
        let verb = spec
            .pointer("/resourceAttributes/verb")
            .or_else(|| spec.pointer("/nonResourceAttributes/verb"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let resource = spec.get("resourceAttributes").map(|attributes| Resource {
            group: attributes
                .get("group")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            resource: attributes
                .get("resource")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        });
        let allowed = self.may(verb, resource);
        let reason = match (self, allowed) {
            (Self::ReadOnly, true) => format!("the read-only token may {verb}"),
            (Self::ReadOnly, false) => self.limit().to_owned(),
            (Self::Admin, _) => self.limit().to_owned(),
        };
        if let Some(map) = review.as_object_mut() {
            map.insert("apiVersion".into(), json!("authorization.k8s.io/v1"));
            map.insert("kind".into(), json!("SelfSubjectAccessReview"));
            map.insert("metadata".into(), json!({"creationTimestamp": now()}));
            map.insert(
                "status".into(),
                json!({"allowed": allowed, "reason": reason}),
            );
        }
        review
    }

    /// The answer to a SelfSubjectReview: who the caller is.
    pub(crate) fn self_review(self) -> Value {
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "SelfSubjectReview",
            "metadata": {"creationTimestamp": now()},
            "status": {"userInfo": {"username": self.username(), "groups": self.groups()}},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_known_whole_or_not_at_all() {
        let credentials = Credentials {
            ca_pem: String::new(),
            cert_pem: String::new(),
            key_pem: String::new(),
            admin_token: "admin-secret".into(),
            read_only_token: "reader-secret".into(),
        };
        for (token, identity) in [
            ("admin-secret", Some(Identity::Admin)),
            ("reader-secret", Some(Identity::ReadOnly)),
            ("admin-secre", None),
            ("admin-secret2", None),
            ("", None),
        ] {
            assert_eq!(identify(token, &credentials), identity, "{token:?}");
        }
    }

    #[test]
    fn paths_name_their_group_and_resource() {
        for (path, expected) in [
            ("/api/v1/secrets", Some(("", "secrets"))),
            ("/api/v1/namespaces/default/secrets", Some(("", "secrets"))),
            (
                "/api/v1/namespaces/default/secrets/s",
                Some(("", "secrets")),
            ),
            (
                "/api/v1/watch/namespaces/default/secrets",
                Some(("", "secrets")),
            ),
            ("/api/v1/namespaces/secrets", Some(("", "namespaces"))),
            ("/api/v1/namespaces", Some(("", "namespaces"))),
            (
                "/apis/apps/v1/namespaces/x/deployments",
                Some(("apps", "deployments")),
            ),
            (
                "/apis/gantry.dev/v1alpha1/secrets",
                Some(("gantry.dev", "secrets")),
            ),
            ("/api/v1", None),
            ("/apis", None),
            ("/version", None),
        ] {
            let found = resource_of(path).map(|r| (r.group, r.resource));
            assert_eq!(found, expected, "{path}");
        }
    }

    #[test]
    fn the_read_only_token_may_not_read_secrets() {
        let review = |group: &str, resource: &str| json!({"spec": {"resourceAttributes": {"verb": "get", "group": group, "resource": resource}}});
        for (group, resource, allowed) in [
            ("", "secrets", false),
            ("", "*", false),
            ("*", "*", false),
            ("", "configmaps", true),
            ("gantry.dev", "secrets", true),
        ] {
            let answer = Identity::ReadOnly.access_review(review(group, resource));
            assert_eq!(answer["status"]["allowed"], allowed, "{group}/{resource}");
        }
        let secrets = resource_of("/api/v1/namespaces/default/secrets");
        assert!(!Identity::ReadOnly.may("list", secrets));
        assert!(Identity::Admin.may("list", secrets));
    }

    #[test]
    fn the_read_only_token_may_only_read_and_the_admin_anything() {
        let review = |verb: &str| json!({"spec": {"resourceAttributes": {"verb": verb, "resource": "configmaps"}}});
        for (identity, verb, allowed) in [
            (Identity::Admin, "create", true),
            (Identity::Admin, "*", true),
            (Identity::ReadOnly, "get", true),
            (Identity::ReadOnly, "watch", true),
            (Identity::ReadOnly, "delete", false),
            (Identity::ReadOnly, "*", false),
        ] {
            let answer = identity.access_review(review(verb));
            assert_eq!(answer["status"]["allowed"], allowed, "{identity:?} {verb}");
            assert_eq!(answer["spec"], review(verb)["spec"], "the question is kept");
        }
        let path = json!({"spec": {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}}});
        assert_eq!(
            Identity::ReadOnly.access_review(path)["status"]["allowed"],
            true
        );
        assert_eq!(
            Identity::ReadOnly.self_review()["status"]["userInfo"]["username"],
            "gantry:read-only"
        );
    }
}
