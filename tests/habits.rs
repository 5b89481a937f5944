//! Kubernetes habits against the embedded control plane, with real
//! kubectl: applying an unchanged manifest again changes nothing,
//! `kubectl wait` finds an object that is not the last of its collection,
//! Events written through either API group show in `kubectl describe`
//! and `kubectl events`, `kubectl create` makes namespaces, service
//! accounts and RBAC objects (which kubectl sends as protobuf), and
//! `kubectl auth can-i` and `whoami` answer for each token.
//! Each namespace holds objects before and after the ones under test, so
//! nothing passes because its object is the only or the newest one.

mod common;

use std::{collections::BTreeMap, path::Path};

use common::Cli;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_habits_work_unchanged() {
    common::with_kubectl(|kubectl, dir| {
        installs_and_waits_for_every_crd(kubectl);
        reapplying_unchanged_manifests_changes_nothing(kubectl, dir);
        waits_for_an_object_that_is_not_the_last(kubectl);
        events_of_either_group_are_one_store(kubectl, dir);
        creates_built_in_kinds(kubectl);
        prints_built_in_kinds_as_kube_apiserver_does(kubectl);
        says_who_the_caller_is_and_what_it_may_do(kubectl, dir);
        patches_built_in_kinds_strategically(kubectl, dir);
        applies_built_in_lists_by_key(kubectl, dir);
        service_account_tokens_carry_their_rbac_rights(kubectl, dir);
        impersonates_whom_kubectl_as_names(kubectl, dir);
    })
    .await;
}

/// The step every CRD install guide shows.
fn installs_and_waits_for_every_crd(kubectl: &Cli) {
    kubectl.ok(&["apply", "-f", "crds/yaml/"]);
    let waited = kubectl.ok(&[
        "wait",
        "--for=condition=Established",
        "crd",
        "--all",
        "--timeout=20s",
    ]);
    assert_eq!(
        waited.matches("condition met").count(),
        crds::all().len(),
        "{waited}"
    );
}

/// Definitions and services named to sort before and after the examples'.
fn write_neighbours(dir: &Path, name: &str) -> String {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: gantry.dev/v1alpha1\nkind: TaskDefinition\nmetadata: {{name: {name}}}\n\
             spec: {{containerDefinitions: [{{name: c, image: 'busybox:1', memory: 32}}]}}\n---\n\
             apiVersion: gantry.dev/v1alpha1\nkind: Service\nmetadata: {{name: {name}, labels: {{tier: other}}}}\n\
             spec: {{taskDefinition: {name}, desiredCount: 1}}\n"
        ),
    )
    .expect("written");
    path.to_str().expect("UTF-8 path").to_owned()
}

/// Every Gantry object's resourceVersion and generation, by kind and name.
fn versions(kubectl: &Cli) -> BTreeMap<String, (String, String)> {
    let out = kubectl.ok(&[
        "get",
        "gantry",
        "-o",
        r#"jsonpath={range .items[*]}{.kind}/{.metadata.name} {.metadata.resourceVersion} {.metadata.generation}{"\n"}{end}"#,
    ]);
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let key = words.next()?.to_owned();
            Some((key, (words.next()?.to_owned(), words.next()?.to_owned())))
        })
        .collect()
}

fn generations(versions: &BTreeMap<String, (String, String)>) -> BTreeMap<&str, &str> {
    versions
        .iter()
        .map(|(k, (_, g))| (k.as_str(), g.as_str()))
        .collect()
}

fn reapplying_unchanged_manifests_changes_nothing(kubectl: &Cli, dir: &Path) {
    let before = write_neighbours(dir, "aaa");
    let after = write_neighbours(dir, "zzz");
    let examples = ["examples/web.yaml", "examples/batch.yaml"];
    kubectl.ok(&["apply", "-f", &before]);
    for example in examples {
        kubectl.ok(&["apply", "-f", example]);
    }
    kubectl.ok(&["apply", "-f", &after]);
    let first = versions(kubectl);
    assert!(
        first.contains_key("TaskDefinition/web") && first.len() >= 7,
        "{first:?}"
    );

    for example in examples {
        kubectl.ok(&["apply", "-f", example]);
    }
    assert_eq!(versions(kubectl), first, "a second client-side apply");

    // Taking the fields over server-side is a change of managers (a new
    // resourceVersion), never of the spec; doing it again is no change.
    for example in examples {
        kubectl.ok(&["apply", "--server-side", "-f", example]);
    }
    let taken = versions(kubectl);
    assert_eq!(generations(&taken), generations(&first));
    for example in examples {
        kubectl.ok(&["apply", "--server-side", "-f", example]);
    }
    assert_eq!(versions(kubectl), taken, "a second server-side apply");
}

fn waits_for_an_object_that_is_not_the_last(kubectl: &Cli) {
    kubectl.ok(&["label", "gsvc", "web", "tier=front"]);
    kubectl.ok(&[
        "patch", "gsvc", "web", "--subresource=status", "--type", "merge", "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"SteadyState","message":"ok","lastTransitionTime":"2026-11-22T00:00:00Z"}]}}"#,
    ]);
    for args in [
        &["wait", "--for=condition=Ready", "gsvc/web", "--timeout=10s"][..],
        &[
            "wait",
            "--for=condition=Ready",
            "gsvc",
            "-l",
            "tier=front",
            "--timeout=10s",
        ],
        &[
            "wait",
            "--for=jsonpath={.spec.desiredCount}=2",
            "gsvc/web",
            "--timeout=10s",
        ],
        &[
            "wait",
            "--for=jsonpath={.spec.taskDefinition}=aaa",
            "gsvc",
            "-l",
            "tier=other",
            "--field-selector=metadata.name=aaa",
            "--timeout=10s",
        ],
    ] {
        let waited = kubectl.ok(args);
        assert!(waited.contains("condition met"), "{args:?}: {waited}");
    }
    // A condition that does not hold still times out.
    let err = kubectl.fails(&["wait", "--for=condition=Ready", "gsvc/aaa", "--timeout=2s"]);
    assert!(err.contains("timed out"), "{err}");
}

/// An Event about a Gantry Service, in the core or the events.k8s.io
/// shape.
fn event(name: &str, about: &str, uid: &str, events_v1: bool, said: &str) -> String {
    let regarding = format!(
        r#"{{"apiVersion": "gantry.dev/v1alpha1", "kind": "Service", "namespace": "default", "name": "{about}", "uid": "{uid}"}}"#
    );
    if events_v1 {
        format!(
            r#"{{"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {{"name": "{name}"}},
            "regarding": {regarding}, "note": "{said} (note)", "reason": "{said}", "type": "Normal",
            "action": "{said}", "eventTime": "2026-12-02T00:00:00.000000Z",
            "reportingController": "tests", "reportingInstance": "tests-1"}}"#
        )
    } else {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Event", "metadata": {{"name": "{name}"}},
            "involvedObject": {regarding}, "message": "{said} (message)", "reason": "{said}",
            "type": "Normal", "source": {{"component": "tests"}},
            "firstTimestamp": "2026-12-02T00:00:00Z", "lastTimestamp": "2026-12-02T00:00:00Z", "count": 1}}"#
        )
    }
}

fn events_of_either_group_are_one_store(kubectl: &Cli, dir: &Path) {
    let uid = |name: &str| kubectl.ok(&["get", "gsvc", name, "-o", "jsonpath={.metadata.uid}"]);
    let (aaa, web, zzz) = (uid("aaa"), uid("web"), uid("zzz"));
    for (name, about, uid, events_v1, said) in [
        ("aaa-said", "aaa", &aaa, false, "AboutAaa"),
        ("web-core", "web", &web, false, "CoreSaid"),
        ("web-new", "web", &web, true, "NewSaid"),
        ("zzz-said", "zzz", &zzz, true, "AboutZzz"),
    ] {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, event(name, about, uid, events_v1, said)).expect("written");
        kubectl.ok(&["create", "-f", path.to_str().expect("UTF-8 path")]);
    }
    let described = kubectl.ok(&["describe", "gsvc", "web"]);
    for line in ["CoreSaid (message)", "NewSaid (note)"] {
        assert!(described.contains(line), "{line} in: {described}");
    }
    assert!(!described.contains("About"), "only web's: {described}");
    let listed = kubectl.ok(&["get", "events"]);
    let header: Vec<&str> = listed
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{listed}"
    );
    assert!(
        listed.contains("service/web") && listed.contains("NewSaid (note)"),
        "{listed}"
    );
    let events = kubectl.ok(&["events", "--for", "gsvc/web"]);
    assert!(
        events.contains("CoreSaid") && events.contains("NewSaid") && !events.contains("About"),
        "{events}"
    );
    // Each shape reads what the other wrote, under its own names.
    let note = kubectl.ok(&[
        "get",
        "events.v1.events.k8s.io",
        "web-core",
        "-o",
        "jsonpath={.note}",
    ]);
    assert_eq!(note, "CoreSaid (message)");
    let message = kubectl.ok(&["get", "events.v1.", "web-new", "-o", "jsonpath={.message}"]);
    assert_eq!(message, "NewSaid (note)");
    let selected = kubectl.ok(&[
        "get",
        "events.v1.events.k8s.io",
        "--field-selector",
        "regarding.name=web",
        "-o",
        "name",
    ]);
    assert_eq!(
        selected.lines().collect::<Vec<_>>(),
        [
            "event.events.k8s.io/web-core",
            "event.events.k8s.io/web-new"
        ]
    );
}

fn creates_built_in_kinds(kubectl: &Cli) {
    for namespace in ["alpha", "prod", "zeta"] {
        kubectl.ok(&["create", "namespace", namespace]);
    }
    let in_prod = |args: &[&str]| in_namespace(kubectl, "prod", args);
    for args in [
        &["create", "serviceaccount", "robot"][..],
        &[
            "create",
            "role",
            "reader",
            "--verb=get,list",
            "--resource=configmaps",
        ],
        &[
            "create",
            "rolebinding",
            "robot-reads",
            "--role=reader",
            "--serviceaccount=prod:robot",
        ],
        &[
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=fast",
        ],
        &[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=password=s3cret",
        ],
    ] {
        assert!(in_prod(args).contains("created"), "{args:?}");
    }
    kubectl.ok(&[
        "create",
        "clusterrole",
        "watcher",
        "--verb=watch",
        "--resource=namespaces",
    ]);
    kubectl.ok(&[
        "create",
        "clusterrolebinding",
        "robot-watches",
        "--clusterrole=watcher",
        "--serviceaccount=prod:robot",
    ]);
    let get = |args: &[&str]| kubectl.ok(args);
    assert_eq!(
        get(&[
            "get",
            "ns",
            "prod",
            "-o",
            "jsonpath={.status.phase} {.metadata.labels.kubernetes\\.io/metadata\\.name}"
        ]),
        "Active prod"
    );
    assert_eq!(
        in_prod(&[
            "get",
            "role",
            "reader",
            "-o",
            "jsonpath={.rules[0].verbs} {.rules[0].apiGroups}"
        ]),
        r#"["get","list"] [""]"#
    );
    assert_eq!(
        in_prod(&[
            "get",
            "rolebinding",
            "robot-reads",
            "-o",
            "jsonpath={.roleRef.kind}/{.roleRef.name} {.subjects[0].kind}/{.subjects[0].name}"
        ]),
        "Role/reader ServiceAccount/robot"
    );
    assert_eq!(
        get(&[
            "get",
            "clusterrolebinding",
            "robot-watches",
            "-o",
            "jsonpath={.roleRef.name} {.subjects[0].namespace}"
        ]),
        "watcher prod"
    );
    assert_eq!(
        in_prod(&["get", "secret", "creds", "-o", "jsonpath={.data.password}"]),
        "czNjcmV0"
    );
    assert!(
        in_prod(&["create", "service", "clusterip", "web", "--tcp=80:8080"]).contains("created")
    );
    assert_eq!(
        in_prod(&[
            "get",
            "service",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].port}:{.spec.ports[0].targetPort} {.spec.type}"
        ]),
        "80:8080 ClusterIP"
    );
    // kubectl create deployment (protobuf, with Go's zero values).
    let created = in_prod(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1",
        "--replicas=2",
        "--port=80",
    ]);
    assert!(created.contains("created"), "{created}");
    let template = "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort} {.spec.paused}";
    assert_eq!(
        in_prod(&["get", "deployment", "web", "-o", template]),
        "2 busybox:1 80 "
    );
}

fn in_namespace(kubectl: &Cli, namespace: &str, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["-n", namespace]);
    kubectl.ok(&all)
}

/// A `kubectl get` table as rows of cells (kubectl pads cells with at
/// least two spaces; an empty cell leaves no cell).
fn table(printed: &str) -> Vec<Vec<String>> {
    printed
        .lines()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// The row of `name`, which must have a row on either side.
fn row_between<'a>(rows: &'a [Vec<String>], name: &str) -> &'a [String] {
    let at = rows
        .iter()
        .position(|r| r.first().map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}: {rows:?}"));
    assert!(
        at > 1 && at + 1 < rows.len(),
        "{name} is first or last: {rows:?}"
    );
    &rows[at]
}

fn is_age(cell: &str) -> bool {
    cell.ends_with(['s', 'm', 'h', 'd', 'y']) && cell.starts_with(|c: char| c.is_ascii_digit())
}

/// `kubectl get` of built-in kinds prints kube-apiserver's columns: its
/// printers' where it has one, Name and Created At where it has none.
fn prints_built_in_kinds_as_kube_apiserver_does(kubectl: &Cli) {
    let in_prod = |args: &[&str]| in_namespace(kubectl, "prod", args);
    // Neighbours before and after robot, reader and robot-reads.
    for args in [
        &["create", "serviceaccount", "aa-bot"][..],
        &["create", "serviceaccount", "zz-bot"],
        &[
            "create",
            "role",
            "aa-role",
            "--verb=get",
            "--resource=secrets",
        ],
        &[
            "create",
            "role",
            "zz-role",
            "--verb=list",
            "--resource=secrets",
        ],
        &[
            "create",
            "rolebinding",
            "aa-binds",
            "--role=aa-role",
            "--user=ann",
        ],
        &[
            "create",
            "rolebinding",
            "zz-binds",
            "--role=zz-role",
            "--group=ops",
        ],
    ] {
        in_prod(args);
    }

    let accounts = table(&in_prod(&["get", "serviceaccounts"]));
    assert_eq!(accounts[0], ["NAME", "SECRETS", "AGE"]);
    let robot = row_between(&accounts, "robot");
    assert_eq!(robot[..2], ["robot", "0"]);
    assert!(is_age(&robot[2]), "{robot:?}");

    let roles = table(&in_prod(&["get", "roles"]));
    assert_eq!(roles[0], ["NAME", "CREATED AT"]);
    let reader = row_between(&roles, "reader");
    assert!(
        reader[1].parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "{reader:?}"
    );

    let bindings = table(&in_prod(&["get", "rolebindings", "-o", "wide"]));
    assert_eq!(
        bindings[0],
        ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    );
    let reads = row_between(&bindings, "robot-reads");
    assert_eq!(reads.len(), 4, "users and groups are empty: {reads:?}");
    assert_eq!(reads[..2], ["robot-reads", "Role/reader"]);
    assert!(is_age(&reads[2]), "{reads:?}");
    assert_eq!(reads[3], "prod/robot");

    let crds = table(&kubectl.ok(&["get", "crd"]));
    assert_eq!(crds[0], ["NAME", "CREATED AT"]);
    let services = row_between(&crds, "services.gantry.dev");
    assert!(
        services[1].parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "{services:?}"
    );
}

/// The same server through another bearer token.
fn with_token(admin: &Cli, dir: &Path, name: &str, token: &str) -> Cli {
    let kubeconfig = std::fs::read_to_string(&admin.kubeconfig).expect("kubeconfig");
    let path = dir.join(format!("{name}.kubeconfig"));
    let replaced: Vec<String> = kubeconfig
        .lines()
        .map(|line| match line.split_once("token:") {
            Some((indent, _)) => format!("{indent}token: {}", token.trim()),
            None => line.to_owned(),
        })
        .collect();
    std::fs::write(&path, replaced.join("\n")).expect("written");
    Cli {
        binary: admin.binary.clone(),
        kubeconfig: path,
    }
}

fn says_who_the_caller_is_and_what_it_may_do(admin: &Cli, dir: &Path) {
    let token = std::fs::read_to_string(dir.join("pki/read-only.token")).expect("token");
    let read_only = with_token(admin, dir, "read-only", &token);
    assert!(admin.ok(&["auth", "whoami"]).contains("gantry:admin"));
    assert!(
        read_only
            .ok(&["auth", "whoami"])
            .contains("gantry:read-only")
    );
    for (cli, args, answer) in [
        (
            admin,
            &["auth", "can-i", "create", "configmaps", "-n", "prod"][..],
            "yes",
        ),
        (admin, &["auth", "can-i", "delete", "gsvc"], "yes"),
        (&read_only, &["auth", "can-i", "list", "gsvc"], "yes"),
        (
            &read_only,
            &["auth", "can-i", "watch", "configmaps", "-n", "prod"],
            "yes",
        ),
    ] {
        assert_eq!(cli.ok(args).trim(), answer, "{args:?}");
    }
    // "no" is kubectl's answer with exit code 1.
    for question in [
        &["auth", "can-i", "create", "configmaps", "-n", "prod"][..],
        &["auth", "can-i", "get", "secrets", "-n", "prod"],
        &["get", "secrets", "-n", "prod"],
    ] {
        let out = read_only.run(question);
        assert!(!out.status.success(), "{question:?}");
        if question[0] == "auth" {
            assert!(String::from_utf8_lossy(&out.stdout).starts_with("no"));
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("Forbidden"), "{err}");
        }
    }
}

/// A Deployment manifest: containers `web` (with `env`) and `log`.
fn deployment(name: &str, image: &str, env: &[(&str, &str)]) -> String {
    let env: Vec<String> = env
        .iter()
        .map(|(k, v)| format!(r#"{{"name": "{k}", "value": "{v}"}}"#))
        .collect();
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "{name}"}},
        "spec": {{"replicas": 1, "selector": {{"matchLabels": {{"app": "{name}"}}}},
          "strategy": {{"type": "RollingUpdate", "rollingUpdate": {{"maxSurge": 1}}}},
          "template": {{"metadata": {{"labels": {{"app": "{name}"}}}}, "spec": {{"containers": [
            {{"name": "web", "image": "{image}", "env": [{}], "ports": [{{"containerPort": 80}}]}},
            {{"name": "log", "image": "log:1"}}]}}}}}}}}"#,
        env.join(", ")
    )
}

fn patches_built_in_kinds_strategically(kubectl: &Cli, dir: &Path) {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("written");
        path.to_str().expect("UTF-8 path").to_owned()
    };
    for name in ["aaa", "web", "zzz"] {
        let path = write(
            &format!("{name}.json"),
            deployment(name, "web:1", &[("A", "1"), ("B", "2")]),
        );
        kubectl.ok(&["apply", "-f", &path]);
    }
    // A selector that does not select the template's pods is refused,
    // as kube-apiserver refuses it, and nothing is stored.
    let stray = write(
        "stray.json",
        deployment("stray", "web:1", &[]).replacen(
            r#""labels": {"app": "stray"}"#,
            r#""labels": {"app": "other"}"#,
            1,
        ),
    );
    let refused = kubectl.fails(&["apply", "-f", &stray]);
    assert!(
        refused.contains("spec.template.metadata.labels")
            && refused.contains("`selector` does not match template `labels`"),
        "{refused}"
    );
    assert!(
        kubectl
            .fails(&["get", "deployment", "stray"])
            .contains("NotFound")
    );
    // A second client-side apply: image changed, B removed, C added.
    let changed = write(
        "web-2.json",
        deployment("web", "web:2", &[("A", "1"), ("C", "3")]),
    );
    kubectl.ok(&["apply", "-f", &changed]);
    kubectl.ok(&["set", "image", "deployment/web", "log=log:2"]);
    kubectl.ok(&["set", "env", "deployment/web", "-c", "web", "D=4"]);
    kubectl.ok(&["set", "env", "deployment/web", "-c", "web", "A-"]);
    kubectl.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"}}}"#,
    ]);
    let stored: serde_json::Value =
        serde_json::from_str(&kubectl.ok(&["get", "deployment", "web", "-o", "json"]))
            .expect("JSON");
    // What kube-apiserver stores after the same requests.
    assert_eq!(
        stored["spec"]["template"]["spec"]["containers"],
        serde_json::json!([
            {"name": "web", "image": "web:2", "ports": [{"containerPort": 80, "protocol": "TCP"}],
             "env": [{"name": "C", "value": "3"}, {"name": "D", "value": "4"}],
             "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
             "terminationMessagePolicy": "File"},
            {"name": "log", "image": "log:2", "imagePullPolicy": "IfNotPresent",
             "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"},
        ])
    );
    assert_eq!(
        stored["spec"]["strategy"],
        serde_json::json!({"type": "Recreate"})
    );
    assert!(
        !stored.to_string().contains("$patch") && !stored.to_string().contains("$setElementOrder")
    );
    // The neighbours are untouched.
    let aaa = kubectl.ok(&[
        "get",
        "deployment",
        "aaa",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[*].name}",
    ]);
    assert_eq!(aaa, "A B");

    // kubectl scale and kubectl get all work on Deployments; a Service
    // gets kube-apiserver's defaults.
    kubectl.ok(&["scale", "deployment", "web", "--replicas=3"]);
    let replicas =
        |name: &str| kubectl.ok(&["get", "deployment", name, "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!((replicas("aaa"), replicas("web")), ("1".into(), "3".into()));
    let service = write(
        "service.json",
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}"#
            .to_owned(),
    );
    kubectl.ok(&["apply", "-f", &service]);
    let defaults = "jsonpath={.spec.type} {.spec.ports[0].protocol} {.spec.ports[0].targetPort}";
    assert_eq!(
        kubectl.ok(&["get", "service", "web", "-o", defaults]),
        "ClusterIP TCP 80"
    );
    let all = kubectl.ok(&["get", "all", "-o", "name"]);
    for name in [
        "service/web",
        "deployment.apps/aaa",
        "deployment.apps/web",
        "deployment.apps/zzz",
    ] {
        assert!(all.lines().any(|l| l == name), "{name} in: {all}");
    }
}

/// Server-side apply merges a Deployment's containers (and their env and
/// ports) by key, as kube-apiserver does: two managers each own their
/// own container of one Deployment, and a change to the other's is a
/// conflict on that one field.
fn applies_built_in_lists_by_key(kubectl: &Cli, dir: &Path) {
    let apply = |manager: &str, name: &str, containers: &str| {
        let path = dir.join(format!("{name}-{manager}.json"));
        let text = format!(
            r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "{name}"}},
            "spec": {{"selector": {{"matchLabels": {{"app": "{name}"}}}},
              "template": {{"metadata": {{"labels": {{"app": "{name}"}}}},
                "spec": {{"containers": {containers}}}}}}}}}"#
        );
        std::fs::write(&path, text).expect("written");
        let path = path.to_str().expect("UTF-8 path").to_owned();
        kubectl.run(&[
            "apply",
            "--server-side",
            "--field-manager",
            manager,
            "-f",
            &path,
        ])
    };
    let web = r#"[{"name": "web", "image": "web:1", "env": [{"name": "A", "value": "1"}],
                  "ports": [{"containerPort": 80}]}]"#;
    // "ssa" between two others team-a applies the same way.
    for name in ["sa", "ssa", "sz"] {
        assert!(apply("team-a", name, web).status.success());
    }
    let sidecar = r#"[{"name": "sidecar", "image": "side:1"}]"#;
    let added = apply("team-b", "ssa", sidecar);
    assert!(
        added.status.success(),
        "a second manager adds its own container: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    // team-a changes its container and says nothing of team-b's.
    let web_2 = r#"[{"name": "web", "image": "web:1", "env": [{"name": "A", "value": "2"}],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}]}]"#;
    assert!(apply("team-a", "ssa", web_2).status.success());
    let containers = |name: &str| -> serde_json::Value {
        let printed = kubectl.ok(&[
            "get",
            "deployment",
            name,
            "-o",
            "jsonpath={.spec.template.spec.containers}",
        ]);
        serde_json::from_str(&printed).expect("JSON")
    };
    assert_eq!(
        containers("ssa"),
        serde_json::json!([
            {"name": "web", "image": "web:1", "env": [{"name": "A", "value": "2"}],
             "ports": [{"containerPort": 80, "protocol": "TCP"}], "imagePullPolicy": "IfNotPresent",
             "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"},
            {"name": "sidecar", "image": "side:1", "imagePullPolicy": "IfNotPresent",
             "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"},
        ])
    );
    // team-b may not change team-a's image.
    let taken = apply(
        "team-b",
        "ssa",
        r#"[{"name": "sidecar", "image": "side:1"}, {"name": "web", "image": "web:9"}]"#,
    );
    let said = String::from_utf8_lossy(&taken.stderr);
    assert!(!taken.status.success(), "another manager's field changed");
    assert!(
        said.contains("conflict") && said.contains("team-a") && said.contains("image"),
        "{said}"
    );
    assert_eq!(containers("ssa")[0]["image"], "web:1");
    for name in ["sa", "sz"] {
        let theirs = containers(name);
        assert_eq!(
            (theirs.as_array().map(Vec::len), &theirs[0]["env"]),
            (Some(1), &serde_json::json!([{"name": "A", "value": "1"}])),
            "the neighbours are untouched"
        );
    }
}

/// `kubectl create token`: a token for a ServiceAccount, which may do
/// what its RoleBindings grant, in their namespace, and nothing else.
fn service_account_tokens_carry_their_rbac_rights(admin: &Cli, dir: &Path) {
    let ns = ["-n", "ci"];
    let run = |args: &[&str]| admin.ok(&[args, &ns[..]].concat());
    admin.ok(&["create", "namespace", "ci"]);
    // "deployer" between two other ServiceAccounts.
    for account in ["builder", "deployer", "tester"] {
        run(&["create", "serviceaccount", account]);
    }
    run(&[
        "create",
        "role",
        "service-editor",
        "--verb=get,list,patch",
        "--resource=services.gantry.dev",
    ]);
    run(&[
        "create",
        "rolebinding",
        "deployer-edits-services",
        "--role=service-editor",
        "--serviceaccount=ci:deployer",
    ]);
    let token = run(&["create", "token", "deployer", "--duration=20m"]);
    let deployer = with_token(admin, dir, "deployer", token.trim());
    let whoami = deployer.ok(&["auth", "whoami"]);
    assert!(
        whoami.contains("system:serviceaccount:ci:deployer"),
        "{whoami}"
    );
    assert!(whoami.contains("system:serviceaccounts:ci"), "{whoami}");
    let can = |args: &[&str]| can_i(&deployer, args);
    assert_eq!(can(&["patch", "services.gantry.dev", "-n", "ci"]), "yes");
    assert_eq!(can(&["delete", "services.gantry.dev", "-n", "ci"]), "no");
    assert_eq!(
        can(&["patch", "services.gantry.dev", "-n", "default"]),
        "no"
    );
    assert_eq!(can(&["get", "secrets", "-n", "ci"]), "no");
    // Its rights, used: it lists services in ci, nothing in default.
    deployer.ok(&["get", "gsvc", "-n", "ci"]);
    let refused = deployer.fails(&["get", "gsvc", "-n", "default"]);
    assert!(
        refused.contains("Forbidden") && refused.contains("system:serviceaccount:ci:deployer"),
        "{refused}"
    );
    assert!(
        deployer
            .fails(&["get", "configmaps", "-n", "ci"])
            .contains("Forbidden")
    );
    // The neighbours' tokens get none of it.
    let tester = with_token(
        admin,
        dir,
        "tester",
        run(&["create", "token", "tester"]).trim(),
    );
    assert!(
        tester
            .fails(&["get", "gsvc", "-n", "ci"])
            .contains("Forbidden")
    );
    // Too short a token is refused, as kube-apiserver refuses it.
    let short = admin.fails(&["create", "token", "deployer", "--duration=1m", "-n", "ci"]);
    assert!(short.contains("less than 10 minutes"), "{short}");
    // A token dies with its ServiceAccount, even if one of the same name
    // comes back.
    run(&["delete", "serviceaccount", "deployer"]);
    run(&["create", "serviceaccount", "deployer"]);
    let gone = deployer.fails(&["get", "gsvc", "-n", "ci"]);
    assert!(gone.contains("Unauthorized"), "{gone}");
    assert!(
        admin
            .fails(&["create", "token", "nobody", "-n", "ci"])
            .contains("not found")
    );
}

/// `kubectl auth can-i ARGS`: "yes" or "no" (kubectl prints "yes", or
/// "no - <the reason>").
fn can_i(cli: &Cli, args: &[&str]) -> String {
    let out = cli.run(&[&["auth", "can-i"][..], args].concat());
    String::from_utf8_lossy(&out.stdout)
        .split(" - ")
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// `kubectl --as` and `--as-group`, and SubjectAccessReviews: the admin
/// acts as a user, a group member or a ServiceAccount with exactly their
/// RBAC rights; a token not allowed to impersonate may not.
fn impersonates_whom_kubectl_as_names(admin: &Cli, dir: &Path) {
    let ns = ["-n", "imp"];
    let run = |args: &[&str]| admin.ok(&[args, &ns[..]].concat());
    admin.ok(&["create", "namespace", "imp"]);
    for account in ["a", "robot", "z"] {
        run(&["create", "serviceaccount", account]);
    }
    for map in ["c1", "c2", "c3"] {
        run(&["create", "configmap", map, "--from-literal=k=v"]);
    }
    run(&[
        "create",
        "role",
        "reader",
        "--verb=get,list",
        "--resource=configmaps",
    ]);
    for (binding, subject) in [
        ("robot-reads", "--serviceaccount=imp:robot"),
        ("alice-reads", "--user=alice"),
        ("auditors-read", "--group=auditors"),
    ] {
        run(&["create", "rolebinding", binding, "--role=reader", subject]);
    }
    let whoami = admin.ok(&["auth", "whoami", "--as=alice", "--as-group=devs"]);
    assert!(
        whoami.contains("alice")
            && whoami.contains("devs")
            && whoami.contains("system:authenticated"),
        "{whoami}"
    );
    let can = |args: &[&str]| can_i(admin, &[args, &ns[..]].concat());
    for (args, answer) in [
        (
            &["list", "configmaps", "--as=system:serviceaccount:imp:robot"][..],
            "yes",
        ),
        (
            &["list", "configmaps", "--as=system:serviceaccount:imp:z"],
            "no",
        ),
        (&["list", "configmaps", "--as=alice"], "yes"),
        (&["delete", "configmaps", "--as=alice"], "no"),
        (&["list", "configmaps", "--as=bob"], "no"),
        (
            &["list", "configmaps", "--as=bob", "--as-group=auditors"],
            "yes",
        ),
        (
            &["get", "secrets", "--as=bob", "--as-group=system:masters"],
            "yes",
        ),
    ] {
        assert_eq!(can(args), answer, "can-i {args:?}");
    }
    // The rights, used: alice lists the three ConfigMaps of imp and
    // nothing elsewhere.
    let listed = run(&["get", "configmaps", "--as=alice", "-o", "name"]);
    for map in ["c1", "c2", "c3"] {
        assert!(listed.contains(&format!("configmap/{map}")), "{listed}");
    }
    let refused = admin.fails(&["get", "configmaps", "-n", "default", "--as=alice"]);
    assert!(
        refused.contains("Forbidden") && refused.contains("alice"),
        "{refused}"
    );
    // The read-only token may not become the admin.
    let token = std::fs::read_to_string(dir.join("pki/read-only.token")).expect("token");
    let read_only = with_token(admin, dir, "read-only-imp", &token);
    let refused = read_only.fails(&["get", "secrets", "-n", "imp", "--as=gantry:admin"]);
    assert!(
        refused.contains("Forbidden") && refused.contains("impersonate"),
        "{refused}"
    );
    // A SubjectAccessReview asks about another user.
    let review = |user: &str| {
        let path = dir.join(format!("review-{user}.json"));
        let body = format!(
            r#"{{"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {{"user": "{user}", "resourceAttributes":
              {{"verb": "list", "resource": "configmaps", "namespace": "imp"}}}}}}"#
        );
        std::fs::write(&path, body).expect("written");
        let answer = admin.ok(&[
            "create",
            "--raw",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            "-f",
            path.to_str().expect("UTF-8 path"),
        ]);
        let answer: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
        answer["status"]["allowed"].clone()
    };
    assert_eq!(review("alice"), serde_json::json!(true));
    assert_eq!(review("bob"), serde_json::json!(false));
}
