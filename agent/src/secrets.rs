//! The values of a container's `secrets`, read when it starts from the
//! Secrets and ConfigMaps of its task's namespace, with the agent's own
//! token (which may read only what the tasks bound to it reference; see
//! apiserver/src/server/access.rs). Values go to the container's
//! environment and nowhere else: not the Task, its status, Events or logs.

use crds::v1alpha1::{ContainerDefinition, SecretSource};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use serde_json::Value;

use crate::runtime::RegistryLogin;

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

/// The variables of `def`'s `environmentFiles`, in order, or the reason
/// the task cannot start.
pub async fn environment_files(
    client: &kube::Client,
    namespace: &str,
    def: &ContainerDefinition,
) -> Result<Vec<(String, String)>, String> {
    let mut variables = Vec::new();
    for file in &def.environment_files {
        let Some((name, key)) = file.source() else {
            return Err(format!(
                "{FAILED}: environment file {:?} is not configmap:NAME:KEY",
                file.value
            ));
        };
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let object = fetch(&api, "configmap", name).await?;
        let Some(text) = object.data.and_then(|mut data| data.remove(key)) else {
            return Err(format!("{FAILED}: configmap {name:?} has no key {key:?}"));
        };
        variables.extend(crds::v1alpha1::EnvironmentFile::parse(&text));
    }
    Ok(variables)
}

/// ECS's stop reason prefix for registry credentials it cannot get.
const NO_LOGIN: &str = "ResourceInitializationError: unable to pull registry auth";

/// The login for `image`'s registry from `def`'s `repositoryCredentials`
/// (a `kubernetes.io/dockerconfigjson` Secret), if it names one.
pub async fn registry_login(
    client: &kube::Client,
    namespace: &str,
    def: &ContainerDefinition,
) -> Result<Option<RegistryLogin>, String> {
    let Some(credentials) = &def.repository_credentials else {
        return Ok(None);
    };
    let name = &credentials.credentials_parameter;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = fetch(&api, "secret", name)
        .await
        .map_err(|e| e.replacen(FAILED, NO_LOGIN, 1))?;
    let config: Value = secret
        .data
        .as_ref()
        .and_then(|data| data.get(".dockerconfigjson"))
        .and_then(|bytes| serde_json::from_slice(&bytes.0).ok())
        .ok_or_else(|| {
            format!("{NO_LOGIN}: secret {name:?} holds no .dockerconfigjson (type kubernetes.io/dockerconfigjson)")
        })?;
    let registry = registry_of(&def.image);
    login_for(&config, registry)
        .map(Some)
        .ok_or_else(|| format!("{NO_LOGIN}: secret {name:?} has no login for registry {registry}"))
}

/// The registry an image reference names: its first part when that looks
/// like a host (a dot, a port or `localhost`), else Docker Hub.
fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The login a docker config JSON holds for `registry`: `auths` keyed by
/// the host (or a URL naming it), with `username`/`password` or `auth`
/// (base64 `user:password`).
fn login_for(config: &Value, registry: &str) -> Option<RegistryLogin> {
    use base64::Engine;
    let hub = registry == "docker.io";
    let (_, entry) = config.get("auths")?.as_object()?.iter().find(|(key, _)| {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        host == registry || (hub && matches!(host, "index.docker.io" | "registry-1.docker.io"))
    })?;
    let text = |field: &str| entry.get(field).and_then(Value::as_str).map(str::to_owned);
    let (username, password) = match (text("username"), text("password")) {
        (Some(username), Some(password)) => (username, password),
        _ => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(text("auth")?)
                .ok()?;
            let pair = String::from_utf8(decoded).ok()?;
            let (username, password) = pair.split_once(':')?;
            (username.to_owned(), password.to_owned())
        }
    };
    Some(RegistryLogin {
        registry: registry.to_owned(),
        username,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_names_its_registry() {
        for (image, registry) in [
            ("busybox", "docker.io"),
            ("library/busybox:1", "docker.io"),
            ("registry.local/web:1.2", "registry.local"),
            ("127.0.0.1:5000/private/app:1", "127.0.0.1:5000"),
            ("localhost/app", "localhost"),
        ] {
            assert_eq!(registry_of(image), registry, "{image}");
        }
    }

    #[test]
    fn a_docker_config_gives_the_login_of_the_registry() {
        use base64::Engine;
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:pa:ss");
        let config = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"username": "hub", "password": "h"},
            "127.0.0.1:5000": {"auth": auth},
            "registry.local": {"username": "alice", "password": "a"},
        }});
        let login = |registry| login_for(&config, registry).map(|l| (l.username, l.password));
        assert_eq!(
            login("127.0.0.1:5000"),
            Some(("bob".into(), "pa:ss".into()))
        );
        assert_eq!(login("registry.local"), Some(("alice".into(), "a".into())));
        assert_eq!(login("docker.io"), Some(("hub".into(), "h".into())));
        assert_eq!(login("elsewhere.example"), None);
        let shown = format!("{:?}", login_for(&config, "registry.local"));
        assert!(!shown.contains("\"a\""), "no password in {shown}");
    }
}
