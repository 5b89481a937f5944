//! The values of a container's `secrets`, read when it starts from the
//! Secrets and ConfigMaps of its task's namespace, with the agent's own
//! token (which may read only what the tasks bound to it reference; see
//! apiserver/src/server/access.rs). Values go to the container's
//! environment and nowhere else: not the Task, its status, Events or logs.

use crds::v1alpha1::{ContainerDefinition, SecretSource};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;

/// ECS's stop reason prefix for what a task needs before it can start.
const FAILED: &str = "ResourceInitializationError: unable to retrieve secrets";

/// The `(name, value)` of each of `def`'s secrets, or the reason the task
/// cannot start (naming the object and key, never a value).
pub async fn resolve(
    client: &kube::Client,
    namespace: &str,
    def: &ContainerDefinition,
) -> Result<Vec<(String, String)>, String> {
    let mut values = Vec::with_capacity(def.secrets.len());
    for secret in &def.secrets {
        let Some((source, name, key)) = secret.source() else {
            return Err(format!(
                "{FAILED}: {}: valueFrom {:?} is not secret:NAME:KEY or configmap:NAME:KEY",
                secret.name, secret.value_from
            ));
        };
        let value = match source {
            SecretSource::Secret => {
                let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
                let object = fetch(&api, "secret", name).await?;
                object
                    .data
                    .and_then(|mut data| data.remove(key))
                    .map(|bytes| String::from_utf8(bytes.0).map_err(|_| "not UTF-8"))
            }
            SecretSource::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
                let object = fetch(&api, "configmap", name).await?;
                object.data.and_then(|mut data| data.remove(key)).map(Ok)
            }
        };
        let kind = match source {
            SecretSource::Secret => "secret",
            SecretSource::ConfigMap => "configmap",
        };
        match value {
            Some(Ok(value)) => values.push((secret.name.clone(), value)),
            Some(Err(why)) => {
                return Err(format!("{FAILED}: {kind} {name:?} key {key:?} is {why}"));
            }
            None => return Err(format!("{FAILED}: {kind} {name:?} has no key {key:?}")),
        }
    }
    Ok(values)
}

async fn fetch<K>(api: &Api<K>, kind: &str, name: &str) -> Result<K, String>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    match api.get_opt(name).await {
        Ok(Some(object)) => Ok(object),
        Ok(None) => Err(format!("{FAILED}: {kind} {name:?} does not exist")),
        Err(kube::Error::Api(e)) => Err(format!(
            "{FAILED}: {kind} {name:?} could not be read: {}",
            e.message
        )),
        Err(e) => Err(format!("{FAILED}: {kind} {name:?} could not be read: {e}")),
    }
}
