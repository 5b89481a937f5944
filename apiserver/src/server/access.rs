//! Who a request comes from and what it may do:
//! - the admin token may do anything;
//! - the read-only token may get, list and watch everything but Secrets,
//!   as Kubernetes' `view` role may (Secrets hold credentials, and reading
//!   a ServiceAccount's token is acting as it);
//! - the controller's token may do anything but touch Secrets;
//! - an agent's token (`crate::agent_token`) may do what Kubernetes' Node
//!   authorizer lets a kubelet do, in Gantry's terms: read its cluster
//!   (its namespace; of its Secrets and ConfigMaps, only those the running
//!   tasks bound to it name in their `secrets`), write its own
//!   ContainerInstance and Lease, write the status of the Tasks bound to
//!   it, and create Events in its namespace (it records each exec),
//!   nothing else.
//!
//! - a service-account token (`crate::service_account_token`, issued by
//!   TokenRequest) may do what RBAC grants its ServiceAccount
//!   (`server/rbac.rs`).
//!
//! Clients ask through SelfSubjectAccessReview (`kubectl auth can-i`) and
//! SelfSubjectReview (`kubectl auth whoami`), answered here from the same
//! rule the authentication layer enforces, never stored.

use std::sync::Arc;

use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::{
    app::App,
    impersonation::User,
    objects::meta::now,
    pki::Credentials,
    rbac::{self, Policies, Subject},
};
use crate::{
    agent_token::{self, AgentToken, Grant},
    service_account_token::{self, Claims},
};

/// The identity a bearer token stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Identity {
    Admin,
    ReadOnly,
    Controller,
    Agent(Arc<Grant>),
    ServiceAccount(Arc<Claims>),
    /// A user impersonated, or named by a SubjectAccessReview.
    User(Arc<User>),
}

/// The label the scheduler binds a task to its instance with
/// (crds/src/labels.rs, `CONTAINER_INSTANCE`).
const BOUND_TO: &str = "gantry.dev/container-instance";

/// What the rule for agents looks up: which tasks are bound where, and
/// what they reference.
pub(crate) trait Bindings {
    /// Whether Task `namespace/task` is bound to `instance`.
    fn bound(&self, namespace: &str, task: &str, instance: &str) -> bool;
    /// Whether a task bound to `instance`, desired RUNNING and not yet
    /// STOPPED, names the `kind` (`secret` or `configmap`) `name` in one of
    /// its containers' `secrets`, `environmentFiles` or
    /// `repositoryCredentials`.
    fn referenced(&self, namespace: &str, kind: &str, name: &str, instance: &str) -> bool;
    /// Whether RBAC's Roles and bindings allow `who` what `asked` says.
    fn rbac(&self, who: &Subject<'_>, asked: &Attributes<'_>) -> bool {
        let _ = (who, asked);
        false
    }
}

/// What a request asks to do, as Kubernetes' authorizers see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Attributes<'a> {
    /// get, list, watch, create, update, patch, delete, deletecollection
    /// (or `*` in a review).
    pub(crate) verb: &'a str,
    /// The API group (`""` for the core group).
    pub(crate) group: &'a str,
    /// `None` for paths that are not resources (discovery, OpenAPI,
    /// `/version`).
    pub(crate) resource: Option<&'a str>,
    pub(crate) subresource: Option<&'a str>,
    pub(crate) namespace: Option<&'a str>,
    pub(crate) name: Option<&'a str>,
}

/// The answer to "may it?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow,
    Deny,
    /// A create, allowed only if the object created has this name (which
    /// is in the body, not the path).
    IfNamed(String),
}

impl Attributes<'_> {
    fn is_read(&self) -> bool {
        matches!(self.verb, "get" | "list" | "watch")
    }

    /// Whether this is, or takes in, the core group's Secrets.
    fn holds_secrets(&self) -> bool {
        matches!(self.group, "" | "*") && matches!(self.resource, Some("secrets" | "*"))
    }
}

/// What a request on `path` asks: `/api/v1/[watch/][namespaces/NS/]R[/N[/S]]`
/// or `/apis/G/V/…` alike; the verb follows from the method, whether a
/// name is given, and `watch` in the path or `query`.
pub(crate) fn attributes_of<'a>(
    method: &axum::http::Method,
    path: &'a str,
    query: Option<&str>,
) -> Attributes<'a> {
    use axum::http::Method;
    let mut attributes = Attributes::default();
    let mut segments = path.trim_matches('/').split('/');
    let group = match segments.next() {
        Some("api") => Some(""),
        Some("apis") => segments.next(),
        _ => None,
    };
    let mut rest: Vec<&str> = Vec::new();
    if let Some(group) = group
        && segments.next().is_some()
    {
        attributes.group = group;
        rest = segments.filter(|s| !s.is_empty()).collect();
    }
    let watch = rest.first() == Some(&"watch")
        || query.is_some_and(|q| q.split('&').any(|p| matches!(p, "watch=true" | "watch=1")));
    if rest.first() == Some(&"watch") {
        rest.remove(0);
    }
    // `namespaces/NS/R…` is in NS; `namespaces/NS[/status|/finalize]` is
    // the namespace itself.
    if rest.len() >= 3 && rest[0] == "namespaces" && !matches!(rest[2], "status" | "finalize") {
        attributes.namespace = Some(rest[1]);
        rest.drain(..2);
    }
    attributes.resource = rest.first().copied();
    attributes.name = rest.get(1).copied();
    attributes.subresource = rest.get(2).copied();
    attributes.verb = match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if attributes.name.is_none() => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if attributes.name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => "*",
    };
    attributes
}

/// Who `token` is among the tokens made at first start. Compared in
/// constant time, so that how long a refusal takes says nothing about
/// how much of a token was right; every one is compared, whichever
/// matches, for the same reason. Agent tokens are looked up apart.
pub(crate) fn identify(token: &str, credentials: &Credentials) -> Option<Identity> {
    let is = |known: &str| bool::from(token.as_bytes().ct_eq(known.as_bytes()));
    let (admin, read_only, controller) = (
        is(&credentials.admin_token),
        is(&credentials.read_only_token),
        is(&credentials.controller_token),
    );
    if admin {
        Some(Identity::Admin)
    } else if read_only {
        Some(Identity::ReadOnly)
    } else if controller {
        Some(Identity::Controller)
    } else {
        None
    }
}

impl Identity {
    pub(crate) fn username(&self) -> String {
        match self {
            Self::Admin => "gantry:admin".into(),
            Self::ReadOnly => "gantry:read-only".into(),
            Self::Controller => "gantry:controller".into(),
            Self::Agent(grant) => format!("gantry:agent:{}:{}", grant.cluster, grant.instance),
            Self::ServiceAccount(claims) => claims.username(),
            Self::User(user) => user.name.clone(),
        }
    }

    fn groups(&self) -> Vec<String> {
        let fixed: &[&str] = match self {
            Self::Admin => &["system:masters", "system:authenticated"],
            Self::Agent(_) => &["gantry:agents", "system:authenticated"],
            Self::ReadOnly | Self::Controller => &["system:authenticated"],
            Self::ServiceAccount(claims) => return claims.groups(),
            Self::User(user) => return user.groups.clone(),
        };
        fixed.iter().map(|g| (*g).to_owned()).collect()
    }

    /// What this identity may do, for refusals.
    pub(crate) fn limit(&self) -> String {
        match self {
            Self::Admin => "the admin token may do anything".into(),
            Self::ReadOnly => {
                "the read-only token may only get, list and watch, and not Secrets".into()
            }
            Self::Controller => "the controller's token may do anything but touch Secrets".into(),
            Self::Agent(grant) => format!(
                "an agent's token may read namespace {cluster} (of its Secrets and ConfigMaps, \
                 only those its running tasks name), write ContainerInstance and Lease \
                 {instance} there, write the status of the Tasks bound to {instance}, and \
                 create Events",
                cluster = grant.cluster,
                instance = grant.instance
            ),
            Self::ServiceAccount(_) | Self::User(_) => format!(
                "no Role or ClusterRole bound to {} (or to its groups) allows it (RBAC)",
                self.username()
            ),
        }
    }

    /// Whether this identity may do what `asked` says; `bindings` answer
    /// the rule for agents.
    pub(crate) fn may(&self, asked: &Attributes<'_>, bindings: &impl Bindings) -> Decision {
        let allow = |yes: bool| if yes { Decision::Allow } else { Decision::Deny };
        match self {
            Self::Admin => Decision::Allow,
            Self::ReadOnly => allow(asked.is_read() && !asked.holds_secrets()),
            Self::Controller => allow(!asked.holds_secrets() && asked.verb != "impersonate"),
            Self::Agent(grant) => agent_may(grant, asked, bindings),
            Self::ServiceAccount(claims) => {
                let groups = claims.groups();
                let who = Subject {
                    user: &claims.username(),
                    groups: &groups,
                    service_account: Some((&claims.namespace, &claims.name)),
                };
                allow(bindings.rbac(&who, asked))
            }
            Self::User(user) => {
                if user.groups.iter().any(|g| g == "system:masters") {
                    return Decision::Allow;
                }
                let who = Subject {
                    user: &user.name,
                    groups: &user.groups,
                    service_account: user
                        .service_account
                        .as_ref()
                        .map(|(ns, name)| (ns.as_str(), name.as_str())),
                };
                allow(bindings.rbac(&who, asked))
            }
        }
    }

    /// The answer to a SelfSubjectAccessReview (or, for the user it
    /// names, a SubjectAccessReview: `kind`): the review with its status
    /// filled in.
    pub(crate) fn access_review(
        &self,
        kind: &str,
        mut review: Value,
        bindings: &impl Bindings,
    ) -> Value {
        let spec = review.get("spec").cloned().unwrap_or(Value::Null);
        let text = |pointer: &str| spec.pointer(pointer).and_then(Value::as_str);
        let given = |pointer: &str| text(pointer).filter(|s| !s.is_empty());
        let asked = match spec.get("resourceAttributes") {
            Some(_) => Attributes {
                verb: text("/resourceAttributes/verb").unwrap_or_default(),
                group: text("/resourceAttributes/group").unwrap_or_default(),
                resource: Some(text("/resourceAttributes/resource").unwrap_or_default()),
                subresource: given("/resourceAttributes/subresource"),
                namespace: given("/resourceAttributes/namespace"),
                name: given("/resourceAttributes/name"),
            },
            None => Attributes {
                verb: text("/nonResourceAttributes/verb").unwrap_or_default(),
                ..Attributes::default()
            },
        };
        let (allowed, reason) = match self.may(&asked, bindings) {
            Decision::Allow => (true, format!("{} may {}", self.username(), asked.verb)),
            Decision::Deny => (false, self.limit()),
            Decision::IfNamed(name) => (false, format!("only an object named {name}")),
        };
        if let Some(map) = review.as_object_mut() {
            map.insert("apiVersion".into(), json!("authorization.k8s.io/v1"));
            map.insert("kind".into(), json!(kind));
            map.insert("metadata".into(), json!({"creationTimestamp": now()}));
            map.insert(
                "status".into(),
                json!({"allowed": allowed, "reason": reason}),
            );
        }
        review
    }

    /// The answer to a SelfSubjectReview: who the caller is.
    pub(crate) fn self_review(&self) -> Value {
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "SelfSubjectReview",
            "metadata": {"creationTimestamp": now()},
            "status": {"userInfo": {"username": self.username(), "groups": self.groups()}},
        })
    }
}

/// The Node authorizer's rule, for an agent (see the top of this file).
fn agent_may(grant: &Grant, asked: &Attributes<'_>, bindings: &impl Bindings) -> Decision {
    let Some(resource) = asked.resource else {
        // Discovery, OpenAPI, `/version`.
        return if asked.is_read() {
            Decision::Allow
        } else {
            Decision::Deny
        };
    };
    let cluster = grant.cluster.as_str();
    let instance = grant.instance.as_str();
    let own = || match (asked.verb, asked.name) {
        ("create", None) => Decision::IfNamed(instance.to_owned()),
        ("get" | "create" | "update" | "patch" | "delete", Some(name)) if name == instance => {
            Decision::Allow
        }
        _ => Decision::Deny,
    };
    let yes = match (asked.group, resource) {
        ("", "namespaces") if asked.namespace.is_none() => {
            asked.verb == "get" && asked.name == Some(cluster)
        }
        _ if asked.namespace != Some(cluster) => false,
        ("", kinds @ ("secrets" | "configmaps")) => {
            let kind = kinds.trim_end_matches('s');
            asked.verb == "get"
                && asked
                    .name
                    .is_some_and(|name| bindings.referenced(cluster, kind, name, instance))
        }
        _ if asked.is_read() => true,
        ("gantry.dev", "containerinstances") | ("coordination.k8s.io", "leases") => return own(),
        // What it records: each exec (agent/src/endpoint.rs).
        ("" | "events.k8s.io", "events") => asked.verb == "create",
        ("gantry.dev", "tasks") => {
            asked.subresource == Some("status")
                && matches!(asked.verb, "update" | "patch")
                && asked
                    .name
                    .is_some_and(|task| bindings.bound(cluster, task, instance))
        }
        _ => false,
    };
    if yes { Decision::Allow } else { Decision::Deny }
}

/// Who an agent token is, if its Secret is stored and holds it.
pub(crate) fn identify_agent(token: &str, app: &App) -> Option<Identity> {
    let token = AgentToken::parse(token)?;
    let secrets = app.registry.get("", "v1", "secrets")?;
    let (_, secret) = app
        .store
        .get(&secrets.key(Some(agent_token::NAMESPACE), &token.secret_name()))?;
    token
        .granted_by(&secret)
        .map(|grant| Identity::Agent(Arc::new(grant)))
}

/// Who a service-account token is: its claims, if the server signed it,
/// it has not expired, and its ServiceAccount (of the same uid) is still
/// there.
pub(crate) fn identify_service_account(token: &str, app: &App) -> Option<Identity> {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let key = app.credentials.service_account_key.as_bytes();
    let claims = service_account_token::verify(key, token, now)?;
    let accounts = app.registry.get("", "v1", "serviceaccounts")?;
    let (_, account) = app
        .store
        .get(&accounts.key(Some(&claims.namespace), &claims.name))?;
    (account.pointer("/metadata/uid").and_then(Value::as_str) == Some(claims.uid.as_str()))
        .then(|| Identity::ServiceAccount(Arc::new(claims)))
}

/// The bindings as the store holds them.
pub(crate) struct Stored<'a>(pub(crate) &'a App);

impl Stored<'_> {
    fn objects(&self, resource: &str, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let Some(resource) = self
            .0
            .registry
            .get("rbac.authorization.k8s.io", "v1", resource)
        else {
            return Vec::new();
        };
        self.0.store.list(&resource.prefix(namespace)).1
    }

    fn object(&self, resource: &str, namespace: Option<&str>, name: &str) -> Option<Arc<Value>> {
        let resource = self
            .0
            .registry
            .get("rbac.authorization.k8s.io", "v1", resource)?;
        self.0
            .store
            .get(&resource.key(namespace, name))
            .map(|(_, o)| o)
    }
}

impl Policies for Stored<'_> {
    fn role_bindings(&self, namespace: &str) -> Vec<Arc<Value>> {
        self.objects("rolebindings", Some(namespace))
    }

    fn cluster_role_bindings(&self) -> Vec<Arc<Value>> {
        self.objects("clusterrolebindings", None)
    }

    fn role(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.object("roles", Some(namespace), name)
    }

    fn cluster_role(&self, name: &str) -> Option<Arc<Value>> {
        self.object("clusterroles", None, name)
    }
}

impl Stored<'_> {
    fn bound_to(task: &Value, instance: &str) -> bool {
        task.pointer(&format!("/metadata/labels/{}", BOUND_TO.replace('/', "~1")))
            .and_then(Value::as_str)
            == Some(instance)
    }
}

impl Bindings for Stored<'_> {
    fn bound(&self, namespace: &str, task: &str, instance: &str) -> bool {
        let Some(tasks) = self.0.registry.get("gantry.dev", "v1alpha1", "tasks") else {
            return false;
        };
        self.0
            .store
            .get(&tasks.key(Some(namespace), task))
            .is_some_and(|(_, task)| Self::bound_to(&task, instance))
    }

    fn referenced(&self, namespace: &str, kind: &str, name: &str, instance: &str) -> bool {
        let Some(tasks) = self.0.registry.get("gantry.dev", "v1alpha1", "tasks") else {
            return false;
        };
        let prefix = format!("{kind}:{name}:");
        let (_, tasks) = self.0.store.list(&tasks.prefix(Some(namespace)));
        tasks.iter().any(|task| {
            Self::bound_to(task, instance)
                && task.pointer("/spec/desiredStatus").and_then(Value::as_str) != Some("STOPPED")
                && task.pointer("/status/lastStatus").and_then(Value::as_str) != Some("STOPPED")
                && task
                    .pointer("/spec/definition/containerDefinitions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|container| {
                        let login = container
                            .pointer("/repositoryCredentials/credentialsParameter")
                            .and_then(Value::as_str);
                        let mut files = container
                            .get("environmentFiles")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(|file| file.get("value")?.as_str());
                        (kind == "secret" && login == Some(name))
                            || (kind == "configmap" && files.any(|f| f.starts_with(&prefix)))
                            || container
                                .get("secrets")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                                .filter_map(|secret| secret.get("valueFrom")?.as_str())
                                .any(|source| source.starts_with(&prefix))
                    })
        })
    }

    fn rbac(&self, who: &Subject<'_>, asked: &Attributes<'_>) -> bool {
        rbac::allows(self, who, asked)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;

    /// Bindings for the tests: tasks t1 (naming secret db) on host-a,
    /// t2 (naming configmap app) on host-b, all in prod.
    struct Fixed;

    impl Bindings for Fixed {
        fn bound(&self, namespace: &str, task: &str, instance: &str) -> bool {
            namespace == "prod" && matches!((task, instance), ("t1", "host-a") | ("t2", "host-b"))
        }

        fn referenced(&self, namespace: &str, kind: &str, name: &str, instance: &str) -> bool {
            namespace == "prod"
                && matches!(
                    (kind, name, instance),
                    ("secret", "db", "host-a") | ("configmap", "app", "host-b")
                )
        }
    }

    const NOBODY: &Fixed = &Fixed;

    fn agent() -> Identity {
        Identity::Agent(Arc::new(Grant {
            cluster: "prod".into(),
            instance: "host-a".into(),
        }))
    }

    #[test]
    fn tokens_are_known_whole_or_not_at_all() {
        let credentials = Credentials {
            ca_pem: String::new(),
            cert_pem: String::new(),
            key_pem: String::new(),
            admin_token: "admin-secret".into(),
            read_only_token: "reader-secret".into(),
            controller_token: "controller-secret".into(),
            service_account_key: "signing-key".into(),
        };
        for (token, identity) in [
            ("admin-secret", Some(Identity::Admin)),
            ("reader-secret", Some(Identity::ReadOnly)),
            ("controller-secret", Some(Identity::Controller)),
            ("admin-secre", None),
            ("admin-secret2", None),
            ("", None),
        ] {
            assert_eq!(identify(token, &credentials), identity, "{token:?}");
        }
    }

    #[test]
    fn paths_name_what_they_act_on() {
        let get = Method::GET;
        for (method, path, query, expected) in [
            (
                &get,
                "/api/v1/secrets",
                None,
                ("list", "", Some("secrets"), None, None, None),
            ),
            (
                &get,
                "/api/v1/namespaces/default/secrets",
                None,
                ("list", "", Some("secrets"), Some("default"), None, None),
            ),
            (
                &get,
                "/api/v1/namespaces/default/secrets/s",
                None,
                ("get", "", Some("secrets"), Some("default"), Some("s"), None),
            ),
            (
                &get,
                "/api/v1/watch/namespaces/default/secrets",
                None,
                ("watch", "", Some("secrets"), Some("default"), None, None),
            ),
            (
                &get,
                "/api/v1/namespaces/default/secrets",
                Some("watch=true&resourceVersion=3"),
                ("watch", "", Some("secrets"), Some("default"), None, None),
            ),
            (
                &get,
                "/api/v1/namespaces/secrets",
                None,
                ("get", "", Some("namespaces"), None, Some("secrets"), None),
            ),
            (
                &Method::PUT,
                "/api/v1/namespaces/prod/finalize",
                None,
                (
                    "update",
                    "",
                    Some("namespaces"),
                    None,
                    Some("prod"),
                    Some("finalize"),
                ),
            ),
            (
                &get,
                "/api/v1/namespaces",
                None,
                ("list", "", Some("namespaces"), None, None, None),
            ),
            (
                &Method::POST,
                "/apis/apps/v1/namespaces/x/deployments",
                None,
                ("create", "apps", Some("deployments"), Some("x"), None, None),
            ),
            (
                &Method::PATCH,
                "/apis/gantry.dev/v1alpha1/namespaces/x/tasks/t/status",
                None,
                (
                    "patch",
                    "gantry.dev",
                    Some("tasks"),
                    Some("x"),
                    Some("t"),
                    Some("status"),
                ),
            ),
            (
                &Method::DELETE,
                "/apis/gantry.dev/v1alpha1/namespaces/x/tasks",
                None,
                (
                    "deletecollection",
                    "gantry.dev",
                    Some("tasks"),
                    Some("x"),
                    None,
                    None,
                ),
            ),
            (&get, "/api/v1", None, ("list", "", None, None, None, None)),
            (&get, "/apis", None, ("list", "", None, None, None, None)),
            (&get, "/version", None, ("list", "", None, None, None, None)),
        ] {
            let a = attributes_of(method, path, query);
            let found = (
                a.verb,
                a.group,
                a.resource,
                a.namespace,
                a.name,
                a.subresource,
            );
            assert_eq!(found, expected, "{method} {path}");
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
            let answer = Identity::ReadOnly.access_review(
                "SelfSubjectAccessReview",
                review(group, resource),
                NOBODY,
            );
            assert_eq!(answer["status"]["allowed"], allowed, "{group}/{resource}");
        }
        let secrets = attributes_of(&Method::GET, "/api/v1/namespaces/default/secrets", None);
        assert_eq!(Identity::ReadOnly.may(&secrets, NOBODY), Decision::Deny);
        assert_eq!(Identity::Admin.may(&secrets, NOBODY), Decision::Allow);
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
            (Identity::Controller, "*", true),
        ] {
            let answer = identity.access_review("SelfSubjectAccessReview", review(verb), NOBODY);
            assert_eq!(answer["status"]["allowed"], allowed, "{identity:?} {verb}");
            assert_eq!(answer["spec"], review(verb)["spec"], "the question is kept");
        }
        let path = json!({"spec": {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}}});
        assert_eq!(
            Identity::ReadOnly.access_review("SelfSubjectAccessReview", path, NOBODY)["status"]["allowed"],
            true
        );
        assert_eq!(
            Identity::ReadOnly.self_review()["status"]["userInfo"]["username"],
            "gantry:read-only"
        );
    }

    #[test]
    fn the_controller_may_do_anything_but_touch_secrets() {
        let may = |method: &Method, path: &str| {
            Identity::Controller.may(&attributes_of(method, path, None), NOBODY)
        };
        assert_eq!(
            may(
                &Method::DELETE,
                "/apis/gantry.dev/v1alpha1/namespaces/p/tasks/t"
            ),
            Decision::Allow
        );
        assert_eq!(
            may(
                &Method::POST,
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
            ),
            Decision::Allow
        );
        assert_eq!(
            may(&Method::GET, "/api/v1/namespaces/kube-system/secrets"),
            Decision::Deny
        );
        assert_eq!(
            may(&Method::POST, "/api/v1/namespaces/p/secrets"),
            Decision::Deny
        );
    }

    #[test]
    fn an_agent_writes_only_its_own_instance_lease_and_bound_tasks() {
        let ci = "/apis/gantry.dev/v1alpha1/namespaces/prod/containerinstances";
        let tasks = "/apis/gantry.dev/v1alpha1/namespaces/prod/tasks";
        let lease = "/apis/coordination.k8s.io/v1/namespaces/prod/leases";
        let get = Method::GET;
        for (method, path, decision) in [
            // Reads in its cluster, but not Secrets or ConfigMaps.
            (&get, "/api/v1/namespaces/prod", Decision::Allow),
            (&get, "/api/v1/namespaces/other", Decision::Deny),
            (&get, "/api/v1/namespaces", Decision::Deny),
            (&get, tasks, Decision::Allow),
            (&get, &format!("{tasks}/t2"), Decision::Allow),
            (
                &get,
                "/apis/gantry.dev/v1alpha1/namespaces/other/tasks",
                Decision::Deny,
            ),
            (&get, "/apis/gantry.dev/v1alpha1/tasks", Decision::Deny),
            // Of Secrets and ConfigMaps, only what its tasks name.
            (&get, "/api/v1/namespaces/prod/secrets/db", Decision::Allow),
            (
                &get,
                "/api/v1/namespaces/prod/secrets/other",
                Decision::Deny,
            ),
            (&get, "/api/v1/namespaces/prod/secrets", Decision::Deny),
            (
                &get,
                "/api/v1/watch/namespaces/prod/secrets/db",
                Decision::Deny,
            ),
            (
                &Method::PUT,
                "/api/v1/namespaces/prod/secrets/db",
                Decision::Deny,
            ),
            (
                &get,
                "/api/v1/namespaces/prod/configmaps/app",
                Decision::Deny,
            ),
            (&get, "/api/v1/namespaces/prod/configmaps", Decision::Deny),
            (
                &get,
                "/api/v1/namespaces/kube-system/secrets",
                Decision::Deny,
            ),
            (&get, "/apis", Decision::Allow),
            // Its own instance and Lease, and no other.
            (&Method::POST, ci, Decision::IfNamed("host-a".into())),
            (
                &Method::PATCH,
                &format!("{ci}/host-a/status"),
                Decision::Allow,
            ),
            (&Method::PUT, &format!("{ci}/host-a"), Decision::Allow),
            (&Method::DELETE, &format!("{ci}/host-a"), Decision::Allow),
            (
                &Method::PATCH,
                &format!("{ci}/host-b/status"),
                Decision::Deny,
            ),
            (&Method::DELETE, &format!("{ci}/host-b"), Decision::Deny),
            (&Method::DELETE, ci, Decision::Deny),
            (&Method::PUT, &format!("{lease}/host-a"), Decision::Allow),
            (&Method::POST, lease, Decision::IfNamed("host-a".into())),
            (&Method::PUT, &format!("{lease}/host-b"), Decision::Deny),
            (
                &Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/host-a",
                Decision::Deny,
            ),
            // The status of its own tasks, never their spec.
            (
                &Method::PATCH,
                &format!("{tasks}/t1/status"),
                Decision::Allow,
            ),
            (&Method::PUT, &format!("{tasks}/t1/status"), Decision::Allow),
            (
                &Method::PATCH,
                &format!("{tasks}/t2/status"),
                Decision::Deny,
            ),
            (&Method::PATCH, &format!("{tasks}/t1"), Decision::Deny),
            (&Method::DELETE, &format!("{tasks}/t1"), Decision::Deny),
            (&Method::POST, tasks, Decision::Deny),
            // Nothing else.
            // Events it records, in its namespace only.
            (
                &Method::POST,
                "/apis/events.k8s.io/v1/namespaces/prod/events",
                Decision::Allow,
            ),
            (
                &Method::POST,
                "/apis/events.k8s.io/v1/namespaces/other/events",
                Decision::Deny,
            ),
            (
                &Method::DELETE,
                "/apis/events.k8s.io/v1/namespaces/prod/events/e",
                Decision::Deny,
            ),
            (
                &Method::PATCH,
                "/apis/gantry.dev/v1alpha1/namespaces/prod/services/web",
                Decision::Deny,
            ),
            (&Method::POST, "/api/v1/namespaces", Decision::Deny),
        ] {
            let asked = attributes_of(method, path, None);
            assert_eq!(agent().may(&asked, &Fixed), decision, "{method} {path}");
        }
        let can_i = |verb: &str, resource: &str, name: &str| {
            let review = json!({"spec": {"resourceAttributes": {"verb": verb, "group": "gantry.dev", "resource": resource, "namespace": "prod", "name": name}}});
            agent().access_review("SelfSubjectAccessReview", review, &Fixed)["status"]["allowed"]
                .clone()
        };
        assert_eq!(can_i("create", "containerinstances", "host-a"), true);
        assert_eq!(can_i("create", "containerinstances", "host-b"), false);
        assert_eq!(can_i("create", "containerinstances", ""), false);
        assert_eq!(
            agent().self_review()["status"]["userInfo"]["username"],
            "gantry:agent:prod:host-a"
        );
    }
}
