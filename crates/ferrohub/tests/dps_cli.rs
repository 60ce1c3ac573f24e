//! `ferrohub dps` through the binary: init (ID scope, certificates, linked hubs, shared root),
//! key derivation, help texts, and one run against a live hub and provisioning service.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

mod common;
use common::{bin, ok, run, text};
use test_support::net::free_port;

use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::Duration;

/// A linked-hub connection string that is never dialled by the tests that use it.
const FAKE_HUB: &str = "HostName=hub.local;SharedAccessKeyName=iothubowner;\
    SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn dps_init(dir: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["dps", "init", "--dir"])
        .arg(dir)
        .args(["--hostname", "localhost", "--hostname", "127.0.0.1"])
        .args(["--mqtt", "127.0.0.1:18883", "--https", "127.0.0.1:18443"])
        .args(extra)
        .output()
        .unwrap()
}

fn id_scope_ok(s: &str) -> bool {
    s.len() == 11
        && s.starts_with("0ne")
        && s[3..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
}

#[test]
fn init_writes_a_loadable_config_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dps");
    let out = ok(dps_init(&dir, &["--link-hub", FAKE_HUB]));
    let scope_line = out.lines().find(|l| l.starts_with("ID scope: ")).unwrap();
    let scope = scope_line.trim_start_matches("ID scope: ").trim();
    assert!(id_scope_ok(scope), "{scope}");
    assert!(
        out.contains(
            "HostName=localhost;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey="
        ),
        "{out}"
    );
    assert!(
        out.contains("Start it with: ferrohub dps --config"),
        "{out}"
    );
    let config = dir.join("dps.toml");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&config).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "dps.toml holds keys");
    }
    let cfg = dps::config::DpsConfig::load(&config).unwrap();
    assert_eq!(cfg.id_scope, scope);
    assert_eq!(cfg.hostname, "localhost");
    assert_eq!(cfg.storage.database, dir.join("data/dps.sqlite"));
    assert_eq!(cfg.linked_hubs.len(), 1);
    assert_eq!(cfg.linked_hubs[0].hostname(), "hub.local");
    assert_eq!(cfg.linked_hubs[0].allocation_weight, 1);
    let names: Vec<&str> = cfg.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "provisioningserviceowner",
            "enrollmentread",
            "enrollmentwrite"
        ]
    );

    // The other read-only commands.
    let c = ["--config", config.to_str().unwrap()];
    let shown = ok(run(&[&["dps", "id-scope"][..], &c].concat()));
    assert_eq!(shown.trim(), scope);
    let cs = ok(run(&[&["dps", "connection-string"][..], &c].concat()));
    assert!(out.contains(cs.trim()));
    let read = ok(run(&[
        &["dps", "connection-string", "--policy", "enrollmentread"][..],
        &c,
    ]
    .concat()));
    assert!(
        read.contains("SharedAccessKeyName=enrollmentread;"),
        "{read}"
    );
    let missing = run(&[&["dps", "connection-string", "--policy", "nope"][..], &c].concat());
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("enrollmentwrite"),
        "{}",
        text(&missing)
    );

    // The server certificate verifies against the new root.
    let root = dir.join("certs/root-ca.cert.pem");
    let server = dir.join("certs/server-localhost-full-chain.cert.pem");
    assert!(verifies(&server, &root));

    let again = dps_init(&dir, &["--link-hub", FAKE_HUB]);
    assert!(!again.status.success());
    assert!(text(&again).contains("--force"), "{}", text(&again));
    ok(dps_init(
        &dir,
        &[
            "--link-hub",
            FAKE_HUB,
            "--force",
            "--id-scope",
            "0ne00ABCDEF",
        ],
    ));
    let cfg = dps::config::DpsConfig::load(&config).unwrap();
    assert_eq!(cfg.id_scope, "0ne00ABCDEF");
}

#[test]
fn init_refuses_a_link_without_a_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dps");
    let device = "HostName=hub.local;DeviceId=dev1;\
        SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let out = dps_init(&dir, &["--link-hub", device]);
    assert!(!out.status.success());
    let err = text(&out);
    assert!(err.contains("SharedAccessKeyName"), "{err}");
    assert!(err.contains("iothubowner"), "{err}");
    assert!(
        !err.contains("MDEyMzQ1"),
        "the key must not be echoed: {err}"
    );
    assert!(!dir.join("dps.toml").exists());
    let none = dps_init(&dir, &[]);
    assert!(!none.status.success(), "--link-hub is required");
}

fn verifies(leaf: &Path, root: &Path) -> bool {
    let out = bin()
        .args(["certs", "verify"])
        .arg(leaf)
        .arg("--trust")
        .arg(root)
        .args(["--purpose", "server"])
        .output()
        .unwrap();
    out.status.success()
}

#[test]
fn init_reuses_a_given_root() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    common::certs_ok(&pki, &["root-ca", "--cn", "Shared Root"]);
    let dir = tmp.path().join("dps");
    let out = ok(dps_init(
        &dir,
        &["--link-hub", FAKE_HUB, "--ca-dir", pki.to_str().unwrap()],
    ));
    assert!(out.contains("root-ca.cert.pem"), "{out}");
    let shared = pki.join("root-ca.cert.pem");
    assert_eq!(
        std::fs::read(&shared).unwrap(),
        std::fs::read(dir.join("certs/root-ca.cert.pem")).unwrap()
    );
    let server = dir.join("certs/server-localhost-full-chain.cert.pem");
    assert!(verifies(&server, &shared));
    // A root created elsewhere does not verify it.
    let other = tmp.path().join("other");
    common::certs_ok(&other, &["root-ca"]);
    assert!(!verifies(&server, &other.join("root-ca.cert.pem")));

    // --hub-ca is stored as an absolute path.
    let dir2 = tmp.path().join("dps2");
    ok(dps_init(
        &dir2,
        &["--link-hub", FAKE_HUB, "--hub-ca", shared.to_str().unwrap()],
    ));
    let cfg = dps::config::DpsConfig::load(&dir2.join("dps.toml")).unwrap();
    assert_eq!(cfg.linked_hubs[0].ca.as_deref(), Some(shared.as_path()));
    // A missing --ca-dir is named.
    let bad = dps_init(
        &tmp.path().join("dps3"),
        &["--link-hub", FAKE_HUB, "--ca-dir", "/nonexistent"],
    );
    assert!(!bad.status.success());
    assert!(text(&bad).contains("root-ca.cert.pem"), "{}", text(&bad));
}

#[test]
fn derive_key_matches_the_azure_test_vector() {
    let out = ok(run(&[
        "dps",
        "derive-key",
        "--group-key",
        "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
        "--registration-id",
        "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6",
    ]));
    assert_eq!(out.trim(), "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
    let bad = run(&[
        "dps",
        "derive-key",
        "--group-key",
        "not base64!",
        "--registration-id",
        "x",
    ]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("--group-key"), "{}", text(&bad));
}

#[test]
fn every_command_has_help_with_an_example() {
    let commands: &[&[&str]] = &[
        &[],
        &["init"],
        &["run"],
        &["id-scope"],
        &["connection-string"],
        &["derive-key"],
        &["enrollment-group", "create"],
        &["enrollment-group", "show"],
        &["enrollment-group", "list"],
        &["enrollment-group", "delete"],
        &["enrollment", "create"],
        &["enrollment", "show"],
        &["enrollment", "list"],
        &["enrollment", "delete"],
        &["registration", "show"],
        &["registration", "delete"],
        &["ca", "upload"],
        &["ca", "verification-code"],
        &["ca", "verify"],
        &["ca", "list"],
        &["ca", "delete"],
    ];
    for c in commands {
        let out = bin().arg("dps").args(*c).arg("--help").output().unwrap();
        let help = text(&out);
        assert!(out.status.success(), "dps {c:?} --help: {help}");
        assert!(help.contains("Example"), "dps {c:?} --help: {help}");
        assert!(help.contains("ferrohub dps"), "dps {c:?} --help: {help}");
    }
}

/// Child processes killed when the test ends, however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(children: &mut Children, args: &[&str], config: &Path, https: u16) {
    let child = bin()
        .args(args)
        .arg("--config")
        .arg(config)
        .spawn()
        .unwrap();
    children.0.push(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", https)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("ferrohub {args:?} did not start listening on {https}");
}

struct Env {
    dps_config: PathBuf,
}

impl Env {
    fn dps(&self, args: &[&str]) -> Output {
        bin()
            .arg("dps")
            .args(args)
            .arg("--config")
            .arg(&self.dps_config)
            .output()
            .unwrap()
    }
}

/// A running hub on loopback high ports: its directory, connection string and HTTPS port.
fn live_hub(root: &Path, children: &mut Children) -> (PathBuf, String, u16) {
    let hub_dir = root.join("hub");
    let (hub_mqtt, hub_https) = (free_port(), free_port());
    ok(bin()
        .args(["hub", "init", "--dir"])
        .arg(&hub_dir)
        .args(["--hostname", "localhost", "--hostname", "127.0.0.1"])
        .args(["--mqtt", &format!("127.0.0.1:{hub_mqtt}")])
        .args(["--https", &format!("127.0.0.1:{hub_https}")])
        .output()
        .unwrap());
    let hub_config = hub_dir.join("hub.toml");
    let hub_cs = ok(bin()
        .args(["hub", "connection-string", "--config"])
        .arg(&hub_config)
        .output()
        .unwrap());
    start(children, &["hub"], &hub_config, hub_https);
    (hub_dir, hub_cs.trim().to_owned(), hub_https)
}

/// A hub and a DPS linked to it, both on loopback high ports.
fn hub_and_dps(root: &Path, children: &mut Children) -> Env {
    let (hub_dir, hub_cs, hub_https) = live_hub(root, children);
    let dps_dir = root.join("dps");
    let (mqtt, https) = (free_port(), free_port());
    ok(bin()
        .args(["dps", "init", "--dir"])
        .arg(&dps_dir)
        .args(["--hostname", "localhost", "--hostname", "127.0.0.1"])
        .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
        .args(["--https", &format!("127.0.0.1:{https}")])
        .args(["--link-hub", &hub_cs])
        .args(["--hub-address", &format!("127.0.0.1:{hub_https}")])
        .arg("--ca-dir")
        .arg(hub_dir.join("certs"))
        .output()
        .unwrap());
    let dps_config = dps_dir.join("dps.toml");
    start(children, &["dps"], &dps_config, https);
    Env { dps_config }
}

#[test]
fn enrollments_and_registrations_against_a_live_service() {
    let tmp = tempfile::tempdir().unwrap();
    let mut children = Children(Vec::new());
    let env = hub_and_dps(tmp.path(), &mut children);

    let created = ok(env.dps(&["enrollment-group", "create", "grp1", "--symmetric-key"]));
    assert!(created.contains("grp1"), "{created}");
    assert!(created.contains("symmetricKey"), "{created}");
    let shown: serde_json::Value = serde_json::from_str(&ok(env.dps(&[
        "enrollment-group",
        "show",
        "grp1",
        "--json",
    ])))
    .unwrap();
    let key = shown["attestation"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap();
    assert!(key.len() > 20, "{shown}");
    let listed = ok(env.dps(&["enrollment-group", "list"]));
    assert!(listed.contains("grp1"), "{listed}");

    let dev = ok(env.dps(&["enrollment", "create", "dev1", "--symmetric-key", "--edge"]));
    assert!(dev.contains("dev1"), "{dev}");
    let dev = ok(env.dps(&["enrollment", "show", "dev1"]));
    assert!(dev.contains("iotEdge:          true"), "{dev}");
    assert!(dev.contains("primaryKey:"), "{dev}");
    assert!(ok(env.dps(&["enrollment", "list"])).contains("dev1"));
    ok(env.dps(&["enrollment", "delete", "dev1"]));
    let gone = env.dps(&["enrollment", "show", "dev1"]);
    assert!(!gone.status.success());
    assert!(text(&gone).contains("not found"), "{}", text(&gone));

    let nobody = env.dps(&["registration", "show", "nobody"]);
    assert!(!nobody.status.success());
    let err = text(&nobody);
    assert!(err.contains("Registration nobody not found"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// `--allow-overwrite` reaches the service as `allowOverwrite` and `show`/`list` print it; it is
/// off unless given.
#[test]
fn enrollments_opt_in_to_adopting_existing_hub_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let mut children = Children(Vec::new());
    let env = hub_and_dps(tmp.path(), &mut children);

    ok(env.dps(&[
        "enrollment-group",
        "create",
        "adopt",
        "--symmetric-key",
        "--allow-overwrite",
    ]));
    ok(env.dps(&["enrollment-group", "create", "plain", "--symmetric-key"]));
    let shown: serde_json::Value = serde_json::from_str(&ok(env.dps(&[
        "enrollment-group",
        "show",
        "adopt",
        "--json",
    ])))
    .unwrap();
    assert_eq!(shown["allowOverwrite"], true, "{shown}");
    let adopt = ok(env.dps(&["enrollment-group", "show", "adopt"]));
    assert!(adopt.contains("allowOverwrite:   true"), "{adopt}");
    let plain = ok(env.dps(&["enrollment-group", "show", "plain"]));
    assert!(plain.contains("allowOverwrite:   false"), "{plain}");
    let listed = ok(env.dps(&["enrollment-group", "list"]));
    let row = |id: &str| {
        let line = listed.lines().find(|l| l.starts_with(id)).unwrap();
        line.split_whitespace().collect::<Vec<_>>()
    };
    assert!(
        listed.lines().next().unwrap().contains("overwrite"),
        "{listed}"
    );
    assert_eq!(row("adopt")[4], "true", "{listed}");
    assert_eq!(row("plain")[4], "false", "{listed}");

    let dev = ok(env.dps(&[
        "enrollment",
        "create",
        "dev1",
        "--symmetric-key",
        "--allow-overwrite",
    ]));
    assert!(dev.contains("allowOverwrite:   true"), "{dev}");
}

/// A linked hub whose TLS certificate the service does not trust (its own new root, no
/// `--hub-ca`) is named with the fix at `dps init` and again when the service starts, before any
/// device registers.
#[test]
fn an_untrusted_hub_certificate_is_named_at_init_and_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let mut children = Children(Vec::new());
    let (_, hub_cs, hub_https) = live_hub(tmp.path(), &mut children);
    let dir = tmp.path().join("dps");
    let hub_address = format!("127.0.0.1:{hub_https}");
    let init = bin()
        .args(["dps", "init", "--dir"])
        .arg(&dir)
        .args(["--hostname", "localhost"])
        .args(["--mqtt", &format!("127.0.0.1:{}", free_port())])
        .args(["--https", &format!("127.0.0.1:{}", free_port())])
        .args(["--link-hub", &hub_cs, "--hub-address", &hub_address])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", text(&init));
    let says_it = |out: &str| {
        let line = out
            .lines()
            .find(|l| l.contains("its TLS certificate is not trusted"))
            .unwrap_or_else(|| panic!("no untrusted-hub line in:\n{out}"));
        assert!(line.contains("linked hub localhost"), "{line}");
        assert!(line.contains(&hub_address), "{line}");
        assert!(line.contains("--hub-ca FILE"), "{line}");
        assert!(line.contains("[[linked_hub]]"), "{line}");
        assert!(line.contains("root-ca.cert.pem"), "{line}");
    };
    says_it(&String::from_utf8_lossy(&init.stderr));

    let log = tmp.path().join("dps.log");
    let child = bin()
        .args(["dps", "--config"])
        .arg(dir.join("dps.toml"))
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    children.0.push(child);
    for _ in 0..200 {
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        if out.contains("not trusted") {
            return says_it(&out);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the service did not name the untrusted hub within 10 s:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
