//! The generated CRDs: committed copies match the types, and each CRD has
//! the shape kubectl users rely on.

use std::{collections::BTreeSet, path::PathBuf};

use apiserver::SchemaValidator;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

fn yaml_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("yaml")
}

const REGENERATE: &str = "regenerate them with `cargo run -- crd --out-dir crds/yaml` and commit";

#[test]
fn committed_yaml_matches_the_types() {
    for crd in crds::all() {
        let path = yaml_dir().join(crds::file_name(&crd));
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} missing ({e}); {REGENERATE}", path.display()));
        let generated = crds::to_yaml(&crd).expect("serializes");
        assert!(
            committed == generated,
            "{} has drifted from the Rust types; {REGENERATE}",
            path.display()
        );
    }
}

#[test]
fn crds_yaml_holds_only_generated_files() {
    let expected: BTreeSet<String> = crds::all().iter().map(crds::file_name).collect();
    let present: BTreeSet<String> = std::fs::read_dir(yaml_dir())
        .expect("crds/yaml exists")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        present, expected,
        "stray or missing files in crds/yaml; {REGENERATE}"
    );
}

#[test]
fn gantry_crd_prints_every_crd_as_a_document() {
    let yaml = crds::all_yaml().expect("serializes");
    let docs: Vec<CustomResourceDefinition> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("each document is a CRD"))
        .collect();
    let names: Vec<_> = docs
        .iter()
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    assert_eq!(
        names,
        [
            "taskdefinitions.gantry.dev",
            "taskdefinitionrevisions.gantry.dev",
            "services.gantry.dev",
            "tasks.gantry.dev",
            "containerinstances.gantry.dev",
            "loadbalancers.gantry.dev",
            "scheduledtasks.gantry.dev"
        ]
    );
}

#[test]
fn every_kind_is_namespaced_with_status_names_and_category() {
    for crd in crds::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        assert_eq!(crd.spec.group, "gantry.dev", "{name}");
        assert_eq!(
            crd.spec.scope, "Namespaced",
            "{name}: a namespace is an ECS cluster"
        );
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["gantry".to_owned()][..]),
            "{name}"
        );
        assert!(
            crd.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty()),
            "{name}"
        );
        let [version] = &crd.spec.versions[..] else {
            panic!("{name}: exactly one version")
        };
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage, "{name}");
        if !is_record(&crd) {
            let subresources = version.subresources.as_ref().expect("subresources");
            assert!(subresources.status.is_some(), "{name}: status subresource");
        }
        let columns = version
            .additional_printer_columns
            .as_ref()
            .expect("printer columns");
        assert!(columns.len() >= 4, "{name}: describe-like columns");
        assert_eq!(
            columns.last().map(|c| c.name.as_str()),
            Some("Age"),
            "{name}"
        );
    }
}

#[test]
fn service_scales_through_desired_count() {
    let crd = crds::v1alpha1::Service::crd();
    let scale = crd.spec.versions[0]
        .subresources
        .as_ref()
        .and_then(|s| s.scale.as_ref())
        .expect("Service has a scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.desiredCount");
    assert_eq!(scale.status_replicas_path, ".status.runningCount");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
}

/// A kind that only records (TaskDefinitionRevision, an immutable
/// snapshot, as Kubernetes' ControllerRevision): no status to report.
fn is_record(crd: &CustomResourceDefinition) -> bool {
    crd.spec.names.kind == "TaskDefinitionRevision"
}

#[test]
fn every_status_reports_observed_generation_and_conditions() {
    for crd in crds::all().iter().filter(|c| !is_record(c)) {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
        let status = &schema["openAPIV3Schema"]["properties"]["status"]["properties"];
        assert!(
            status["observedGeneration"].is_object(),
            "{:?}",
            crd.metadata.name
        );
        let conditions = &status["conditions"];
        assert_eq!(
            conditions["x-kubernetes-list-type"], "map",
            "{:?}",
            crd.metadata.name
        );
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
    }
}

#[test]
fn every_schema_and_rule_compiles() {
    for crd in crds::all() {
        SchemaValidator::for_crd(&crd, "v1alpha1")
            .unwrap_or_else(|e| panic!("{:?}: {e}", crd.metadata.name));
    }
}
