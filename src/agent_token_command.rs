//! `gantry agent-token`: issue, list and revoke the tokens agents
//! authenticate with, one per agent, each good for one ContainerInstance
//! name in one cluster (apiserver/src/agent_token.rs keeps the format;
//! apiserver/src/server/access.rs what such a token may do). A token is a
//! Secret in `kube-system`, so issuing, listing and revoking take an
//! identity that may touch Secrets (the admin kubeconfig).

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, bail};
use apiserver::agent_token::{self, AgentToken, Grant};
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    config::{AuthInfo, Kubeconfig, NamedAuthInfo},
};

#[derive(Debug, Args)]
pub struct AgentTokenArgs {
    #[command(subcommand)]
    action: Action,
    /// An admin kubeconfig [default: $KUBECONFIG or ~/.kube/config].
    #[arg(long, value_name = "FILE", global = true)]
    kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Issue a token for the agent of ContainerInstance NAME in a cluster;
    /// print it, or write a kubeconfig holding it.
    Create {
        /// The ContainerInstance name the agent registers as (its --name).
        #[arg(value_name = "NAME")]
        instance: String,
        /// The cluster (namespace) it joins (its --cluster).
        #[arg(long, value_name = "NAMESPACE", default_value = "default")]
        cluster: String,
        /// Write a kubeconfig for the agent here (mode 0600): the
        /// server and CA of --kubeconfig, with the new token.
        #[arg(long, value_name = "FILE")]
        write_kubeconfig: Option<PathBuf>,
    },
    /// List the agent tokens: id, cluster, instance and age.
    List {
        /// Only this cluster's.
        #[arg(long, value_name = "NAMESPACE")]
        cluster: Option<String>,
    },
    /// Revoke tokens by id: the agents holding them are refused from
    /// their next request on.
    Revoke {
        #[arg(value_name = "ID", required = true)]
        ids: Vec<String>,
    },
}

/// The Secrets that keep agent tokens.
fn secrets(client: &kube::Client) -> Api<Secret> {
    Api::namespaced(client.clone(), agent_token::NAMESPACE)
}

/// Issue a token for `grant`: store its Secret and hand it back.
///
/// # Errors
/// A name that is not a DNS subdomain, or the API refusing the Secret.
pub async fn issue(client: &kube::Client, grant: &Grant) -> anyhow::Result<AgentToken> {
    for (what, name) in [("instance", &grant.instance), ("cluster", &grant.cluster)] {
        let object = serde_json::json!({"metadata": {"name": name}});
        if let Some(problem) = apiserver::validate_object_name(&object).first() {
            bail!("the {what} name {name:?} is not valid: {}", problem.detail);
        }
    }
    let token = AgentToken::generate();
    let secret: Secret = serde_json::from_value(token.to_secret(grant))?;
    secrets(client)
        .create(&PostParams::default(), &secret)
        .await
        .context("storing the token's Secret")?;
    Ok(token)
}

/// Issue a token for `grant` in place of those issued for it before
/// (`gantry up` gives its agents new tokens at every start).
///
/// # Errors
/// As [`issue`], or when the old tokens cannot be listed or revoked.
pub async fn reissue(client: &kube::Client, grant: &Grant) -> anyhow::Result<AgentToken> {
    let api = secrets(client);
    for secret in api.list(&ListParams::default()).await?.items {
        let value = serde_json::to_value(&secret)?;
        if agent_token::recorded_grant(&value).as_ref() == Some(grant) {
            match api
                .delete(&secret.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e).context("revoking an older token"),
            }
        }
    }
    issue(client, grant).await
}

pub fn run(args: &AgentTokenArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let client = super::client(args.kubeconfig.as_ref()).await?;
        let mut out = io::stdout().lock();
        match &args.action {
            Action::Create {
                instance,
                cluster,
                write_kubeconfig,
            } => {
                let grant = Grant {
                    cluster: cluster.clone(),
                    instance: instance.clone(),
                };
                let token = issue(&client, &grant).await?;
                match write_kubeconfig {
                    Some(path) => {
                        let yaml = agent_kubeconfig(args.kubeconfig.as_deref(), &grant, &token)?;
                        apiserver::private::write(path, yaml.as_bytes())
                            .with_context(|| format!("writing {}", path.display()))?;
                        writeln!(
                            out,
                            "token {} for {instance} in cluster {cluster}: wrote {}",
                            token.id,
                            path.display()
                        )?;
                    }
                    None => writeln!(out, "{}", token.bearer())?,
                }
            }
            Action::List { cluster } => {
                let list = secrets(&client)
                    .list(&ListParams::default())
                    .await
                    .context("listing agent tokens")?;
                writeln!(
                    out,
                    "{:<8} {:<20} {:<30} CREATED",
                    "ID", "CLUSTER", "INSTANCE"
                )?;
                for secret in &list.items {
                    let value = serde_json::to_value(secret)?;
                    let Some(grant) = agent_token::recorded_grant(&value) else {
                        continue;
                    };
                    if cluster.as_ref().is_some_and(|c| *c != grant.cluster) {
                        continue;
                    }
                    let id = secret
                        .name_any()
                        .trim_start_matches(agent_token::SECRET_PREFIX)
                        .to_owned();
                    let created = secret
                        .creation_timestamp()
                        .map(|t| t.0.to_string())
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{id:<8} {:<20} {:<30} {created}",
                        grant.cluster, grant.instance
                    )?;
                }
            }
            Action::Revoke { ids } => {
                for id in ids {
                    let name = format!("{}{id}", agent_token::SECRET_PREFIX);
                    match secrets(&client)
                        .delete(&name, &DeleteParams::default())
                        .await
                    {
                        Ok(_) => writeln!(out, "token {id} revoked")?,
                        Err(kube::Error::Api(e)) if e.code == 404 => {
                            bail!("no agent token {id}")
                        }
                        Err(e) => return Err(e).context(format!("revoking token {id}")),
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// A kubeconfig for the agent: the current context's server and CA from
/// `admin` (or the environment's kubeconfig), with `token`.
///
/// # Errors
/// When the kubeconfig cannot be read or names no current cluster.
pub fn agent_kubeconfig(
    admin: Option<&Path>,
    grant: &Grant,
    token: &AgentToken,
) -> anyhow::Result<String> {
    let mut config = match admin {
        Some(path) => Kubeconfig::read_from(path)
            .with_context(|| format!("reading the kubeconfig {}", path.display()))?,
        None => Kubeconfig::read().context("reading the kubeconfig")?,
    };
    let current = config
        .current_context
        .clone()
        .context("the kubeconfig names no current context")?;
    let context = config
        .contexts
        .iter_mut()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_mut())
        .with_context(|| format!("the kubeconfig has no context {current:?}"))?;
    let user = format!("gantry-agent-{}", grant.instance);
    context.user = Some(user.clone());
    context.namespace = Some(grant.cluster.clone());
    let cluster = context.cluster.clone();
    config.clusters.retain(|c| c.name == cluster);
    config.contexts.retain(|c| c.name == current);
    config.auth_infos = vec![NamedAuthInfo {
        name: user,
        auth_info: Some(AuthInfo {
            token: Some(token.bearer().into()),
            ..AuthInfo::default()
        }),
        other: std::collections::BTreeMap::default(),
    }];
    serde_yaml::to_string(&config).context("writing the kubeconfig")
}
