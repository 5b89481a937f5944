//! Who a request comes from and what it may do: the admin token may do
//! anything; the read-only token may get, list and watch. Clients ask
//! through SelfSubjectAccessReview (`kubectl auth can-i`) and
//! SelfSubjectReview (`kubectl auth whoami`), answered here from the
//! same rule the authentication layer enforces, never stored.

use serde_json::{Value, json};

use super::objects::meta::now;

/// The identity a bearer token stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Identity {
    Admin,
    ReadOnly,
}

/// The verbs the read-only token may use.
const READ_VERBS: [&str; 3] = ["get", "list", "watch"];

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
            Self::ReadOnly => "the read-only token may only get, list and watch",
        }
    }

    /// Whether this identity may use `verb` (Kubernetes' verbs: get,
    /// list, create, …; `*` for all).
    pub(crate) fn may(self, verb: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::ReadOnly => READ_VERBS.contains(&verb),
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
        let allowed = self.may(verb);
        let reason = match (self, allowed) {
            (Self::ReadOnly, true) => format!("the read-only token may {verb}"),
            (Self::ReadOnly, false) => format!("{}, not {verb}", self.limit()),
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
