//! The official Python Kubernetes client (PyPI `kubernetes`) against the
//! embedded control plane: a second, independent client library, so the
//! API is not only what kube-rs happens to accept. The checks are in
//! tests/python/client.py; `scripts/test` fetches the client with
//! `scripts/fetch-python-client` and sets `GANTRY_PYTHONPATH`.

mod common;

use std::{path::Path, process::Command};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_creates_lists_watches_patches_and_deletes() {
    let client_installed = |p: &Path| p.join("kubernetes").is_dir();
    let cached = Path::new(".cache/python");
    let script = "scripts/fetch-python-client";
    let Some(pythonpath) = common::fetched("GANTRY_PYTHONPATH", cached, script, client_installed)
    else {
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
