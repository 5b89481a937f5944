//! The resources the server serves: built-in kinds, and those that
//! CustomResourceDefinitions register at runtime.

use std::{
    collections::BTreeMap,
    sync::{Arc, PoisonError, RwLock},
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition,
};

use crate::validation::SchemaValidator;

/// One served resource (one group, version and plural).
#[derive(Debug)]
pub struct Resource {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `/status` subresource: the main endpoint ignores status and
    /// `/status` changes only status.
    pub status: bool,
    /// `.spec` replicas path, `.status` replicas path, label selector path.
    pub scale: Option<(String, String, Option<String>)>,
    /// Schema checks for custom resources.
    pub validator: Option<SchemaValidator>,
    /// The CRD's printer columns, for Table output.
    pub printer_columns: Option<Vec<CustomResourceColumnDefinition>>,
    /// Served from a CRD (rather than built in).
    pub custom: bool,
}

impl Resource {
    /// `apiVersion` of its objects.
    #[must_use]
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key prefix of its objects, optionally in a namespace.
    #[must_use]
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        match namespace {
            Some(ns) => format!("/{group}/{}/{ns}/", self.plural),
            None => format!("/{group}/{}/", self.plural),
        }
    }

    /// The storage key of one object.
    #[must_use]
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        let ns = if self.namespaced {
            namespace.unwrap_or("")
        } else {
            "_"
        };
        format!("{}{name}", self.prefix(Some(ns)))
    }

    /// `plural.group`, as error messages name it.
    #[must_use]
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// Every served resource, by group, version and plural.
#[derive(Debug, Default)]
pub struct Registry {
    resources: RwLock<BTreeMap<(String, String, String), Arc<Resource>>>,
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    status: bool,
}

/// The built-in kinds Gantry and its users need; stored faithfully even
/// where nothing here acts on them.
const BUILTINS: &[Builtin] = &[
    b("", "v1", "Namespace", "namespaces", false, &["ns"], true),
    b("", "v1", "ConfigMap", "configmaps", true, &["cm"], false),
    b("", "v1", "Secret", "secrets", true, &[], false),
    b(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        true,
        &["sa"],
        false,
    ),
    b("", "v1", "Service", "services", true, &["svc"], true),
    b("", "v1", "Event", "events", true, &["ev"], false),
    b(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        true,
        &["ev"],
        false,
    ),
    b(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        true,
        &[],
        false,
    ),
    b(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        true,
        &["deploy"],
        true,
    ),
    b("apps", "v1", "DaemonSet", "daemonsets", true, &["ds"], true),
    b(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true,
        &[],
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        true,
        &[],
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
        &[],
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
        &[],
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        &[],
        false,
    ),
    b(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
        true,
    ),
];

const fn b(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    status: bool,
) -> Builtin {
    Builtin {
        group,
        version,
        kind,
        plural,
        namespaced,
        short_names,
        status,
    }
}

impl Registry {
    /// A registry serving the built-in kinds.
    #[must_use]
    pub fn with_builtins() -> Self {
        let registry = Self::default();
        for builtin in BUILTINS {
            registry.insert(Resource {
                group: builtin.group.into(),
                version: builtin.version.into(),
                kind: builtin.kind.into(),
                plural: builtin.plural.into(),
                singular: builtin.kind.to_lowercase(),
                namespaced: builtin.namespaced,
                short_names: builtin
                    .short_names
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
                // `kubectl get all`: the workload kinds, as kube-apiserver
                // lists them (of those served here).
                categories: match (builtin.group, builtin.plural) {
                    ("", "services") | ("apps", "deployments" | "daemonsets") => {
                        vec!["all".to_owned()]
                    }
                    _ => Vec::new(),
                },
                status: builtin.status,
                // `kubectl scale deployment`.
                scale: (builtin.group == "apps" && builtin.plural == "deployments").then(|| {
                    (
                        ".spec.replicas".to_owned(),
                        ".status.replicas".to_owned(),
                        None,
                    )
                }),
                validator: None,
                printer_columns: None,
                custom: false,
            });
        }
        registry
    }

    fn insert(&self, resource: Resource) {
        let key = (
            resource.group.clone(),
            resource.version.clone(),
            resource.plural.clone(),
        );
        self.resources
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, Arc::new(resource));
    }

    /// The resource served at `/apis/{group}/{version}/{plural}`.
    #[must_use]
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Resource>> {
        self.resources
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(group.to_owned(), version.to_owned(), plural.to_owned()))
            .cloned()
    }

    /// The resource whose objects have this `apiVersion` and `kind`.
    #[must_use]
    pub fn for_kind(&self, api_version: &str, kind: &str) -> Option<Arc<Resource>> {
        self.resources
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .find(|r| r.kind == kind && r.api_version() == api_version)
            .cloned()
    }

    /// The resources served at `/apis/{group}/{version}` (or `/api/v1`).
    #[must_use]
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<Resource>> {
        self.all()
            .into_iter()
            .filter(|r| r.group == group && r.version == version)
            .collect()
    }

    /// Every served resource, in group, version, plural order.
    #[must_use]
    pub fn all(&self) -> Vec<Arc<Resource>> {
        self.resources
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Serve the versions of a CRD (replacing what it served before).
    ///
    /// # Errors
    /// When a version's schema does not compile.
    pub fn register(&self, crd: &CustomResourceDefinition) -> Result<(), crate::validation::Error> {
        let spec = &crd.spec;
        self.unregister(&spec.group, &spec.names.plural);
        for version in spec.versions.iter().filter(|v| v.served) {
            let subresources = version.subresources.as_ref();
            let validator = match version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
            {
                Some(_) => Some(SchemaValidator::for_crd(crd, &version.name)?),
                None => None,
            };
            self.insert(Resource {
                group: spec.group.clone(),
                version: version.name.clone(),
                kind: spec.names.kind.clone(),
                plural: spec.names.plural.clone(),
                singular: spec
                    .names
                    .singular
                    .clone()
                    .unwrap_or_else(|| spec.names.kind.to_lowercase()),
                namespaced: spec.scope == "Namespaced",
                short_names: spec.names.short_names.clone().unwrap_or_default(),
                categories: spec.names.categories.clone().unwrap_or_default(),
                status: subresources.is_some_and(|s| s.status.is_some()),
                scale: subresources.and_then(|s| s.scale.as_ref()).map(|s| {
                    (
                        s.spec_replicas_path.clone(),
                        s.status_replicas_path.clone(),
                        s.label_selector_path.clone(),
                    )
                }),
                validator,
                printer_columns: version.additional_printer_columns.clone(),
                custom: true,
            });
        }
        Ok(())
    }

    /// Stop serving a custom resource.
    pub fn unregister(&self, group: &str, plural: &str) {
        self.resources
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(g, _, p), r| !(r.custom && g == group && p == plural));
    }
}
