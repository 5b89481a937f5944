//! The gantry image builds offline from Dockerfile (FROM scratch, the
//! binary and the libraries it links) and its binary runs.

mod common;

use std::{path::Path, process::Command};

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_image_builds_offline_and_runs_gantry() {
    if !common::docker() {
        return;
    }
    let tag = "gantry-test/gantry:dev";
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-gantry-image");
    let out = Command::new(script)
        .args(["--binary", env!("CARGO_BIN_EXE_gantry"), tag])
        .output()
        .expect("the script runs");
    assert!(
        out.status.success(),
        "scripts/build-gantry-image failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), tag);
    let version = docker(&["run", "--rm", tag, "--version"]);
    assert!(
        version.contains(env!("CARGO_PKG_VERSION")),
        "the binary runs in the image: {version}"
    );
    let crds = docker(&["run", "--rm", tag, "crd"]);
    assert_eq!(crds.matches("kind: CustomResourceDefinition").count(), 4);
    let user = docker(&["image", "inspect", "--format", "{{.Config.User}}", tag]);
    assert_eq!(user.trim(), "65532:65532", "not root");
    docker(&["rmi", tag]);
}
