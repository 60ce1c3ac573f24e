//! Issue 19, item 1: the data of every service is for its own uid only. A hub, a provisioning
//! service and an edge gateway run in-process, the identity service through the binary
//! (`config apply`, then `identity run`, with its umask); then uid 65534 tries to read every file
//! and list every directory under their data directories (`setpriv … cat FILE` / `ls DIR`): none
//! may succeed. Looser paths left by an earlier version are narrowed on start. The identity
//! service's sockets stay reachable for other uids (module processes).
//!
//! Switching to uid 65534 needs root: as another user these tests print SKIPPED and pass.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mqtt_codec::Packet;
use test_support::dps as dpstest;
use test_support::gateway as support;
use test_support::hub as hubtest;

/// Whether this process may switch to uid 65534; prints why the test is skipped otherwise.
fn root_or_skip(test: &str) -> bool {
    let root = rustix::process::getuid().is_root();
    if !root {
        println!(
            "SKIPPED {test}: needs root to run `setpriv --reuid 65534` (run the tests as root)"
        );
    }
    root
}

/// Runs `args` as uid/gid 65534 without supplementary groups; whether it succeeded.
fn as_nobody(args: &[&std::ffi::OsStr]) -> bool {
    Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Whether uid 65534 can read `p` (`cat` a file, `ls` a directory).
fn nobody_reads(p: &Path) -> bool {
    let tool = if p.is_dir() { "ls" } else { "cat" };
    as_nobody(&[tool.as_ref(), p.as_os_str()])
}

/// Makes `dir` (a test's temporary directory, 0700) reachable like `/var/lib`, and checks that
/// uid 65534 can read a plain 0644 file in it: the probe that the checks below are not vacuous.
fn open_up(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let probe = dir.join("probe");
    std::fs::write(&probe, b"public").unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(
        nobody_reads(&probe),
        "setpriv/cat as uid 65534 does not work here"
    );
    std::fs::remove_file(probe).unwrap();
}

/// Every file and directory in `paths` and under them (symbolic links and sockets aside).
fn everything(paths: &[PathBuf]) -> Vec<PathBuf> {
    let (mut out, mut pending) = (Vec::new(), paths.to_vec());
    while let Some(p) = pending.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            pending.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if !m.is_file() {
            continue;
        }
        out.push(p);
    }
    out
}

/// Asserts that uid 65534 reads none of `paths` and what is under them, and that each is 0600
/// (files) or 0700 (directories); returns how many were tried.
fn assert_private(what: &str, paths: &[PathBuf]) -> usize {
    let all = everything(paths);
    assert!(!all.is_empty(), "{what}: nothing to check in {paths:?}");
    for p in &all {
        assert!(!nobody_reads(p), "{what}: uid 65534 reads {}", p.display());
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{what}: {} is {mode:o}", p.display());
    }
    all.len()
}

/// `name` and its `-wal`/`-shm`/`-journal` siblings that exist.
fn sqlite_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", db.display())))
        .filter(|p| p.exists())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_dps_and_gateway_data_is_unreadable_to_other_users() {
    if !root_or_skip("hub_dps_and_gateway_data_is_unreadable_to_other_users") {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    open_up(base.path());
    let hub_data = base.path().join("hub");
    let t = hubtest::TestHub::start_with(|c| {
        c.storage.registry = hub_data.join("registry.sqlite");
        c.storage.events = hub_data.join("events");
    })
    .await;
    let gw = support::edge_device(&t).await;
    support::child(&t, &gw, "child").await;
    let g = support::start_with(&t, &[], |c| c.data_dir = base.path().join("edge")).await;
    let mut child = g.connect("child").await;
    child
        .send(&hubtest::publish("devices/child/messages/events/", 1, b"x"))
        .await;
    assert!(matches!(child.recv().await, Some(Packet::PubAck(_))));
    for _ in 0..400 {
        if g.gateway
            .forwarded
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        t.hub.events.next_offset() > 0,
        "the telemetry reached the hub"
    );

    let d = dpstest::TestDps::start(1).await;
    let (status, _) = d
        .put(
            "/enrollments/dev1",
            serde_json::json!({"registrationId": "dev1", "attestation": {"type": "symmetricKey",
                "symmetricKey": {"primaryKey": hubtest::KEY, "secondaryKey": hubtest::KEY}}}),
        )
        .await;
    assert!(status.is_success(), "{status}");
    open_up(d.dir.path());
    let db = d.dps.config.storage.database.clone();
    let dps_files = [
        sqlite_files(&db),
        sqlite_files(&db.with_extension("certificates.sqlite")),
    ];

    let n = assert_private("hub", &[hub_data])
        + assert_private("gateway", &[base.path().join("edge")])
        + assert_private("dps", &dps_files.concat());
    let (dir, cfg, root) = t.stop().await;
    loosened_files_are_narrowed_on_start(dir, cfg, root).await;
    println!(
        "RELIABILITY|private data: hub, DPS and gateway files|in-process hub, DPS and gateway after device registration, an enrollment and telemetry through the gateway|uid 65534 cats/lists {n} files and directories of the registry, events log, DPS databases, gateway scope, store and offsets|none readable; files 0600, directories 0700|0"
    );
}

/// The hub restarted on a registry, log segment and log directory an earlier version left 0644
/// and 0755: all narrowed to 0600 and 0700 at open.
async fn loosened_files_are_narrowed_on_start(
    dir: tempfile::TempDir,
    cfg: hub::config::HubConfig,
    root: PathBuf,
) {
    let (registry, events) = (cfg.storage.registry.clone(), cfg.storage.events.clone());
    let segment = everything(std::slice::from_ref(&events))
        .into_iter()
        .find(|p| p.is_file())
        .unwrap();
    let data = registry.parent().unwrap().to_path_buf();
    for (p, mode) in [
        (&data, 0o755),
        (&events, 0o755),
        (&registry, 0o644),
        (&segment, 0o644),
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        assert!(nobody_reads(p), "{} loosened", p.display());
    }
    let t = hubtest::TestHub::start_in(dir, cfg, root).await;
    for p in [&registry, &segment, &events] {
        assert!(!nobody_reads(p), "{} narrowed at start", p.display());
    }
    let _ = t.stop().await;
}

/// `ferrohub ARGS` with the test's log settings.
fn ferrohub(args: &[&str], root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferrohub"));
    c.args(args).arg("--root").arg(root);
    c.env("FERROHUB_LOG", "warn");
    c
}

/// `method path` on the Unix socket `socket` as root (or as uid 65534 with `nobody`): the status.
fn curl(socket: &Path, method: &str, path: &str, body: Option<&str>, nobody: bool) -> String {
    let mut args: Vec<std::ffi::OsString> = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"]
        .map(Into::into)
        .to_vec();
    args.extend([
        "-X".into(),
        method.into(),
        "--unix-socket".into(),
        socket.into(),
    ]);
    if let Some(b) = body {
        args.extend(["-H".into(), "content-type: application/json".into()]);
        args.extend(["-d".into(), b.into()]);
    }
    args.push(format!("http://d{path}").into());
    let mut c = if nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"]);
        c.args(&args);
        c
    } else {
        let mut c = Command::new(&args[0]);
        c.args(&args[1..]);
        c
    };
    String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn identity_service_stores_are_private_and_its_sockets_stay_reachable() {
    if !root_or_skip("identity_service_stores_are_private_and_its_sockets_stay_reachable") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    open_up(dir.path());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "hostname = \"dev.example\"\n[provisioning]\nsource = \"manual\"\n\
         connection_string = \"HostName=hub.example;DeviceId=dev;SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZg==\"\n\
         [[principal]]\nuid = 65534\nname = \"nobodymod\"\nidtype = [\"module\"]\n",
    )
    .unwrap();
    let root = dir.path().join("trial");
    let out = ferrohub(&["config", "apply", "-c", config.to_str().unwrap()], &root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What an earlier version left: a world-readable key in a world-readable key store.
    let keys = root.join("var/lib/ferrohub/keyd/keys");
    std::fs::create_dir_all(&keys).unwrap();
    let stale = keys.join("stale-0.key");
    std::fs::write(&stale, [7u8; 32]).unwrap();
    for (p, m) in [(&stale, 0o644), (&keys, 0o755)] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    let log = dir.path().join("identity.log");
    let mut run = ferrohub(&["identity", "run"], &root);
    run.stderr(std::fs::File::create(&log).unwrap());
    let daemon = Running(run.spawn().unwrap());
    let sockets = root.join("run/ferrohub");
    let (keyd, idd) = (sockets.join("keyd.sock"), sockets.join("identityd.sock"));
    for _ in 0..400 {
        if curl(
            &idd,
            "GET",
            "/trust-bundle?api-version=2020-09-01",
            None,
            false,
        ) != "000"
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    // Keys and a certificate get written.
    let v = "api-version=2020-09-01";
    let body = r#"{"keyId": "k1", "usage": "sign"}"#;
    assert_eq!(
        curl(&keyd, "POST", &format!("/key?{v}"), Some(body), false),
        "200"
    );
    let body = r#"{"keyId": "p1"}"#;
    assert_eq!(
        curl(&keyd, "POST", &format!("/keypair?{v}"), Some(body), false),
        "200"
    );
    let (ca, _, _) = hubtest::server_pki(dir.path());
    let pem = std::fs::read_to_string(ca).unwrap();
    let body = serde_json::json!({ "pem": pem }).to_string();
    let certd = sockets.join("certd.sock");
    assert_eq!(
        curl(
            &certd,
            "PUT",
            &format!("/certificates/c1?{v}"),
            Some(&body),
            false
        ),
        "201"
    );
    let status = curl(
        &idd,
        "GET",
        &format!("/identities/identity?{v}"),
        None,
        false,
    );
    assert_eq!(status, "200", "the device identity");
    // Other uids still reach the sockets (authorization is per request, by uid).
    for socket in [&keyd, &idd, &certd] {
        let code = curl(socket, "GET", "/metrics", None, true);
        assert_eq!(code, "200", "uid 65534 on {}", socket.display());
    }
    // The homes of keyd, certd and identityd (their parent is shared, and was made here).
    let homes = ["keyd", "certd", "identityd"].map(|h| root.join("var/lib/ferrohub").join(h));
    let n = assert_private("identity service", &homes);
    drop(daemon);
    let log = std::fs::read_to_string(&log).unwrap();
    for (path, old, new) in [(&stale, "0644", "0600"), (&keys, "0755", "0700")] {
        let line = log
            .lines()
            .find(|l| l.contains("Tightened") && l.contains(&*path.to_string_lossy()))
            .unwrap_or_else(|| panic!("no log line for {}: {log}", path.display()));
        assert!(line.contains(old) && line.contains(new), "{line}");
    }
    println!(
        "RELIABILITY|private data: identity service stores|`ferrohub identity run` (umask 077) after `config apply`, a key, a key pair and the device identity read, a 0644 key and 0755 key directory left by an earlier version|uid 65534 cats/lists {n} files and directories under var/lib/ferrohub; calls /metrics on the three sockets|none readable (0600/0700), the stale key and directory narrowed with a log line each; sockets answer 200|0"
    );
}
