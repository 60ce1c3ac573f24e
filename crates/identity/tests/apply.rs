//! `ferrohub config apply`: golden files for the super-config → daemon configs mapping, the
//! refusals (each naming file, line and key), and the all-or-nothing writer.
//!
//! Each `tests/apply/<case>/` holds `config.toml` and the expected `keyd.toml`, `certd.toml`,
//! `identityd.toml` (and `device-id` when the key is inline), planned under `/root-for-tests`.
//! After an intended change, regenerate them with `FERROHUB_BLESS=1 cargo test -p identity --test
//! apply` and review the diff.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use identity::config::apply::{self, Applied, HEADER, Paths};
use identity::config::superconfig::{Provisioning, SuperConfig};
use identity::config::{CertdConfig, IdentitydConfig, KeydConfig, load_daemon};

const FAKE_ROOT: &str = "/root-for-tests";

fn case_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apply")
        .join(case)
}

fn parse(text: &str) -> Result<SuperConfig, String> {
    SuperConfig::parse(text, Path::new("/etc/ferrohub/config.toml")).map_err(|e| e.to_string())
}

fn plan_text(text: &str) -> Applied {
    let config = parse(text).unwrap_or_else(|e| panic!("{e}"));
    apply::plan(&config, &Paths::under(Path::new(FAKE_ROOT))).unwrap_or_else(|e| panic!("{e}"))
}

fn pretty<T: serde::Serialize>(value: &T) -> String {
    toml::to_string_pretty(value).unwrap_or_else(|e| panic!("{e}"))
}

fn golden(case: &str) {
    let dir = case_dir(case);
    let config = SuperConfig::load(&dir.join("config.toml")).unwrap_or_else(|e| panic!("{e}"));
    let applied =
        apply::plan(&config, &Paths::under(Path::new(FAKE_ROOT))).unwrap_or_else(|e| panic!("{e}"));
    let bless = std::env::var_os("FERROHUB_BLESS").is_some();
    let key_file = dir.join("device-id");
    if applied.device_key.is_none() {
        if bless {
            let _ = std::fs::remove_file(&key_file);
        }
        assert!(!key_file.exists(), "{case}: no inline key, so no device-id");
    }
    let actual = [
        ("keyd.toml", pretty(&applied.keyd).into_bytes()),
        ("certd.toml", pretty(&applied.certd).into_bytes()),
        ("identityd.toml", pretty(&applied.identityd).into_bytes()),
    ];
    // What apply writes, the daemons must be able to read back.
    let reread = |name: &str, text: &[u8]| {
        let text = String::from_utf8_lossy(text).into_owned();
        let parsed = match name {
            "keyd.toml" => toml::from_str::<KeydConfig>(&text).map(drop),
            "certd.toml" => toml::from_str::<CertdConfig>(&text).map(drop),
            _ => toml::from_str::<IdentitydConfig>(&text).map(drop),
        };
        parsed.unwrap_or_else(|e| panic!("{case}/{name} does not load: {e}"));
    };
    for (name, bytes) in &actual {
        reread(name, bytes);
    }
    for (name, bytes) in actual
        .into_iter()
        .chain(applied.device_key.map(|k| ("device-id", k)))
    {
        let path = dir.join(name);
        if bless {
            std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        let expected = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(&expected),
            "{case}/{name} differs (FERROHUB_BLESS=1 regenerates it)"
        );
    }
}

macro_rules! golden {
    ($($name:ident => $case:literal,)*) => {
        $(
            #[test]
            fn $name() {
                golden($case);
            }
        )*
    };
}

golden! {
    golden_manual_connection_string => "manual-connection-string",
    golden_manual_connection_string_unpadded => "manual-connection-string-unpadded",
    golden_manual_sas_uri => "manual-sas-uri",
    golden_manual_x509 => "manual-x509",
    golden_dps_symmetric_key => "dps-symmetric-key",
    golden_dps_x509 => "dps-x509",
    golden_dps_x509_no_registration_id => "dps-x509-no-registration-id",
    golden_local_ca => "local-ca",
    golden_edge_ca_preloaded => "edge-ca-preloaded",
    golden_edge_ca_quickstart => "edge-ca-quickstart",
    golden_principals => "principals",
    golden_max_requests => "max-requests",
    golden_trust_bundle => "trust-bundle",
}

#[test]
fn padded_and_unpadded_keys_are_the_same_key() {
    let read = |case: &str| std::fs::read(case_dir(case).join("device-id")).unwrap();
    assert_eq!(
        read("manual-connection-string"),
        read("manual-connection-string-unpadded")
    );
    assert_eq!(
        read("manual-connection-string"),
        b"ferrohub-device-key-0123456789a"
    );
}

/// `parse` must fail; the message must contain every one of `needles`.
fn refused(text: &str, needles: &[&str]) -> String {
    let err = parse(text).expect_err("the config must be refused");
    assert!(err.starts_with("/etc/ferrohub/config.toml: "), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "{err:?} should contain {needle:?}");
    }
    err
}

const MANUAL: &str = "hostname = \"dev\"\n[provisioning]\nsource = \"manual\"\n\
    connection_string = \"HostName=hub.example;DeviceId=dev1;SharedAccessKey=AAAA\"\n";

#[test]
fn unknown_keys_are_named_with_their_line() {
    refused(&format!("{MANUAL}bogus = 1\n"), &["line 5", "`bogus`"]);
    refused(&format!("colour = 1\n{MANUAL}"), &["line 1", "`colour`"]);
    let nested = "hostname = \"dev\"\n[provisioning]\nsource = \"dps\"\n\
        global_endpoint = \"https://dps\"\nid_scope = \"s\"\n[provisioning.attestation]\n\
        method = \"symmetric_key\"\nregistration_id = \"r\"\nsymetric_key = { value = \"AAAA\" }\n";
    refused(nested, &["line 9", "`symetric_key`"]);
    refused(
        &MANUAL.replace("\"manual\"", "\"manaul\""),
        &["line 3", "manaul"],
    );
}

#[test]
fn keys_a_method_does_not_take_are_named() {
    let text = "hostname = \"dev\"\n[provisioning]\nsource = \"manual\"\n\
        iothub_hostname = \"hub\"\ndevice_id = \"d\"\n[provisioning.authentication]\n\
        method = \"sas\"\ndevice_id_pk = { value = \"AAAA\" }\nidentity_pk = \"/k.pem\"\n";
    refused(
        text,
        &[
            "line 9",
            "provisioning.authentication.identity_pk",
            "not used with method = \"sas\"",
        ],
    );
    refused(
        &format!("{MANUAL}id_scope = \"x\"\n"),
        &["line 5", "provisioning.id_scope: not used"],
    );
    refused(
        "hostname = \"dev\"\n[provisioning]\nsource = \"manual\"\niothub_hostname = \"hub\"\n",
        &["provisioning.device_id: missing"],
    );
}

#[test]
fn bad_connection_strings_are_refused_without_echoing_the_key() {
    let cs = |s: &str| MANUAL.replace("HostName=hub.example;DeviceId=dev1;SharedAccessKey=AAAA", s);
    for (bad, why) in [
        (
            "HostName=hub.example;SharedAccessKey=c2VjcmV0",
            "no DeviceId",
        ),
        ("HostName=hub.example;DeviceId=dev1", "no SharedAccessKey"),
        ("DeviceId=dev1;SharedAccessKey=c2VjcmV0", "no HostName"),
        (
            "HostName=hub.example;DeviceId=dev1;SharedAccessKey=c2Vj!!cmV0",
            "not valid base64",
        ),
        (
            "HostName=hub.example;DeviceId=dev1;ModuleId=m;SharedAccessKey=c2VjcmV0",
            "unexpected ModuleId",
        ),
        (
            "HostName=hub.example;DeviceId=dev1;x509=true",
            "unexpected x509",
        ),
        ("just garbage", "has no `=`"),
    ] {
        let err = refused(&cs(bad), &["line 4", "provisioning.connection_string", why]);
        assert!(!err.contains("c2VjcmV0"), "the key leaked: {err}");
    }
}

#[test]
fn tpm_est_and_pkcs11_are_refused_as_not_supported() {
    let dps = "hostname = \"dev\"\n[provisioning]\nsource = \"dps\"\n\
        global_endpoint = \"https://dps\"\nid_scope = \"s\"\n[provisioning.attestation]\n";
    refused(
        &format!("{dps}method = \"tpm\"\nregistration_id = \"r\"\n"),
        &[
            "line 7",
            "provisioning.attestation.method",
            "not supported by ferrohub yet",
        ],
    );
    refused(
        &format!("{MANUAL}[cert_issuance.est]\nurl = \"https://est\"\n"),
        &[
            "line 5",
            "cert_issuance.est: EST is not supported by ferrohub yet",
        ],
    );
    refused(
        &format!(
            "{dps}method = \"x509\"\nidentity_cert = {{ method = \"est\" }}\nidentity_pk = \"/k\"\n"
        ),
        &[
            "provisioning.attestation.identity_cert.method",
            "not supported by ferrohub yet",
        ],
    );
    refused(
        &format!(
            "{dps}method = \"x509\"\nidentity_cert = \"/c.pem\"\nidentity_pk = \"pkcs11:token=x?pin-value=1\"\n"
        ),
        &[
            "line 9",
            "provisioning.attestation.identity_pk",
            "pkcs11",
            "not supported by ferrohub yet",
        ],
    );
    refused(
        &format!("[tpm]\n{MANUAL}"),
        &["line 1", "tpm: TPM is not supported"],
    );
}

#[test]
fn principal_rules() {
    let principal = |name: &str, idtype: &str| {
        format!("[[principal]]\nuid = 1001\nname = \"{name}\"\nidtype = [\"{idtype}\"]\n")
    };
    let two = format!(
        "{MANUAL}{}{}",
        principal("m", "module"),
        principal("m", "device")
    );
    refused(
        &two,
        &[
            "line 11",
            "principal[1].name",
            "duplicate principal name \"m\"",
        ],
    );
    let none = "hostname = \"dev\"\n[provisioning]\nsource = \"none\"\n";
    refused(
        &format!("{none}{}", principal("m", "module")),
        &["line 7", "principal[0].idtype", "needs a hub", "\"none\""],
    );
    refused(
        &format!("{MANUAL}{}", principal("m", "local")),
        &[
            "principal[0].idtype",
            "idtype \"local\" is not supported by ferrohub yet",
        ],
    );
    refused(
        &format!("{MANUAL}{}", principal("m", "robot")),
        &["principal[0].idtype", "unknown \"robot\""],
    );
    // A daemon principal (no idtype) needs no hub.
    parse(&format!("{none}[[principal]]\nuid = 0\nname = \"ops\"\n")).unwrap();
}

#[test]
fn dps_with_a_local_gateway_is_refused() {
    let text = "hostname = \"dev\"\nlocal_gateway_hostname = \"gw\"\n[provisioning]\n\
        source = \"dps\"\nglobal_endpoint = \"https://dps\"\nid_scope = \"s\"\n\
        [provisioning.attestation]\nmethod = \"symmetric_key\"\nregistration_id = \"r\"\n\
        symmetric_key = { value = \"AAAA\" }\n";
    refused(
        text,
        &[
            "line 2",
            "local_gateway_hostname: not supported in nested mode",
        ],
    );
    let alias = text.replace("local_gateway_hostname", "parent_hostname");
    refused(&alias, &["line 2", "nested mode"]);
}

#[test]
fn dps_values_are_checked() {
    let dps = |endpoint: &str, scope: &str, reg: &str| {
        format!(
            "hostname = \"dev\"\n[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"{endpoint}\"\n\
             id_scope = \"{scope}\"\n[provisioning.attestation]\nmethod = \"symmetric_key\"\n\
             {reg}symmetric_key = {{ value = \"AAAA\" }}\n"
        )
    };
    parse(&dps("https://dps", "0ne1", "registration_id = \"dev-1\"\n")).unwrap();
    refused(
        &dps("http://dps", "0ne1", "registration_id = \"dev-1\"\n"),
        &["line 4", "provisioning.global_endpoint", "https://"],
    );
    refused(
        &dps("https://dps", " ", "registration_id = \"dev-1\"\n"),
        &["line 5", "provisioning.id_scope: must not be empty"],
    );
    refused(
        &dps("https://dps", "0ne1", ""),
        &["provisioning.attestation.registration_id: missing"],
    );
    refused(
        &dps("https://dps", "0ne1", "registration_id = \"-bad id\"\n"),
        &[
            "line 8",
            "provisioning.attestation.registration_id",
            "not a valid registration id",
        ],
    );
}

#[test]
fn parent_hostname_is_an_alias_and_hostname_defaults_to_the_machine() {
    let text = MANUAL.replace("hostname = \"dev\"\n", "parent_hostname = \"gw.example\"\n");
    let config = parse(&text).unwrap();
    assert_eq!(config.local_gateway_hostname.as_deref(), Some("gw.example"));
    assert_eq!(
        config.hostname,
        identity::config::superconfig::machine_hostname()
    );
    let applied = plan_text(&text);
    assert!(matches!(
        applied.identityd.provisioning,
        identity::config::daemons::Provisioning::Manual {
            local_gateway_hostname: Some(ref gw), ..
        } if gw == "gw.example"
    ));
}

#[test]
fn debug_output_redacts_keys() {
    let config = parse(MANUAL).unwrap();
    assert!(matches!(config.provisioning, Provisioning::Manual { .. }));
    let applied = plan_text(MANUAL);
    for shown in [format!("{config:?}"), format!("{applied:?}")] {
        assert!(shown.contains("redacted"), "{shown}");
        assert!(!shown.contains("[0, 0, 0]"), "{shown}");
    }
}

/// Every file under `dir`, relative.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn write_puts_0600_files_with_the_header_that_load_back_as_planned() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::under(root.path());
    let text = std::fs::read_to_string(case_dir("principals").join("config.toml")).unwrap();
    let config = parse(&text).unwrap();
    let applied = apply::plan(&config, &paths).unwrap();
    let written = apply::write(&applied, &paths).unwrap();
    let mut expected: Vec<PathBuf> = apply::DAEMONS.iter().map(|d| paths.dropin(d)).collect();
    expected.push(paths.device_key_file());
    assert_eq!(written, expected);
    assert_eq!(files_under(root.path()).len(), 4, "no temporary files left");
    for path in &written {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let secrets = paths.device_key_file();
    let dir_mode = std::fs::metadata(secrets.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    assert_eq!(
        std::fs::read(&secrets).unwrap(),
        applied.device_key.clone().unwrap()
    );
    for d in apply::DAEMONS {
        let text = std::fs::read_to_string(paths.dropin(d)).unwrap();
        assert!(text.starts_with(&format!("{HEADER}\n")), "{text}");
    }
    let load = |d: &str| (paths.daemon_config(d), paths.dropin_dir(d));
    let (f, dir) = load("keyd");
    assert_eq!(load_daemon::<KeydConfig>(&f, &dir).unwrap(), applied.keyd);
    let (f, dir) = load("certd");
    assert_eq!(load_daemon::<CertdConfig>(&f, &dir).unwrap(), applied.certd);
    let (f, dir) = load("identityd");
    assert_eq!(
        load_daemon::<IdentitydConfig>(&f, &dir).unwrap(),
        applied.identityd
    );
    // Applying again replaces the files in place.
    assert_eq!(apply::write(&applied, &paths).unwrap(), written);
    assert_eq!(files_under(root.path()).len(), 4);
}

#[test]
fn an_invalid_config_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::under(root.path());
    let mut config = parse(MANUAL).unwrap();
    config.provisioning = Provisioning::None;
    config
        .principals
        .push(identity::config::daemons::Principal {
            uid: 1001,
            name: "m".into(),
            idtype: Some(vec!["module".into()]),
        });
    let err = apply::plan(&config, &paths).unwrap_err().to_string();
    assert!(err.contains("principal[0].idtype"), "{err}");
    assert!(std::fs::read_dir(root.path()).unwrap().next().is_none());
}

#[test]
fn a_failed_write_leaves_no_files_and_no_new_directories() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::under(root.path());
    let applied = apply::plan(&parse(MANUAL).unwrap(), &paths).unwrap();
    // The secrets directory cannot be created: a file is in the way. Configs come first.
    let blocker = paths.secrets_dir.clone();
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, "in the way").unwrap();
    let err = apply::write(&applied, &paths).unwrap_err().to_string();
    assert!(err.contains("ferrohub"), "{err}");
    assert_eq!(files_under(root.path()), vec![blocker]);
    assert!(!paths.config_root.exists(), "new directories are removed");
}
