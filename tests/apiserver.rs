//! `gantry apiserver` as a user runs it: it prints where it listens,
//! writes a kubeconfig that a real client can use, and stops on SIGTERM.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
};

#[tokio::test]
async fn gantry_apiserver_serves_kubectl_compatible_clients_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("apiserver")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .spawn()
        .expect("gantry runs");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let first = lines.next().expect("a line").expect("readable");
    assert!(
        first.starts_with("gantry apiserver listening on https://127.0.0.1:"),
        "{first}"
    );
    let second = lines.next().expect("a line").expect("readable");
    assert_eq!(second, format!("kubeconfig: {}", kubeconfig.display()));

    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig).expect("kubeconfig written"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    let namespaces: Api<Namespace> = Api::all(Client::try_from(config).expect("client"));
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .expect("listed")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    let default = namespaces.get("default").await.expect("default namespace");
    let uid = default.metadata.uid.expect("a uid");
    assert_eq!(uid.len(), 36, "a UUID: {uid}");
    assert!(default.metadata.creation_timestamp.is_some());

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.wait().expect("exits");
    assert!(exit.success(), "{exit:?}");
}
