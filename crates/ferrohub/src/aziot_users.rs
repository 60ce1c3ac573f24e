//! The system groups and users aziot's packages create (`aziotid`, `aziotcs`, `aziotks`), made by
//! `sudo ferrohub config apply --aziot-paths` when missing. Agents' installers written for aziot
//! run `usermod -aG aziotid USER` and `chown aziotid:aziotid FILE` and fail without them; ferrohub
//! itself authorizes callers by uid and does not need the memberships.

use std::process::Command;

/// aziot's service accounts: identityd, certd, keyd.
const ACCOUNTS: [&str; 3] = ["aziotid", "aziotcs", "aziotks"];

fn exists(database: &str, name: &str) -> bool {
    Command::new("getent")
        .args([database, name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `tool args`; the error names the command and what it printed.
fn run(tool: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| format!("{tool} could not run ({e}); install the passwd package"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{tool} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Creates each missing account as a system group with a system user of the same name (no login,
/// no home directory). Returns the names created; an error names the failing command. Only for
/// the machine's own paths as root: callers skip it under `--root` or without root.
pub fn ensure() -> Result<Vec<&'static str>, String> {
    let mut created = Vec::new();
    for name in ACCOUNTS {
        let mut made = false;
        if !exists("group", name) {
            run("groupadd", &["-r", name])?;
            made = true;
        }
        if !exists("passwd", name) {
            run(
                "useradd",
                &[
                    "-r",
                    "-g",
                    name,
                    "-M",
                    "-d",
                    "/nonexistent",
                    "-s",
                    "/usr/sbin/nologin",
                    "-c",
                    "aziot compatibility account (ferrohub)",
                    name,
                ],
            )?;
            made = true;
        }
        if made {
            created.push(name);
        }
    }
    Ok(created)
}
