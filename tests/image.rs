//! The gantry image builds offline from Dockerfile (FROM scratch, the
//! binary and the libraries it links) and its binary runs.

mod common;

use std::{path::Path, process::Command};

fn docker(args: &[&str]) -> String {
    common::succeeds(Command::new("docker").args(args))
}

#[test]
fn the_image_builds_offline_and_runs_gantry() {
    if !common::docker() {
        return;
    }
    let tag = "gantry-test/gantry:dev";
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-gantry-image");
    let built = common::succeeds(Command::new(script).args([
        "--binary",
        env!("CARGO_BIN_EXE_gantry"),
        tag,
    ]));
    assert_eq!(built.trim(), tag);
    let version = docker(&["run", "--rm", tag, "--version"]);
    assert!(
        version.contains(env!("CARGO_PKG_VERSION")),
        "the binary runs in the image: {version}"
    );
    let crds = docker(&["run", "--rm", tag, "crd"]);
    assert_eq!(
        crds.matches("kind: CustomResourceDefinition").count(),
        crds::all().len()
    );
    let user = docker(&["image", "inspect", "--format", "{{.Config.User}}", tag]);
    assert_eq!(user.trim(), "65532:65532", "not root");
    docker(&["rmi", tag]);
}
