//! No request crashes the server or leaves half an object: random
//! methods, paths, content types, query strings and bodies, each answered
//! with a response (never a dropped connection), never a 5xx, and every
//! refusal a `Status` whose code is the response's. Afterwards every
//! stored object still decodes as its kind, so typed clients can list it.

use std::time::Duration;

use apiserver::server::{Config, Server};
use crds::v1alpha1::TaskDefinition;
use k8s_openapi::{
    api::core::v1::{ConfigMap, Namespace, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use proptest::{
    prelude::*,
    strategy::{Strategy, ValueTree},
    test_runner::{Config as RunnerConfig, TestRunner},
};
use serde_json::{Value, json};

/// One request, as a client might send it.
#[derive(Clone, Debug)]
struct Request {
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    query: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z$/.-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_owned()),
                    Just("name".to_owned()),
                    Just("spec".to_owned()),
                    Just("data".to_owned()),
                    Just("status".to_owned()),
                    Just("op".to_owned()),
                    Just("path".to_owned()),
                    Just("value".to_owned()),
                    Just("$patch".to_owned()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies: random JSON, JSON shaped like objects with wrong parts, or
/// bytes that are not JSON at all.
/// Objects and patches of the right shape with random parts, so that
/// requests get past decoding to admission, preconditions and storage.
fn shaped() -> impl Strategy<Value = Value> {
    let name = prop_oneof![Just("middle"), Just("web"), Just("fresh"), Just("Bad_Name")];
    let data = prop::collection::btree_map(
        "[a-z]{1,4}",
        prop_oneof![3 => "[a-z]{0,6}".prop_map(Value::String), 1 => json_value()],
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()));
    let version = prop_oneof![
        Just(None),
        Just(Some("1")),
        Just(Some("999999")),
        Just(Some("x"))
    ];
    prop_oneof![
        (name.clone(), data.clone(), version).prop_map(|(name, data, rv)| {
            let mut object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data});
            if let Some(rv) = rv {
                object["metadata"]["resourceVersion"] = json!(rv);
            }
            object
        }),
        (name, json_value()).prop_map(|(name, memory)| json!({
            "apiVersion": "gantry.dev/v1alpha1", "kind": "TaskDefinition",
            "metadata": {"name": name},
            "spec": {"containerDefinitions": [{"name": "web", "image": "web:1", "memory": memory}]},
        })),
        data.clone().prop_map(|data| json!({"metadata": {"labels": {"app": "x"}}, "data": data})),
        (prop_oneof![Just("add"), Just("replace"), Just("remove"), Just("move"), Just("test")], prop_oneof![Just("/data/k"), Just("/metadata/labels"), Just("/metadata"), Just("/spec/containerDefinitions/0"), Just("")], json_value())
            .prop_map(|(op, path, value)| json!([{"op": op, "path": path, "from": "/data", "value": value}])),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => shaped().prop_map(|v| v.to_string().into_bytes()),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => (json_value(), json_value()).prop_map(|(metadata, data)| {
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
                .to_string()
                .into_bytes()
        }),
        1 => json_value().prop_map(|v| {
            json!([{"op": "move", "from": "/metadata", "path": "/spec"}, {"op": "replace", "path": "", "value": v}])
                .to_string()
                .into_bytes()
        }),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| [b"k8s\0".to_vec(), b].concat()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let collection = prop_oneof![
        5 => Just("/api/v1/namespaces/default/configmaps"),
        1 => Just("/api/v1/namespaces/default/secrets"),
        1 => Just("/api/v1/namespaces"),
        1 => Just("/api/v1/namespaces/default/events"),
        1 => Just("/apis/events.k8s.io/v1/namespaces/default/events"),
        1 => Just("/apis/apps/v1/namespaces/default/deployments"),
        3 => Just("/apis/gantry.dev/v1alpha1/namespaces/default/taskdefinitions"),
        1 => Just("/apis/gantry.dev/v1alpha1/namespaces/default/services"),
        1 => Just("/apis/gantry.dev/v1alpha1/namespaces/nowhere/services"),
        1 => Just("/apis/nothing.example/v1/things"),
    ];
    let name = prop_oneof![
        3 => Just(String::new()),
        3 => Just("/middle".to_owned()),
        2 => Just("/fresh".to_owned()),
        1 => Just("/first".to_owned()),
        1 => Just("/web".to_owned()),
        1 => Just("/middle/status".to_owned()),
        1 => Just("/web/scale".to_owned()),
        1 => Just("/middle/pods".to_owned()),
        1 => "/[a-zA-Z0-9%._-]{0,20}",
    ];
    (collection, name).prop_map(|(c, n)| format!("{c}{n}"))
}

fn query() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    let key = prop_oneof![
        Just("watch"),
        Just("timeoutSeconds"),
        Just("limit"),
        Just("continue"),
        Just("resourceVersion"),
        Just("labelSelector"),
        Just("fieldSelector"),
        Just("dryRun"),
        Just("fieldValidation"),
        Just("fieldManager"),
        Just("force"),
        Just("propagationPolicy"),
        Just("allowWatchBookmarks"),
        Just("sendInitialEvents"),
    ];
    let value = prop_oneof![
        Just("1".to_owned()),
        Just("true".to_owned()),
        Just("All".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("-1".to_owned()),
        Just("a in (b,c),!d".to_owned()),
        "[ -~]{0,16}",
    ];
    prop::collection::vec((key, value), 0..4)
}

fn request() -> impl Strategy<Value = Request> {
    let method = prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("PUT"),
        Just("PATCH"),
        Just("DELETE")
    ];
    let content_type = prop_oneof![
        1 => Just(None),
        3 => Just(Some("application/json")),
        2 => Just(Some("application/merge-patch+json")),
        1 => Just(Some("application/strategic-merge-patch+json")),
        2 => Just(Some("application/json-patch+json")),
        1 => Just(Some("application/apply-patch+yaml")),
        1 => Just(Some("application/vnd.kubernetes.protobuf")),
        1 => Just(Some("text/plain")),
    ];
    (method, path(), content_type, query(), body()).prop_map(
        |(method, path, content_type, query, body)| Request {
            method,
            path,
            content_type,
            query,
            body,
        },
    )
}

async fn admin(server: &Server) -> Client {
    let kubeconfig = Kubeconfig::read_from(&server.kubeconfig).expect("kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("config");
    // Each request's own answer is under test, not what a retry gets.
    config.default_retry = false;
    Client::try_from(config).expect("client")
}

/// Objects around the ones requests name, so a request that hits one
/// hits something neither first nor last.
async fn neighbours(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds::all() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD");
    }
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for name in ["first", "middle", "web", "last"] {
        let map: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": name}}))
                .expect("config map");
        maps.create(&PostParams::default(), &map)
            .await
            .expect("created");
    }
}

fn encode(query: &[(&str, String)]) -> String {
    query
        .iter()
        .map(|(k, v)| {
            let v: String = v
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn send(client: &Client, case: &Request) -> u16 {
    let uri = if case.query.is_empty() {
        case.path.clone()
    } else {
        format!("{}?{}", case.path, encode(&case.query))
    };
    let mut builder = http::Request::builder().method(case.method).uri(&uri);
    if let Some(content_type) = case.content_type {
        builder = builder.header("content-type", content_type);
    }
    let request = builder
        .body(kube::client::Body::from(case.body.clone()))
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), client.send(request))
        .await
        .unwrap_or_else(|_| panic!("no answer within 10 s to {case:?}"))
        .unwrap_or_else(|e| panic!("no answer ({e}) to {case:?}"));
    let status = response.status();
    let watching = case.query.iter().any(|(k, _)| *k == "watch");
    if status.is_success() && watching {
        // A watch streams until its timeout; its first answer is enough.
        return status.as_u16();
    }
    let body = tokio::time::timeout(
        Duration::from_secs(10),
        http_body_util::BodyExt::collect(response.into_body()),
    )
    .await
    .unwrap_or_else(|_| panic!("body not finished within 10 s for {case:?}"))
    .unwrap_or_else(|e| panic!("body cut ({e}) for {case:?}"))
    .to_bytes();
    if status.is_client_error() || status.is_server_error() {
        let answer: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{status} without a JSON Status ({e}) for {case:?}"));
        assert_eq!(answer["kind"], "Status", "{answer} for {case:?}");
        assert_eq!(answer["code"], status.as_u16(), "{answer} for {case:?}");
        // The one 5xx kube-apiserver gives for a request: a read at a
        // resourceVersion the store has not reached.
        if status.is_server_error() {
            assert_eq!(
                answer.pointer("/details/causes/0/reason"),
                Some(&Value::from("ResourceVersionTooLarge")),
                "{status} for {case:?}"
            );
        }
    }
    status.as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_request_gets_an_answer_and_leaves_whole_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(Config::local(dir.path()))
        .await
        .expect("server starts");
    let client = admin(&server).await;
    neighbours(&client).await;

    // A fixed seed: a failure is the same failure when run again.
    let mut runner = TestRunner::new_with_rng(
        RunnerConfig::default(),
        proptest::test_runner::TestRng::deterministic_rng(RunnerConfig::default().rng_algorithm),
    );
    let strategy = request();
    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..800 {
        let case = strategy.new_tree(&mut runner).expect("a case").current();
        *answers.entry(send(&client, &case).await).or_default() += 1;
    }
    eprintln!("answers by status: {answers:?}");
    // The cases reach past routing: some succeed, some are refused for
    // their content.
    assert!(
        answers.keys().any(|s| (200..300).contains(s)),
        "{answers:?}"
    );
    assert!(
        answers.keys().filter(|s| (400..500).contains(*s)).count() >= 4,
        "{answers:?}"
    );

    // Whatever was stored, a typed client still reads back.
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .expect("config maps decode");
    Api::<Secret>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .expect("secrets decode");
    Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("namespaces decode");
    Api::<TaskDefinition>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .expect("task definitions decode");
    server.shutdown().await;
}
