//! The embedded control plane through the real kube-rs client: TLS, tokens,
//! discovery, CRUD with resourceVersion preconditions, CRDs with schema
//! and CEL validation, watches that resume or get 410.

use std::{net::SocketAddr, path::Path, time::Duration};

use apiserver::{
    server::{Config, Server},
    storage::Options,
};
use crds::v1alpha1::{Service, TaskDefinition, TaskDefinitionStatus};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Namespace, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Error,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt, conditions, wait::await_condition, watcher},
};
use serde_json::json;

async fn start(dir: &Path, store: Options) -> Server {
    Server::start(Config {
        store,
        ..Config::local(dir)
    })
    .await
    .expect("server starts")
}

async fn client_from(kubeconfig_yaml: &str) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig_yaml).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

async fn admin(server: &Server) -> Client {
    let yaml = std::fs::read_to_string(&server.kubeconfig).expect("kubeconfig written");
    client_from(&yaml).await
}

fn config_map(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "data": {"key": value}
    }))
    .expect("config map")
}

fn api_code(err: &Error) -> Option<u16> {
    match err {
        Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[tokio::test]
async fn kube_rs_creates_reads_updates_and_deletes_with_preconditions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Options::default()).await;
    let api: Api<ConfigMap> = Api::namespaced(admin(&server).await, "default");

    let created = api
        .create(&PostParams::default(), &config_map("a", "1"))
        .await
        .expect("created");
    let meta = &created.metadata;
    assert!(
        meta.uid.is_some() && meta.creation_timestamp.is_some() && meta.resource_version.is_some()
    );
    let err = api
        .create(&PostParams::default(), &config_map("a", "1"))
        .await
        .expect_err("exists");
    assert_eq!(api_code(&err), Some(409));

    api.create(&PostParams::default(), &config_map("b", "1"))
        .await
        .expect("created");
    let listed = api
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("listed");
    assert_eq!(listed.items.len(), 2);
    let none = api
        .list(&ListParams::default().labels("app=db"))
        .await
        .expect("listed");
    assert!(none.items.is_empty());

    // A replace against a stale resourceVersion is a 409 Conflict.
    let mut fresh = api.get("a").await.expect("got");
    fresh.data = Some([("key".to_owned(), "2".to_owned())].into());
    let replaced = api
        .replace("a", &PostParams::default(), &fresh)
        .await
        .expect("replaced");
    let err = api
        .replace("a", &PostParams::default(), &fresh)
        .await
        .expect_err("stale");
    assert_eq!(api_code(&err), Some(409));
    assert_ne!(
        replaced.metadata.resource_version,
        fresh.metadata.resource_version
    );

    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"other": "x"}})),
        )
        .await
        .expect("patched");
    assert_eq!(
        patched.data.expect("data").get("other").map(String::as_str),
        Some("x")
    );

    // A merge patch naming a resourceVersion is conditional on it.
    let stale = patched.metadata.resource_version.clone().expect("rv");
    let current = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": stale}, "data": {"n": "1"}})),
        )
        .await
        .expect("patched at the version read");
    let err = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": stale}, "data": {"n": "2"}})),
        )
        .await
        .expect_err("stale");
    assert_eq!(api_code(&err), Some(409));
    let unchanged = api.get("a").await.expect("got");
    assert_eq!(
        unchanged.metadata.resource_version,
        current.metadata.resource_version
    );
    assert_eq!(
        unchanged.data.expect("data").get("n").map(String::as_str),
        Some("1")
    );

    api.delete("a", &DeleteParams::default())
        .await
        .expect("deleted");
    assert_eq!(api_code(&api.get("a").await.expect_err("gone")), Some(404));

    // A namespace that does not exist is a 404 on create.
    let elsewhere: Api<ConfigMap> = Api::namespaced(admin(&server).await, "nowhere");
    let err = elsewhere
        .create(&PostParams::default(), &config_map("c", "1"))
        .await
        .expect_err("no ns");
    assert_eq!(api_code(&err), Some(404));
    server.shutdown().await;
}

async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds::all() {
        let name = crd.metadata.name.clone().expect("named");
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD created");
        tokio::time::timeout(
            Duration::from_secs(10),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .expect("established in time")
        .expect("watch ok");
    }
}

fn web_task_definition() -> TaskDefinition {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/web.yaml"))
            .expect("example");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| <serde_yaml::Value as serde::Deserialize>::deserialize(d).expect("YAML"))
        .find(|d| d["kind"] == "TaskDefinition")
        .map(|d| serde_yaml::from_value(d).expect("a TaskDefinition"))
        .expect("the example has a TaskDefinition")
}

#[tokio::test]
async fn crds_serve_gantry_kinds_with_validation_and_generations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Options::default()).await;
    let client = admin(&server).await;
    install_crds(&client).await;

    let api: Api<TaskDefinition> = Api::namespaced(client.clone(), "default");
    let created = api
        .create(&PostParams::default(), &web_task_definition())
        .await
        .expect("created");
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        created.spec.container_definitions[0].stop_timeout, 30,
        "schema defaults applied"
    );

    refuses_invalid_task_definitions(&api).await;
    let stale = counts_generations_of_spec_changes_only(&api, created).await;
    refuses_stale_resource_versions(&api, stale).await;
    discovers_gantry_kinds(&client).await;

    // After a restart, the CRDs are served again and the objects are there.
    server.shutdown().await;
    let server = start(dir.path(), Options::default()).await;
    let api: Api<TaskDefinition> = Api::namespaced(admin(&server).await, "default");
    assert_eq!(
        api.get("web").await.expect("kept").metadata.generation,
        Some(2)
    );
    server.shutdown().await;
}

/// Invalid objects are refused with every field named.
async fn refuses_invalid_task_definitions(api: &Api<TaskDefinition>) {
    let mut bad = web_task_definition();
    bad.metadata.name = Some("bad".into());
    bad.spec.container_definitions[0].memory_reservation = Some(500);
    bad.spec.container_definitions[0].name = "Web".into();
    let err = api
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("invalid");
    let Error::Api(status) = err else {
        panic!("an API error")
    };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status.message.contains("spec.containerDefinitions[0].name"),
        "{}",
        status.message
    );
}

/// A spec change is a new generation; a status change is not. Returns
/// the resourceVersion the status was written at.
async fn counts_generations_of_spec_changes_only(
    api: &Api<TaskDefinition>,
    created: TaskDefinition,
) -> Option<String> {
    let mut next = created.clone();
    next.spec.container_definitions[0].image = "gantry-examples/web:2".into();
    let updated = api
        .replace("web", &PostParams::default(), &next)
        .await
        .expect("replaced");
    assert_eq!(updated.metadata.generation, Some(2));
    let mut with_status = updated.clone();
    with_status.status = Some(TaskDefinitionStatus {
        observed_generation: Some(2),
        revision: Some(2),
        conditions: vec![],
    });
    let status_written = api
        .replace_status("web", &PostParams::default(), &with_status)
        .await
        .expect("status replaced");
    assert_eq!(status_written.metadata.generation, Some(2));
    assert_eq!(status_written.status.and_then(|s| s.revision), Some(2));
    // The main endpoint leaves status alone.
    let mut cleared = api.get("web").await.expect("got");
    cleared.status = None;
    let kept = api
        .replace("web", &PostParams::default(), &cleared)
        .await
        .expect("replaced");
    assert_eq!(kept.status.and_then(|s| s.revision), Some(2));
    status_written.metadata.resource_version
}

/// A status patch naming a stale resourceVersion is refused, as
/// schedulers' reservations rely on.
async fn refuses_stale_resource_versions(api: &Api<TaskDefinition>, stale: Option<String>) {
    api.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"resourceVersion": stale}, "status": {"revision": 3}})),
    )
    .await
    .expect("patched at the version read");
    let err = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"resourceVersion": stale}, "status": {"revision": 7}}),
            ),
        )
        .await
        .expect_err("stale");
    assert_eq!(api_code(&err), Some(409));
    // Stale and invalid: the stale version is what the writer must hear
    // of (it would not have made this change on the current object).
    let err = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": stale}, "spec": {"containerDefinitions": []}})),
        )
        .await
        .expect_err("stale");
    assert_eq!(api_code(&err), Some(409));
}

/// Discovery lists the new kinds with their short names.
async fn discovers_gantry_kinds(client: &Client) {
    let resources = client
        .list_api_group_resources("gantry.dev/v1alpha1")
        .await
        .expect("discovery");
    let td = resources
        .resources
        .iter()
        .find(|r| r.name == "taskdefinitions")
        .expect("served");
    assert_eq!(
        td.short_names.as_deref(),
        Some(&["td".to_owned(), "taskdef".to_owned()][..])
    );
    assert!(
        resources
            .resources
            .iter()
            .any(|r| r.name == "services/status")
    );
}

#[tokio::test]
async fn tokens_are_required_and_the_read_only_one_cannot_write_or_read_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Options::default()).await;

    let anonymous = client_from(&server.kubeconfig_for("not-a-token")).await;
    let api: Api<ConfigMap> = Api::namespaced(anonymous, "default");
    assert_eq!(
        api_code(&api.list(&ListParams::default()).await.expect_err("401")),
        Some(401)
    );

    let secrets: Api<Secret> = Api::namespaced(admin(&server).await, "default");
    for name in ["a", "b", "c"] {
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("secret");
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("created");
    }

    let reader = client_from(&server.kubeconfig_for(&server.credentials.read_only_token)).await;
    let api: Api<ConfigMap> = Api::namespaced(reader.clone(), "default");
    api.list(&ListParams::default()).await.expect("reads");
    let err = api
        .create(&PostParams::default(), &config_map("x", "1"))
        .await
        .expect_err("403");
    assert_eq!(api_code(&err), Some(403));

    // As Kubernetes' view role: everything but Secrets.
    let namespaced: Api<Secret> = Api::namespaced(reader.clone(), "default");
    let everywhere: Api<Secret> = Api::all(reader);
    let refusals = [
        namespaced.get("b").await.map(drop),
        namespaced.list(&ListParams::default()).await.map(drop),
        everywhere.list(&ListParams::default()).await.map(drop),
        namespaced
            .watch(&WatchParams::default(), "0")
            .await
            .map(drop),
    ];
    for refusal in refusals {
        assert_eq!(api_code(&refusal.expect_err("refused")), Some(403));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_and_malformed_bodies_are_refused_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Options::default()).await;
    let client = admin(&server).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let huge = config_map("huge", &"x".repeat(4 * 1024 * 1024));
    let err = api
        .create(&PostParams::default(), &huge)
        .await
        .expect_err("too large");
    assert_eq!(api_code(&err), Some(413));

    let request = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(b"{\"metadata\": {".to_vec())
        .expect("request");
    let err = client.request::<ConfigMap>(request).await.expect_err("400");
    assert_eq!(api_code(&err), Some(400));
    assert!(
        api.list(&ListParams::default())
            .await
            .expect("listed")
            .items
            .is_empty(),
        "nothing half-written"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn watches_follow_changes_and_old_revisions_are_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        dir.path(),
        Options {
            event_window: 20,
            ..Options::default()
        },
    )
    .await;
    let client = admin(&server).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // The kube-rs watcher (list then watch) sees what happens.
    let mut stream = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    api.create(&PostParams::default(), &config_map("w", "1"))
        .await
        .expect("created");
    let seen = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("an object");
    assert_eq!(seen.metadata.name.as_deref(), Some("w"));
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"key": "2"}})),
    )
    .await
    .expect("patched");
    let seen = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("an object");
    assert_eq!(
        seen.data.and_then(|d| d.get("key").cloned()).as_deref(),
        Some("2")
    );

    // A raw watch from a revision older than the log gets a 410 event.
    for i in 0..40 {
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"n": i.to_string()}})),
        )
        .await
        .expect("patched");
    }
    let mut raw = api
        .watch(&WatchParams::default(), "1")
        .await
        .expect("watch opens")
        .boxed();
    match tokio::time::timeout(Duration::from_secs(10), raw.next())
        .await
        .expect("in time")
    {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!(e.code, 410),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // The kube-rs watcher recovers by listing again.
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"key": "3"}})),
    )
    .await
    .expect("patched");
    let value = loop {
        let seen = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .expect("in time")
            .expect("ok")
            .expect("an object");
        if seen
            .data
            .as_ref()
            .and_then(|d| d.get("key"))
            .map(String::as_str)
            == Some("3")
        {
            break "3";
        }
    };
    assert_eq!(value, "3");
    server.shutdown().await;
}

#[tokio::test]
async fn a_chunked_list_then_watch_misses_nothing_created_between_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        dir.path(),
        Options {
            event_window: 20,
            ..Options::default()
        },
    )
    .await;
    let client = admin(&server).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for name in ["b", "c", "d"] {
        api.create(&PostParams::default(), &config_map(name, "1"))
            .await
            .expect("created");
    }
    let first = api
        .list(&ListParams::default().limit(2))
        .await
        .expect("first page");
    let names = |list: &kube::api::ObjectList<ConfigMap>| -> Vec<String> {
        list.items
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect()
    };
    assert_eq!(names(&first), ["b", "c"]);
    let revision = first.metadata.resource_version.clone().expect("a revision");
    let token = first.metadata.continue_.clone().expect("a continue token");

    // Created behind the cursor while the list is paged: the next page
    // cannot show it, so it must report the first page's revision for a
    // watch from there to deliver it.
    api.create(&PostParams::default(), &config_map("a", "1"))
        .await
        .expect("created");
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("second page");
    assert_eq!(names(&second), ["d"]);
    assert_eq!(second.metadata.resource_version.as_ref(), Some(&revision));
    let mut raw = api
        .watch(&WatchParams::default(), &revision)
        .await
        .expect("watch opens")
        .boxed();
    match tokio::time::timeout(Duration::from_secs(10), raw.next())
        .await
        .expect("in time")
    {
        Some(Ok(WatchEvent::Added(cm))) => assert_eq!(cm.metadata.name.as_deref(), Some("a")),
        other => panic!("expected the ADDED event of a, got {other:?}"),
    }

    // Once the log has moved past the first page, the token has expired.
    for i in 0..40 {
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"n": i.to_string()}})),
        )
        .await
        .expect("patched");
    }
    let expired = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect_err("an expired token");
    assert_eq!(api_code(&expired), Some(410));
    server.shutdown().await;
}

#[tokio::test]
async fn server_side_apply_owns_fields_refuses_conflicts_and_yields_to_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Options::default()).await;
    let client = admin(&server).await;
    install_crds(&client).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let service = |count: i32| {
        json!({"apiVersion": "gantry.dev/v1alpha1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"taskDefinition": "web", "desiredCount": count}})
    };

    let created = api
        .patch(
            "web",
            &PatchParams::apply("alice"),
            &Patch::Apply(service(2)),
        )
        .await
        .expect("apply creates");
    let managers: Vec<_> = created
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| (m.manager.clone(), m.operation.clone()))
        .collect();
    assert_eq!(managers, [(Some("alice".into()), Some("Apply".into()))]);

    // Another manager may not change alice's desiredCount...
    let err = api
        .patch("web", &PatchParams::apply("bob"), &Patch::Apply(service(3)))
        .await
        .expect_err("conflict");
    let Error::Api(status) = err else {
        panic!("an API error")
    };
    assert_eq!(status.code, 409);
    assert!(
        status.message.contains("conflict with \"alice\""),
        "{}",
        status.message
    );
    // ...but may share it at the same value, or take it by force.
    api.patch("web", &PatchParams::apply("bob"), &Patch::Apply(service(2)))
        .await
        .expect("same value is shared");
    let forced = api
        .patch(
            "web",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(service(5)),
        )
        .await
        .expect("forced");
    assert_eq!(forced.spec.desired_count, Some(5));

    // A controller applies status without touching the spec's generation.
    let generation = forced.metadata.generation;
    let status = json!({"apiVersion": "gantry.dev/v1alpha1", "kind": "Service", "metadata": {"name": "web"},
                        "status": {"runningCount": 1, "desiredCount": 5}});
    let with_status = api
        .patch_status(
            "web",
            &PatchParams::apply("gantry-controller"),
            &Patch::Apply(status),
        )
        .await
        .expect("status applied");
    assert_eq!(with_status.status.map(|s| s.running_count), Some(1));
    assert_eq!(with_status.metadata.generation, generation);
    assert_eq!(with_status.spec.desired_count, Some(5));
    server.shutdown().await;
}

fn owned_config_map(name: &str, owner: &ConfigMap) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap",
            "name": owner.metadata.name, "uid": owner.metadata.uid
        }]},
        "data": {"key": "x"}
    }))
    .expect("config map")
}

#[tokio::test]
async fn deleting_an_owner_collects_orphans_or_waits_for_its_dependents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Options::default()).await;
    let client = admin(&server).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    // Background (the default): the dependents follow the owner.
    let owner = api
        .create(&pp, &config_map("owner", "1"))
        .await
        .expect("created");
    api.create(&pp, &owned_config_map("child", &owner))
        .await
        .expect("created");
    api.delete("owner", &DeleteParams::default())
        .await
        .expect("deleted");
    let collected = async {
        while api.get_opt("child").await.expect("get").is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), collected)
        .await
        .expect("the dependent is collected");

    // Foreground: dependents (and theirs) are gone when the owner is.
    let owner = api
        .create(&pp, &config_map("owner", "1"))
        .await
        .expect("created");
    let child = api
        .create(&pp, &owned_config_map("child", &owner))
        .await
        .expect("created");
    api.create(&pp, &owned_config_map("grandchild", &child))
        .await
        .expect("created");
    api.delete("owner", &DeleteParams::foreground())
        .await
        .expect("deleted");
    assert!(api.get_opt("child").await.expect("get").is_none());
    assert!(api.get_opt("grandchild").await.expect("get").is_none());

    // Orphan: the dependent stays, without the owner reference.
    let owner = api
        .create(&pp, &config_map("owner", "1"))
        .await
        .expect("created");
    api.create(&pp, &owned_config_map("child", &owner))
        .await
        .expect("created");
    api.delete("owner", &DeleteParams::orphan())
        .await
        .expect("deleted");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let kept = api.get("child").await.expect("orphan kept");
    assert!(
        kept.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );

    // Deleting a namespace deletes what is in it.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let team: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "team"}})).expect("ns");
    namespaces.create(&pp, &team).await.expect("created");
    let in_team: Api<ConfigMap> = Api::namespaced(client, "team");
    in_team
        .create(&pp, &config_map("a", "1"))
        .await
        .expect("created");
    namespaces
        .delete("team", &DeleteParams::default())
        .await
        .expect("deleted");
    assert!(in_team.get_opt("a").await.expect("get").is_none());
    assert!(namespaces.get_opt("team").await.expect("get").is_none());
    server.shutdown().await;
}

/// The name of the next object a watcher yields.
async fn next_name(
    stream: &mut futures::stream::BoxStream<'static, Result<ConfigMap, watcher::Error>>,
) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(20), stream.try_next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("an object")
        .metadata
        .name
}

#[tokio::test]
async fn a_kube_rs_watcher_resumes_across_a_server_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The same port before and after, as a restarted server would have.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("address")
        .port();
    let config = || Config {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        ..Config::local(dir.path())
    };
    let server = Server::start(config()).await.expect("starts");
    let api: Api<ConfigMap> = Api::namespaced(admin(&server).await, "default");
    let mut stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    api.create(&PostParams::default(), &config_map("before", "1"))
        .await
        .expect("created");
    assert_eq!(next_name(&mut stream).await.as_deref(), Some("before"));

    server.shutdown().await;
    let server = Server::start(config()).await.expect("restarts");
    api.create(&PostParams::default(), &config_map("after", "1"))
        .await
        .expect("created");
    let mut seen = next_name(&mut stream).await;
    // A watcher that re-lists sees "before" again first; it then follows.
    if seen.as_deref() == Some("before") {
        seen = next_name(&mut stream).await;
    }
    assert_eq!(seen.as_deref(), Some("after"));
    server.shutdown().await;
}

/// A raw GET through the client's TLS and token, for what kube-rs has no
/// typed call for.
async fn raw(client: &Client, request: http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
    let (parts, body) = request.into_parts();
    let request = http::Request::from_parts(parts, kube::client::Body::from(body));
    let response = client.send(request).await.expect("answered");
    let (parts, body) = response.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .expect("body read")
        .to_bytes()
        .to_vec();
    http::Response::from_parts(parts, body)
}

fn json_of(response: &http::Response<Vec<u8>>) -> serde_json::Value {
    serde_json::from_slice(response.body()).expect("a JSON body")
}

#[tokio::test]
async fn aggregated_discovery_and_openapi_v2_describe_the_crds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Options::default()).await;
    let client = admin(&server).await;
    install_crds(&client).await;

    let accept =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let request = |path: &str| {
        http::Request::get(path)
            .header("Accept", accept)
            .body(Vec::new())
            .expect("request")
    };
    let apis = raw(&client, request("/apis")).await;
    assert_eq!(
        apis.headers()["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        "clients read the document as aggregated only with this type"
    );
    let apis = json_of(&apis);
    assert_eq!(apis["kind"], "APIGroupDiscoveryList");
    let gantry = apis["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|group| group["metadata"]["name"] == "gantry.dev")
        .expect("gantry.dev discovered");
    let resources = gantry["versions"][0]["resources"]
        .as_array()
        .expect("resources");
    let services = resources
        .iter()
        .find(|r| r["resource"] == "services")
        .expect("services");
    assert_eq!(services["scope"], "Namespaced");
    assert_eq!(services["responseKind"]["kind"], "Service");
    assert_eq!(services["shortNames"], json!(["gsvc", "ecssvc"]));
    let subresources: Vec<&str> = services["subresources"]
        .as_array()
        .expect("subresources")
        .iter()
        .filter_map(|s| s["subresource"].as_str())
        .collect();
    assert_eq!(subresources, ["status", "scale"]);

    let core = json_of(&raw(&client, request("/api")).await);
    let core_resources = core["items"][0]["versions"][0]["resources"]
        .as_array()
        .expect("core resources");
    assert!(
        core_resources
            .iter()
            .any(|r| r["resource"] == "namespaces" && r["scope"] == "Cluster")
    );
    // Without the aggregated media type, the legacy list is what comes.
    let legacy = raw(
        &client,
        http::Request::get("/apis")
            .body(Vec::new())
            .expect("request"),
    )
    .await;
    assert_eq!(json_of(&legacy)["kind"], "APIGroupList");

    let v2 = raw(
        &client,
        http::Request::get("/openapi/v2")
            .header("Accept", "application/json")
            .body(Vec::new())
            .expect("request"),
    )
    .await;
    assert_eq!(v2.status(), 200);
    let v2 = json_of(&v2);
    assert_eq!(v2["swagger"], "2.0");
    let definition = &v2["definitions"]["dev.gantry.v1alpha1.TaskDefinition"];
    assert!(
        definition["properties"]["spec"]["properties"]["containerDefinitions"].is_object(),
        "the CRD schema is the definition: {definition}"
    );
    let create =
        &v2["paths"]["/apis/gantry.dev/v1alpha1/namespaces/{namespace}/taskdefinitions"]["post"];
    let body = create["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["in"] == "body")
        .expect("a body parameter");
    assert_eq!(
        body["schema"]["$ref"],
        "#/definitions/dev.gantry.v1alpha1.TaskDefinition"
    );
    let protobuf_only = raw(
        &client,
        http::Request::get("/openapi/v2")
            .header(
                "Accept",
                "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
            )
            .body(Vec::new())
            .expect("request"),
    )
    .await;
    assert_eq!(protobuf_only.status(), 406);
}

#[tokio::test]
async fn dry_runs_write_nothing_and_dropped_fields_are_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Options::default()).await;
    let client = admin(&server).await;
    install_crds(&client).await;
    let api: Api<TaskDefinition> = Api::namespaced(client.clone(), "default");
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };

    let answered = api
        .create(&dry, &web_task_definition())
        .await
        .expect("a dry-run create is admitted");
    assert_eq!(
        answered.spec.container_definitions[0].stop_timeout, 30,
        "defaults are applied as for a real create"
    );
    assert!(
        api.get_opt("web").await.expect("get").is_none(),
        "nothing stored"
    );
    let mut invalid = web_task_definition();
    invalid.spec.container_definitions[0].memory_reservation = Some(500);
    let err = api
        .create(&dry, &invalid)
        .await
        .expect_err("still validated");
    assert_eq!(api_code(&err), Some(422));

    let created = api
        .create(&PostParams::default(), &web_task_definition())
        .await
        .expect("created");
    let revision = created.metadata.resource_version.clone();
    let patch = Patch::Merge(json!({"spec": {"cpu": 4096}}));
    let patched = api
        .patch("web", &PatchParams::default().dry_run(), &patch)
        .await
        .expect("dry-run patch");
    assert_eq!(patched.spec.cpu, Some(4096));
    let stored = api.get("web").await.expect("get");
    assert_eq!(stored.metadata.resource_version, revision, "not written");
    assert_ne!(stored.spec.cpu, Some(4096));
    api.delete(
        "web",
        &DeleteParams {
            dry_run: true,
            ..DeleteParams::default()
        },
    )
    .await
    .expect("dry-run delete");
    assert!(
        api.get_opt("web").await.expect("get").is_some(),
        "still there"
    );

    // An undeclared field is dropped with a warning (the default), or
    // refused with fieldValidation=Strict.
    let mut object = serde_json::to_value(web_task_definition()).expect("json");
    object["metadata"]["name"] = json!("extra");
    object["spec"]["colour"] = json!("blue");
    let post = |validation: &str| {
        http::Request::post(format!(
            "/apis/gantry.dev/v1alpha1/namespaces/default/taskdefinitions{validation}"
        ))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&object).expect("body"))
        .expect("request")
    };
    let strict = raw(&client, post("?fieldValidation=Strict")).await;
    assert_eq!(strict.status(), 400);
    assert!(
        String::from_utf8_lossy(strict.body()).contains(r#"unknown field \"spec.colour\""#),
        "{}",
        String::from_utf8_lossy(strict.body())
    );
    let warned = raw(&client, post("")).await;
    assert_eq!(warned.status(), 201);
    let warnings: Vec<&str> = warned
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(warnings, [r#"299 - "unknown field \"spec.colour\"""#]);
    assert!(json_of(&warned)["spec"].get("colour").is_none(), "pruned");
    let bad_option = raw(&client, post("?dryRun=Some")).await;
    assert_eq!(bad_option.status(), 400);
}

/// A request with a JSON body, for what kube-rs' typed calls would never
/// send.
fn with_body(method: &str, uri: &str, content_type: &str, body: &str) -> http::Request<Vec<u8>> {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(body.as_bytes().to_vec())
        .expect("request")
}

#[tokio::test]
async fn bodies_that_are_not_objects_get_a_status_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Options::default()).await;
    let client = admin(&server).await;
    install_crds(&client).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for name in ["a", "target", "z"] {
        maps.create(&PostParams::default(), &config_map(name, name))
            .await
            .expect("created");
    }
    let before = maps.get("target").await.expect("stored");
    let collection = "/api/v1/namespaces/default/configmaps";
    let one = "/api/v1/namespaces/default/configmaps/target";
    let json = "application/json";
    let merge = "application/merge-patch+json";
    let cases = [
        ("POST", collection, json, "[1]", 400),
        ("POST", collection, json, "\"x\"", 400),
        ("POST", collection, json, "null", 400),
        ("POST", collection, json, r#"{"metadata": "x"}"#, 400),
        ("POST", collection, json, r#"{"metadata": [1]}"#, 400),
        ("PUT", one, json, r#"{"metadata": 7}"#, 400),
        ("PATCH", one, merge, "[1]", 400),
        ("PATCH", one, merge, "\"x\"", 400),
        ("PATCH", one, merge, r#"{"metadata": "x"}"#, 400),
        (
            "PATCH",
            one,
            "application/json-patch+json",
            r#"[{"op": "replace", "path": "", "value": [1]}]"#,
            400,
        ),
    ];
    for (method, uri, content_type, body, code) in cases {
        let response = raw(&client, with_body(method, uri, content_type, body)).await;
        assert_eq!(response.status(), code, "{method} {body}");
        let status = json_of(&response);
        assert_eq!(status["kind"], "Status", "{method} {body}: {status}");
        assert_eq!(status["code"], code);
    }
    // A JSON patch whose operations nest an object deeper than the store
    // can read back (the body itself stays shallow) is refused whole (400),
    // as is one of more operations than kube-apiserver allows (413).
    let mut path = "/data".to_owned();
    let deep: Vec<_> = (0..150)
        .map(|i| {
            path.push_str(if i == 0 { "/x" } else { "/a" });
            json!({"op": "add", "path": path.clone(), "value": {}})
        })
        .collect();
    let too_many = vec![json!({"op": "test", "path": "/data/k", "value": "target"}); 10_001];
    for (ops, code, said) in [(deep, 400, "levels deep"), (too_many, 413, "10000")] {
        let body = json!(ops).to_string();
        let request = with_body("PATCH", one, "application/json-patch+json", &body);
        let refused = raw(&client, request).await;
        assert_eq!(refused.status(), code);
        let message = json_of(&refused)["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(said), "{message}");
    }

    // Every connection was answered and the server still serves; nothing
    // was half-written.
    let after = maps.get("target").await.expect("still served");
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(
        maps.list(&ListParams::default())
            .await
            .expect("listed")
            .items
            .len(),
        3
    );

    // Strategic merge: built-in kinds take it; custom resources have no
    // patch strategies, so kube-apiserver answers 415.
    let strategic = "application/strategic-merge-patch+json";
    let patched = raw(
        &client,
        with_body("PATCH", one, strategic, r#"{"data": {"more": "1"}}"#),
    )
    .await;
    assert_eq!(patched.status(), 200);
    let tds: Api<TaskDefinition> = Api::namespaced(client.clone(), "default");
    tds.create(&PostParams::default(), &web_task_definition())
        .await
        .expect("created");
    let custom = "/apis/gantry.dev/v1alpha1/namespaces/default/taskdefinitions/web";
    let refused = raw(
        &client,
        with_body("PATCH", custom, strategic, r#"{"spec": {"cpu": 256}}"#),
    )
    .await;
    assert_eq!(refused.status(), 415);
    assert_eq!(json_of(&refused)["kind"], "Status");

    // A watch timeout too large to add to the clock still watches.
    let watch = http::Request::get(format!("{collection}?watch=1&timeoutSeconds={}", u64::MAX))
        .body(Vec::new())
        .expect("request");
    let (parts, body) = watch.into_parts();
    let request = http::Request::from_parts(parts, kube::client::Body::from(body));
    let response = client.send(request).await.expect("answered");
    assert_eq!(response.status(), 200);
    drop(response);
    maps.get("target").await.expect("still served");
    server.shutdown().await;
}

#[tokio::test]
async fn an_unchanged_update_or_apply_keeps_the_resource_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Options::default()).await;
    let client = admin(&server).await;
    install_crds(&client).await;
    let tds: Api<TaskDefinition> = Api::namespaced(client.clone(), "default");
    // The manifest as written: without the defaults the server fills in
    // (stopTimeout, essential, networkMode).
    let manifest = |name: &str| {
        json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "TaskDefinition",
            "metadata": {"name": name},
            "spec": {"containerDefinitions": [{"name": "web", "image": "web:1", "memory": 64}]},
        })
    };
    for name in ["a", "web", "z"] {
        let td: TaskDefinition = serde_json::from_value(manifest(name)).expect("a definition");
        tds.create(&PostParams::default(), &td)
            .await
            .expect("created");
    }
    let stored = tds.get("web").await.expect("stored");
    let manifest = manifest("web");
    let unchanged =
        |td: &TaskDefinition| (td.metadata.resource_version.clone(), td.metadata.generation);
    let merged = tds
        .patch("web", &PatchParams::default(), &Patch::Merge(&manifest))
        .await
        .expect("merge patch");
    assert_eq!(
        unchanged(&merged),
        unchanged(&stored),
        "merge patch of the same spec"
    );
    let ssa = PatchParams::apply("tests").force();
    let applied = tds
        .patch("web", &ssa, &Patch::Apply(&manifest))
        .await
        .expect("first apply");
    let again = tds
        .patch("web", &ssa, &Patch::Apply(&manifest))
        .await
        .expect("second apply");
    assert_eq!(
        unchanged(&again),
        unchanged(&applied),
        "the same apply again"
    );
    assert_eq!(applied.metadata.generation, stored.metadata.generation);

    // A real change still counts.
    let mut changed = manifest.clone();
    changed["spec"]["cpu"] = json!(256);
    let bumped = tds
        .patch("web", &ssa, &Patch::Apply(&changed))
        .await
        .expect("a change");
    assert_eq!(
        bumped.metadata.generation,
        stored.metadata.generation.map(|g| g + 1)
    );
    assert_ne!(
        bumped.metadata.resource_version,
        again.metadata.resource_version
    );
    server.shutdown().await;
}

/// The names of `items`, sorted.
fn sorted_names<K: kube::ResourceExt>(items: &[K]) -> Vec<String> {
    let mut names: Vec<String> = items.iter().map(kube::ResourceExt::name_any).collect();
    names.sort();
    names
}

#[tokio::test]
async fn namespaces_and_secrets_are_written_as_kube_apiserver_writes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Options::default()).await;
    let client = admin(&server).await;

    // A namespace: its name as a label, Active, the kubernetes finalizer.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for name in ["alpha", "prod", "zeta"] {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("created");
    }
    let prod = namespaces.get("prod").await.expect("stored");
    let labels = prod.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("prod")
    );
    assert_eq!(prod.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    assert_eq!(
        prod.spec.and_then(|s| s.finalizers),
        Some(vec!["kubernetes".to_owned()])
    );
    let selected = namespaces
        .list(&ListParams::default().labels("kubernetes.io/metadata.name=prod"))
        .await
        .expect("listed");
    assert_eq!(selected.items.len(), 1);

    // A Secret's stringData is folded into data and never stored.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "prod");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds"},
        "data": {"user": "YWRtaW4=", "password": "b2xk"},
        "stringData": {"password": "s3cret"},
    }))
    .expect("secret");
    let stored = secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("created");
    let data = stored.data.expect("data");
    assert_eq!(data["user"].0, b"admin");
    assert_eq!(data["password"].0, b"s3cret", "stringData wins");
    assert!(stored.string_data.is_none());

    server.shutdown().await;
}

#[tokio::test]
async fn delete_collection_deletes_the_selected_and_a_built_in_delete_answers_a_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Options::default()).await;
    let client = admin(&server).await;
    // Delete-collection by label, in a namespace holding others; a
    // built-in object deleted outright is answered with a Status.
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for (name, app) in [("a", "web"), ("b", "other"), ("c", "web"), ("d", "other")] {
        let mut map = config_map(name, name);
        map.metadata.labels = Some([("app".to_owned(), app.to_owned())].into());
        maps.create(&PostParams::default(), &map)
            .await
            .expect("created");
    }
    let deleted = maps
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=web"),
        )
        .await
        .expect("deleted")
        .left()
        .expect("the deleted objects");
    assert_eq!(sorted_names(&deleted.items), ["a", "c"]);
    let left = maps.list(&ListParams::default()).await.expect("listed");
    assert_eq!(sorted_names(&left.items), ["b", "d"]);
    let answer = maps
        .delete("b", &DeleteParams::default())
        .await
        .expect("deleted");
    let status = answer.right().expect("a Status, not the object");
    assert_eq!(status.details.map(|d| d.name), Some("b".to_owned()));

    server.shutdown().await;
}

#[tokio::test]
async fn undecodable_built_ins_and_unknown_subresources_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Options::default()).await;
    let client = admin(&server).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    // What a typed client could not read back is refused, naming the
    // field; nothing is stored.
    for (collection, body, field) in [
        (
            "/api/v1/namespaces/default/configmaps",
            r#"{"metadata": {"name": "bad"}, "data": {"port": 8080}}"#,
            "data.port",
        ),
        (
            "/apis/apps/v1/namespaces/default/deployments",
            r#"{"metadata": {"name": "bad"}, "spec": {"template": {}}}"#,
            "spec.selector",
        ),
    ] {
        let request = with_body("POST", collection, "application/json", body);
        let refused = raw(&client, request).await;
        assert_eq!(refused.status(), 422, "{collection}");
        let status = json_of(&refused);
        assert_eq!(status["details"]["causes"][0]["field"], field, "{status}");
    }
    assert!(maps.get_opt("bad").await.expect("read").is_none());

    // A subresource nothing has is not found, like a kind not served.
    for path in [
        "/api/v1/namespaces/default/pods",
        "/api/v1/namespaces/default/pods/x",
    ] {
        let response = raw(
            &client,
            http::Request::get(path).body(Vec::new()).expect("request"),
        )
        .await;
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(json_of(&response)["reason"], "NotFound");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn custom_resources_are_field_selected_by_name_and_namespace_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Options::default()).await;
    let client = admin(&server).await;
    install_crds(&client).await;
    let tds: Api<TaskDefinition> = Api::namespaced(client.clone(), "default");
    for name in ["a", "web", "z"] {
        let mut td = web_task_definition();
        td.metadata.name = Some(name.to_owned());
        tds.create(&PostParams::default(), &td)
            .await
            .expect("created");
    }
    let named = tds
        .list(&ListParams::default().fields("metadata.name=web"))
        .await
        .expect("listed");
    let names: Vec<_> = named
        .items
        .iter()
        .filter_map(|t| t.metadata.name.clone())
        .collect();
    assert_eq!(names, ["web"]);
    let err = tds
        .list(&ListParams::default().fields("spec.cpu=256"))
        .await
        .expect_err("not a selectable field");
    assert_eq!(api_code(&err), Some(400));
    assert!(
        err.to_string()
            .contains("field label not supported: spec.cpu"),
        "{err}"
    );
    let by_mode = WatchParams::default().fields("spec.networkMode=bridge");
    let Err(err) = tds.watch(&by_mode, "0").await else {
        panic!("a watch by spec.networkMode was accepted");
    };
    assert_eq!(api_code(&err), Some(400));
    server.shutdown().await;
}

/// The file's mode in octal, as `ls` and `chmod` speak of it.
fn mode(path: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    format!("{:o}", mode & 0o777)
}

#[tokio::test]
async fn the_data_directory_is_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = start(&data, Options::default()).await;
    // A Secret makes the store write: the journal exists too.
    let api: Api<Secret> = Api::namespaced(admin(&server).await, "default");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s"}, "stringData": {"password": "hunter2"}
    }))
    .expect("secret");
    api.create(&PostParams::default(), &secret)
        .await
        .expect("created");
    for private_dir in ["", "store", "pki"] {
        assert_eq!(mode(&data.join(private_dir)), "700", "{private_dir:?}");
    }
    for private_file in [
        "store/gantry.db",
        "store/gantry.db-wal",
        "store/gantry.db-shm",
        "pki/ca.key",
        "pki/server.key",
        "pki/admin.token",
        "pki/read-only.token",
        "kubeconfig",
    ] {
        assert_eq!(mode(&data.join(private_file)), "600", "{private_file}");
    }
    server.shutdown().await;

    // What an older version left open is closed on the next start.
    use std::os::unix::fs::PermissionsExt;
    for (path, open) in [
        ("", 0o755),
        ("store/gantry.db", 0o644),
        ("pki/admin.token", 0o644),
    ] {
        std::fs::set_permissions(data.join(path), std::fs::Permissions::from_mode(open))
            .expect("chmod");
    }
    let server = start(&data, Options::default()).await;
    assert_eq!(mode(&data), "700");
    assert_eq!(mode(&data.join("store/gantry.db")), "600");
    assert_eq!(mode(&data.join("pki/admin.token")), "600");
    server.shutdown().await;
}

/// The status a refused request got.
fn refusal(err: Error) -> kube::core::Status {
    match err {
        Error::Api(status) => *status,
        other => panic!("not an API refusal: {other}"),
    }
}

fn first_cause(status: &kube::core::Status) -> (String, String, String) {
    let cause = status
        .details
        .as_ref()
        .and_then(|d| d.causes.first())
        .unwrap_or_else(|| panic!("a cause: {status:?}"));
    (
        cause.reason.clone(),
        cause.field.clone(),
        cause.message.clone(),
    )
}

#[tokio::test]
async fn a_resource_version_that_is_no_number_or_from_the_future_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Options::default()).await;
    let yaml = std::fs::read_to_string(&server.kubeconfig).expect("kubeconfig written");
    let kubeconfig = Kubeconfig::from_yaml(&yaml).expect("kubeconfig parses");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("config");
    // kube-rs retries a 504 up to 15 times by default; once is enough here.
    config.default_retry = false;
    let api: Api<ConfigMap> = Api::namespaced(Client::try_from(config).expect("client"), "default");
    for name in ["a", "b", "c"] {
        api.create(&PostParams::default(), &config_map(name, "1"))
            .await
            .expect("created");
    }
    let before = api.get("b").await.expect("b");

    // Not a number: refused, where it used to be an unconditional write.
    let mut replaced = config_map("b", "2");
    replaced.metadata.resource_version = Some("abc".into());
    let put = refusal(
        api.replace("b", &PostParams::default(), &replaced)
            .await
            .expect_err("refused"),
    );
    let patched = api
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "abc"}, "data": {"key": "3"}})),
        )
        .await
        .expect_err("refused");
    for status in [put, refusal(patched)] {
        assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
        assert_eq!(first_cause(&status).1, "metadata.resourceVersion");
    }
    assert_eq!(api.get("b").await.expect("b"), before, "b unchanged");

    // From the future: kube-apiserver's "Too large resource version".
    let current: u64 = api
        .list(&ListParams::default())
        .await
        .expect("listed")
        .metadata
        .resource_version
        .expect("a revision")
        .parse()
        .expect("a number");
    let future = (current + 1_000).to_string();
    let listed = api
        .list(&ListParams::default().at(&future))
        .await
        .expect_err("refused");
    let got = api
        .get_with(
            "b",
            &kube::api::GetParams {
                resource_version: Some(future.clone()),
            },
        )
        .await
        .expect_err("refused");
    for status in [refusal(listed), refusal(got)] {
        assert_eq!((status.code, status.reason.as_str()), (504, "Timeout"));
        assert_eq!(
            status.message,
            format!("Timeout: Too large resource version: {future}, current: {current}")
        );
        assert_eq!(first_cause(&status).0, "ResourceVersionTooLarge");
        assert_eq!(status.details.map(|d| d.retry_after_seconds), Some(1));
    }
    // A watch from there is told to list again (410), cause and all.
    let mut events = api
        .watch(&WatchParams::default(), &future)
        .await
        .expect("watch opened")
        .boxed();
    match events.try_next().await.expect("an event") {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert_eq!(first_cause(&status).0, "ResourceVersionTooLarge");
        }
        other => panic!("expected a 410: {other:?}"),
    }
    // The current revision itself is fine for all three.
    let at_current = current.to_string();
    api.list(&ListParams::default().at(&at_current))
        .await
        .expect("listed at the current revision");
    server.shutdown().await;
}

#[tokio::test]
async fn events_expire_a_ttl_after_they_were_last_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Config {
        event_ttl: Duration::from_secs(3),
        ..Config::local(dir.path())
    })
    .await
    .expect("server starts");
    let api: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(admin(&server).await, "default");
    let event = |name: &str, count: i32| -> k8s_openapi::api::core::v1::Event {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": "default"},
            "reason": "Tested", "message": "once", "count": count,
            "lastTimestamp": k8s_openapi::jiff::Timestamp::now().to_string(),
        }))
        .expect("an event")
    };
    for name in ["a", "b", "c"] {
        api.create(&PostParams::default(), &event(name, 1))
            .await
            .expect("created");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // b is written again: its TTL starts over.
    let mut b = api.get("b").await.expect("b");
    b.count = Some(2);
    b.last_timestamp = event("b", 2).last_timestamp;
    api.replace("b", &PostParams::default(), &b)
        .await
        .expect("written again");

    let names = || async {
        api.list(&ListParams::default())
            .await
            .expect("listed")
            .items
            .into_iter()
            .filter_map(|e| e.metadata.name)
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = names().await;
        if left == ["b"] {
            break;
        }
        assert!(
            left.contains(&"b".to_owned()),
            "b went with the others: {left:?}"
        );
        assert!(tokio::time::Instant::now() < deadline, "{left:?} kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !names().await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "b kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await;
}
