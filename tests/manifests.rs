//! Every example is accepted and every manifest under
//! tests/manifests/invalid is refused with the field its `# expect:` line
//! names: the checks the API server runs on create, run offline.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use gantry::manifests::{self, Catalog, Error};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_is_valid() {
    let catalog = Catalog::gantry().expect("catalog");
    let mut kinds = Vec::new();
    for file in yaml_files(&repo().join("examples")) {
        let text = std::fs::read_to_string(&file).expect("readable");
        for (index, doc) in manifests::documents(&text)
            .expect("YAML")
            .iter()
            .enumerate()
        {
            catalog
                .validate(index, doc)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            kinds.push(doc["kind"].as_str().unwrap_or_default().to_owned());
        }
    }
    for kind in ["TaskDefinition", "Service", "Task", "ContainerInstance"] {
        assert!(kinds.iter().any(|k| k == kind), "no example shows a {kind}");
    }
}

#[test]
fn the_web_example_is_the_seeds_container() {
    let text = std::fs::read_to_string(repo().join("examples/web.yaml")).expect("readable");
    let docs = manifests::documents(&text).expect("YAML");
    let web = &docs[0]["spec"]["containerDefinitions"][0];
    assert_eq!(web["cpu"], 100);
    assert_eq!(web["memory"], 100);
    assert_eq!(web["essential"], true);
    assert_eq!(web["portMappings"][0]["containerPort"], 8080);
    assert_eq!(web["portMappings"][0]["hostPort"], 80);
    assert_eq!(docs[1]["kind"], "Service");
    assert_eq!(docs[1]["spec"]["desiredCount"], 2);
}

#[test]
fn every_invalid_manifest_is_refused_with_its_field_named() {
    let catalog = Catalog::gantry().expect("catalog");
    let files = yaml_files(&repo().join("tests/manifests/invalid"));
    assert!(files.len() >= 10, "keep at least ten invalid manifests");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        let expected = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no `# expect: <field>` line", file.display()))
            .trim();
        let docs = manifests::documents(&text).expect("YAML");
        let [doc] = &docs[..] else {
            panic!("{}: one document", file.display())
        };
        match catalog.validate(0, doc) {
            Err(Error::Invalid { errors, .. }) => assert!(
                errors.names(expected),
                "{}: expected an error on {expected}, got {errors}",
                file.display()
            ),
            other => panic!("{}: expected a refusal, got {other:?}", file.display()),
        }
    }
}

#[test]
fn objects_of_other_apis_are_not_taken_for_gantry_kinds() {
    let catalog = Catalog::gantry().expect("catalog");
    let docs = manifests::documents("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n")
        .expect("YAML");
    assert!(matches!(
        catalog.validate(0, &docs[0]),
        Err(Error::UnknownKind { .. })
    ));
    let docs = manifests::documents("metadata: {name: x}\n").expect("YAML");
    assert!(matches!(
        catalog.validate(0, &docs[0]),
        Err(Error::NotAnObject { .. })
    ));
    assert!(matches!(
        manifests::documents("a: [b"),
        Err(Error::Yaml { .. })
    ));
}

fn gantry(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("gantry runs")
}

#[test]
fn gantry_crd_prints_the_generated_crds() {
    let out = gantry(&["crd"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).expect("UTF-8"),
        crds::all_yaml().expect("YAML")
    );
}

#[test]
fn gantry_validate_exits_non_zero_and_names_the_field() {
    let ok = gantry(&["validate", "-f", "examples"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let bad = gantry(&[
        "validate",
        "-f",
        "tests/manifests/invalid/09-reservation-above-memory.yaml",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let stdout = String::from_utf8(bad.stdout).expect("UTF-8");
    assert!(
        stdout.contains(r#"the TaskDefinition "greedy" is invalid"#)
            && stdout.contains("spec.containerDefinitions[0].memoryReservation"),
        "{stdout}"
    );
}

#[test]
fn gantry_crd_stops_quietly_when_the_reader_goes_away() {
    // `gantry crd | head`: the CRDs are larger than a pipe's buffer, so a
    // write after the reader leaves fails with a broken pipe.
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("crd")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gantry runs");
    let mut head = [0u8; 64];
    child
        .stdout
        .take()
        .expect("piped")
        .read_exact(&mut head)
        .expect("some output");
    let out = child.wait_with_output().expect("exits");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(head.starts_with(b"---\napiVersion: apiextensions.k8s.io/v1"));
}
