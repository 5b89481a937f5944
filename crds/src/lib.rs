//! Gantry's API: the ECS resource model as Kubernetes custom resources.
//!
//! Group `gantry.dev`, version `v1alpha1`. Every kind is namespaced: a
//! namespace is an ECS cluster. Field names follow the ECS JSON a user
//! already knows, in camelCase.

//!
//! Besides the kinds, this crate is the one home of the API's vocabulary:
//! [`labels`], [`conditions`] (types, reasons, and how one is set) and
//! [`stop`] (ECS's stop reasons and the patches that stop a task). With
//! the `install` feature, [`install`] writes the CRDs into a cluster; the
//! types alone need no kube client or runtime.

pub mod conditions;
pub mod labels;
pub mod load_balancing;
pub mod stop;
pub mod v1alpha1;

#[cfg(feature = "install")]
mod install;
#[cfg(feature = "install")]
pub use install::{InstallError, install};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group every Gantry kind belongs to.
pub const GROUP: &str = "gantry.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
/// The `kubectl get <category>` name that lists every Gantry kind.
pub const CATEGORY: &str = "gantry";

/// Every Gantry CRD, in the order they are applied and printed.
#[must_use]
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        v1alpha1::TaskDefinition::crd(),
        v1alpha1::TaskDefinitionRevision::crd(),
        v1alpha1::Service::crd(),
        v1alpha1::Task::crd(),
        v1alpha1::ContainerInstance::crd(),
        v1alpha1::LoadBalancer::crd(),
        v1alpha1::ScheduledTask::crd(),
    ]
}

/// The file name under `crds/yaml/` that holds a CRD: `<plural>.<group>.yaml`.
#[must_use]
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or_default())
}

/// One CRD as a YAML document.
///
/// # Errors
/// Only if serialization fails, which a derived CRD never does.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(crd)
}

/// Every CRD as one multi-document YAML stream, as `gantry crd` prints it.
///
/// # Errors
/// Only if serialization fails, which a derived CRD never does.
pub fn all_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&to_yaml(&crd)?);
    }
    Ok(out)
}
