//! Gantry's API: the ECS resource model as Kubernetes custom resources.
//!
//! Group `gantry.dev`, version `v1alpha1`. Every kind is namespaced: a
//! namespace is an ECS cluster. Field names follow the ECS JSON a user
//! already knows, in camelCase.

pub mod v1alpha1;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, CustomResourceExt, ResourceExt,
    api::PostParams,
    runtime::{conditions, wait::await_condition},
};

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
        v1alpha1::Service::crd(),
        v1alpha1::Task::crd(),
        v1alpha1::ContainerInstance::crd(),
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

/// Why [`install`] failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("writing the CRD {name}: {source}")]
    Write { name: String, source: kube::Error },
    #[error("waiting for the CRD {name} to be established: {source}")]
    Wait {
        name: String,
        source: kube::runtime::wait::Error,
    },
}

/// Create every CRD, or bring one already there up to this version, and
/// wait until each is established (its resources served).
///
/// # Errors
/// A refused write, or a watch that fails while waiting.
pub async fn install(client: &Client) -> Result<(), InstallError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for mut crd in all() {
        let name = crd.name_any();
        let write = |source| InstallError::Write {
            name: name.clone(),
            source,
        };
        match api.get_opt(&name).await.map_err(write)? {
            None => api.create(&PostParams::default(), &crd).await,
            Some(current) => {
                crd.metadata.resource_version = current.resource_version();
                api.replace(&name, &PostParams::default(), &crd).await
            }
        }
        .map_err(write)?;
        await_condition(api.clone(), &name, conditions::is_crd_established())
            .await
            .map_err(|source| InstallError::Wait {
                name: name.clone(),
                source,
            })?;
    }
    Ok(())
}
