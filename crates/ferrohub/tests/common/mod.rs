//! Helpers shared by the CLI integration tests.
#![allow(clippy::unwrap_used, dead_code)] // test helpers: a failure here is a test failure

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `ferrohub` binary built for these tests.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrohub"))
}

/// Runs `ferrohub ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

/// Whether the tests run as root (`id -u` says 0).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs `ferrohub certs ARGS... --dir DIR`.
pub fn certs(dir: &Path, args: &[&str]) -> Output {
    bin()
        .arg("certs")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap()
}

/// Like [`certs`] but asserts success.
pub fn certs_ok(dir: &Path, args: &[&str]) -> String {
    let out = certs(dir, args);
    assert!(
        out.status.success(),
        "ferrohub certs {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs openssl with ARGS; returns (success, stdout+stderr).
pub fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl must be installed (scripts/test installs it)");
    (out.status.success(), text(&out))
}

pub fn p(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

/// Every file name in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The standard hierarchy: root, intermediate, edge CA "gw".
pub fn hierarchy(dir: &Path) {
    certs_ok(dir, &["root-ca"]);
    certs_ok(dir, &["intermediate-ca"]);
    certs_ok(dir, &["edge-ca", "gw"]);
}

/// A command's standard output and error, together.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts the command succeeded (printing what it said if not) and returns its standard output.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}
