//! `gantry apiserver` as a user runs it: it prints where it listens,
//! writes a kubeconfig that a real client can use, and stops on SIGTERM.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api,
    api::{ListParams, PostParams},
};

#[test]
fn gantry_apiserver_keeps_serving_when_nobody_reads_its_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = apiserver(dir.path(), &kubeconfig, "127.0.0.1:0")
        .stderr(Stdio::null())
        .spawn()
        .expect("gantry runs");
    // Close the reading end before the server has printed anything.
    drop(child.stdout.take());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !kubeconfig.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(kubeconfig.exists(), "the server started");
    // It has tried to print its banner by now; it must still be serving.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        child.try_wait().expect("status").is_none(),
        "the server exited"
    );
    child.kill().expect("stopped");
    child.wait().expect("reaped");
}

#[tokio::test]
async fn gantry_apiserver_serves_kubectl_compatible_clients_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = apiserver(&dir.path().join("data"), &kubeconfig, "127.0.0.1:0")
        .spawn()
        .expect("gantry runs");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let first = lines.next().expect("a line").expect("readable");
    assert!(
        first.starts_with("gantry apiserver listening on https://127.0.0.1:"),
        "{first}"
    );
    let second = lines.next().expect("a line").expect("readable");
    assert_eq!(second, format!("kubeconfig: {}", kubeconfig.display()));

    let namespaces: Api<Namespace> = Api::all(common::client(&kubeconfig).await);
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .expect("listed")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    let default = namespaces.get("default").await.expect("default namespace");
    let uid = default.metadata.uid.expect("a uid");
    assert_eq!(uid.len(), 36, "a UUID: {uid}");
    assert!(default.metadata.creation_timestamp.is_some());

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.wait().expect("exits");
    assert!(exit.success(), "{exit:?}");
}

/// `gantry apiserver` on `listen`, its output piped.
fn apiserver(data: &Path, kubeconfig: &Path, listen: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gantry"));
    command
        .arg("apiserver")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", listen, "--kubeconfig"])
        .arg(kubeconfig)
        .stdout(Stdio::piped());
    command
}

fn spawn_server(data: &Path, kubeconfig: &Path, listen: &str) -> Child {
    let mut child = apiserver(data, kubeconfig, listen)
        .spawn()
        .expect("gantry runs");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let first = lines.next().expect("a line").expect("readable");
    assert!(
        first.starts_with("gantry apiserver listening on"),
        "{first}"
    );
    // Read the rest as the server writes it, as a terminal would.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_server_during_a_write_storm_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, kubeconfig) = (dir.path().join("data"), dir.path().join("kubeconfig"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("address")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = spawn_server(&data, &kubeconfig, &listen);
    let api: Api<ConfigMap> = Api::namespaced(common::client(&kubeconfig).await, "default");

    let acked = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let mut writers = Vec::new();
    for w in 0..16 {
        let (api, acked) = (api.clone(), Arc::clone(&acked));
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let name = format!("storm-{w}-{n}");
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name}, "data": {"n": n.to_string()}
                }))
                .expect("config map");
                // Once the server is killed, writes fail: stop there.
                let Ok(created) = api.create(&PostParams::default(), &cm).await else {
                    return;
                };
                let revision = created.metadata.resource_version.expect("rv");
                acked.lock().expect("lock").push((name, revision));
            }
        }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acked.lock().expect("lock").len() < 1000 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");
    for writer in writers {
        writer.await.expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() >= 1000,
        "only {} writes acknowledged",
        acked.len()
    );

    let mut server = spawn_server(&data, &kubeconfig, &listen);
    let api: Api<ConfigMap> = Api::namespaced(common::client(&kubeconfig).await, "default");
    let stored: std::collections::HashMap<String, String> = api
        .list(&ListParams::default())
        .await
        .expect("listed")
        .items
        .into_iter()
        .filter_map(|cm| Some((cm.metadata.name?, cm.metadata.resource_version?)))
        .collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|(name, revision)| stored.get(name) != Some(revision))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
    server.kill().expect("stopped");
    server.wait().expect("reaped");
}

/// Open `count` connections to `port` from `from` and say nothing on them;
/// how many the server still holds open a moment later.
async fn connections_held(port: u16, from: [u8; 4], count: usize) -> usize {
    let mut streams = Vec::new();
    for _ in 0..count {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind((std::net::Ipv4Addr::from(from), 0).into())
            .expect("bind");
        let server = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        streams.push(socket.connect(server).await.expect("TCP connects"));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    streams
        .iter()
        .filter(|stream| {
            matches!(stream.try_read(&mut [0; 1]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count()
}

/// `gantry apiserver` under a low open-file limit; its port.
fn spawn_limited(data: &Path, kubeconfig: &Path, extra: &[&str]) -> (Child, u16) {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        // A soft limit of 256 under a hard one of 512: the server lifts
        // the first to the second before deriving its caps from it.
        .arg(r#"ulimit -Sn 256 && ulimit -Hn 512 && exec "$@""#)
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_gantry"))
        .arg("apiserver")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(kubeconfig)
        .args(extra)
        .stdout(Stdio::piped());
    let mut child = command.spawn().expect("gantry runs");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let first = lines.next().expect("a line").expect("readable");
    let port = first
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("a port in {first:?}"));
    std::thread::spawn(move || lines.for_each(drop));
    (child, port)
}

#[tokio::test]
async fn gantry_apiserver_caps_connections_by_its_open_file_limit_and_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let (mut server, port) = spawn_limited(&dir.path().join("data"), &kubeconfig, &[]);
    // 512 files, less 128 kept back, a quarter per address: 96.
    assert_eq!(connections_held(port, [127, 0, 0, 2], 120).await, 96);
    // The flooded address is full; loopback still gets in.
    let namespaces: Api<Namespace> = Api::all(common::client(&kubeconfig).await);
    namespaces
        .get("default")
        .await
        .expect("served during a flood");
    server.kill().expect("stopped");
    server.wait().expect("reaped");

    let (mut server, port) = spawn_limited(
        &dir.path().join("data"),
        &kubeconfig,
        &["--max-connections-per-address", "5"],
    );
    assert_eq!(connections_held(port, [127, 0, 0, 2], 8).await, 5);
    server.kill().expect("stopped");
    server.wait().expect("reaped");
}

/// `gantry apiserver` on `data`, which must refuse to start: what it said.
fn refused_start(data: &Path, kubeconfig: &Path) -> String {
    let mut child = apiserver(data, kubeconfig, "127.0.0.1:0")
        .stderr(Stdio::piped())
        .spawn()
        .expect("gantry runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("status") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().expect("stopped");
            panic!("the server started on a store that lost writes");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut said = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut said)
        .expect("stderr");
    assert!(!status.success(), "{said}");
    said
}

/// `gantry apiserver ARGS` to completion: its stdout.
fn store_command(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("apiserver")
        .args(args)
        .output()
        .expect("gantry runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("listed") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copied");
        }
    }
}

async fn config_maps(api: &Api<ConfigMap>) -> Vec<(String, String)> {
    api.list(&ListParams::default())
        .await
        .expect("listed")
        .items
        .into_iter()
        .filter_map(|cm| Some((cm.metadata.name?, cm.metadata.resource_version?)))
        .collect()
}

fn config_map(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"v": value}}))
        .expect("config map")
}

#[tokio::test]
async fn a_lost_or_damaged_write_ahead_log_is_refused_until_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, kubeconfig) = (dir.path().join("data"), dir.path().join("kubeconfig"));
    let mut server = spawn_server(&data, &kubeconfig, "127.0.0.1:0");
    let api: Api<ConfigMap> = Api::namespaced(common::client(&kubeconfig).await, "default");
    for n in 0..30 {
        api.create(&PostParams::default(), &config_map(&format!("cm-{n}"), "1"))
            .await
            .expect("created");
    }
    // The store records how far it has committed at most every 100 ms:
    // writes older than that are what a lost log must not silently take.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    api.create(&PostParams::default(), &config_map("last", "1"))
        .await
        .expect("created");
    let seen: u64 = api
        .list(&ListParams::default())
        .await
        .expect("listed")
        .metadata
        .resource_version
        .expect("rv")
        .parse()
        .expect("a number");
    // Killed: the last writes are in the write-ahead log only.
    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");
    let wal = data.join("store/gantry.db-wal");
    assert!(wal.exists(), "the writes are in the write-ahead log");
    let damaged = dir.path().join("damaged");
    copy_dir(&data, &damaged);

    // The log deleted.
    std::fs::remove_file(&wal).expect("WAL deleted");
    let _ = std::fs::remove_file(data.join("store/gantry.db-shm"));
    let said = refused_start(&data, &kubeconfig);
    for hint in [
        "write-ahead log",
        "gantry apiserver repair",
        "gantry apiserver restore",
    ] {
        assert!(said.contains(hint), "{hint:?} in {said}");
    }
    // One frame of the log damaged.
    let wal = damaged.join("store/gantry.db-wal");
    let mut bytes = std::fs::read(&wal).expect("WAL");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&wal, bytes).expect("damaged");
    let said = refused_start(&damaged, &kubeconfig);
    assert!(said.contains("gantry apiserver repair"), "{said}");

    // Accepting what is left: the server starts, past every revision seen.
    let repaired = store_command(&["repair".as_ref(), "--data-dir".as_ref(), data.as_os_str()]);
    assert!(repaired.contains("continues at revision"), "{repaired}");
    let mut server = spawn_server(&data, &kubeconfig, "127.0.0.1:0");
    let api: Api<ConfigMap> = Api::namespaced(common::client(&kubeconfig).await, "default");
    let created = api
        .create(&PostParams::default(), &config_map("after", "1"))
        .await
        .expect("writes again");
    let revision: u64 = created
        .metadata
        .resource_version
        .expect("rv")
        .parse()
        .expect("a number");
    assert!(
        revision > seen,
        "{revision} reuses a revision a client saw ({seen})"
    );
    server.kill().expect("stopped");
    server.wait().expect("reaped");
}

#[tokio::test]
async fn backup_while_serving_then_restore_keeps_every_object_and_resource_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, kubeconfig) = (dir.path().join("data"), dir.path().join("kubeconfig"));
    let mut server = spawn_server(&data, &kubeconfig, "127.0.0.1:0");
    let api: Api<ConfigMap> = Api::namespaced(common::client(&kubeconfig).await, "default");
    for name in ["a", "b", "c", "d", "e"] {
        api.create(&PostParams::default(), &config_map(name, "1"))
            .await
            .expect("created");
    }
    api.replace("c", &PostParams::default(), &config_map("c", "2"))
        .await
        .expect("updated");
    api.delete("d", &kube::api::DeleteParams::default())
        .await
        .expect("deleted");
    let before = config_maps(&api).await;
    let backup = dir.path().join("backup.db");
    let said = store_command(&[
        "backup".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        backup.as_os_str(),
    ]);
    assert!(said.contains("backed up at revision"), "{said}");
    // A write after the backup is not in it.
    api.create(&PostParams::default(), &config_map("later", "1"))
        .await
        .expect("created");
    let old_revision = before.iter().map(|(_, rv)| rv.clone()).max().expect("some");
    server.kill().expect("stopped");
    server.wait().expect("reaped");

    let restored = dir.path().join("restored");
    let restore = [
        "restore".as_ref(),
        "--data-dir".as_ref(),
        restored.as_os_str(),
        backup.as_os_str(),
    ];
    store_command(&restore);
    let again = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("apiserver")
        .args(restore)
        .output()
        .expect("gantry runs");
    assert!(!again.status.success(), "a store is never restored over");

    let kubeconfig = dir.path().join("restored.kubeconfig");
    let mut server = spawn_server(&restored, &kubeconfig, "127.0.0.1:0");
    let api: Api<ConfigMap> = Api::namespaced(common::client(&kubeconfig).await, "default");
    assert_eq!(config_maps(&api).await, before);
    // A watch from before the restore is told to list again.
    let mut events = Box::pin(
        api.watch(&kube::api::WatchParams::default(), &old_revision)
            .await
            .expect("watch opened"),
    );
    match futures::TryStreamExt::try_next(&mut events)
        .await
        .expect("an event")
    {
        Some(kube::api::WatchEvent::Error(status)) => assert_eq!(status.code, 410),
        other => panic!("expected a 410: {other:?}"),
    }
    server.kill().expect("stopped");
    server.wait().expect("reaped");
}
