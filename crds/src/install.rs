//! Writing Gantry's CRDs into a cluster, for `gantry up`, the test
//! harness and the benches (the Helm chart carries them as files).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, ResourceExt,
    api::PostParams,
    runtime::{conditions, wait::await_condition},
};

use crate::all;

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
