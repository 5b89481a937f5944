//! The official Python Kubernetes client (PyPI `kubernetes`) against the
//! embedded control plane: a second, independent client library, so the
//! API is not only what kube-rs happens to accept. The checks are in
//! tests/python/client.py; `scripts/test` fetches the client with
//! `scripts/fetch-python-client` and sets `GANTRY_PYTHONPATH`.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Where the client was installed: `$GANTRY_PYTHONPATH`, else
/// `.cache/python`. Missing, the test fails under CI and is skipped
/// (loudly) elsewhere.
fn python_client() -> Option<PathBuf> {
    let found = std::env::var_os("GANTRY_PYTHONPATH")
        .map(PathBuf::from)
        .into_iter()
        .chain([Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/python")])
        .find(|p| p.join("kubernetes").is_dir());
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "the Python client is missing: scripts/fetch-python-client installs it"
        );
        eprintln!("SKIPPED: no Python client (run scripts/fetch-python-client)");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_creates_lists_watches_patches_and_deletes() {
    let Some(pythonpath) = python_client() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::server(dir.path()).await;
    let client = common::client(&server.kubeconfig).await;
    common::install_crds(&client).await;
    let kubeconfig = server.kubeconfig.clone();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client.py");
    // The client blocks; keep it off the server's runtime threads.
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .env("KUBECONFIG", &kubeconfig)
            .env("PYTHONPATH", &pythonpath)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("python3 runs")
    })
    .await
    .expect("joined");
    server.shutdown().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tests/python/client.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
