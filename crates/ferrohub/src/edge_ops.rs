//! `ferrohub edge list|logs|restart` on any gateway: under the edge agent they go to the agent's
//! control socket and log directory; without one, to the gateway's own control socket and log
//! file in its data directory (see [`crate::edge_run`]). Same protocol, same table, same log
//! reader either way.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use edge::control::{Client, EDGE_HUB};
use identity::client::UdsError;

use crate::agent_cmd::TailOpts;
use crate::edge_target::{Target, TargetArgs};

/// The error when nothing answers on the control socket.
fn not_running(target: &Target, e: impl std::fmt::Display) -> anyhow::Error {
    let what = match target {
        Target::Agent { .. } => "the edge agent",
        _ => "the gateway",
    };
    anyhow::anyhow!(
        "{what} is not answering on {} ({e}); start it with `{}`",
        target.control_socket().display(),
        target.start_command()
    )
}

pub fn list(args: &TargetArgs) -> Result<bool> {
    let target = Target::resolve(args)?;
    let client = Client::new(&target.control_socket());
    let entries = crate::hub_cmd::runtime()?
        .block_on(client.list())
        .map_err(|e| not_running(&target, e))?;
    let mut rows = vec![["NAME", "STATUS", "DESCRIPTION", "CONFIG"].map(String::from)];
    for e in entries {
        rows.push([e.name, e.status, e.description, e.config]);
    }
    crate::agent_cmd::print_table(&rows);
    Ok(true)
}

pub fn restart(module: &str, args: &TargetArgs) -> Result<bool> {
    let target = Target::resolve(args)?;
    if !matches!(target, Target::Agent { .. }) && module != EDGE_HUB {
        bail!(
            "no module {module} here: without an edge agent the gateway ({EDGE_HUB}) is the only \
             one (`ferrohub edge restart {EDGE_HUB}`)"
        );
    }
    let client = Client::new(&target.control_socket());
    let rt = crate::hub_cmd::runtime()?;
    let before = match &target {
        Target::Agent { .. } => None,
        _ => Some(
            rt.block_on(gateway_restarts(&client))
                .map_err(|e| not_running(&target, e))?,
        ),
    };
    let sent = rt.block_on(client.restart(module));
    match sent {
        Ok(()) => {}
        Err(UdsError::Status { message, .. }) => bail!("{message}"),
        // The gateway may close the connection as it stops: the wait below tells.
        Err(_) if before.is_some() => {}
        Err(e) => return Err(not_running(&target, e)),
    }
    if let Some(before) = before {
        rt.block_on(wait_restarted(&client, before)).map_err(|e| {
            anyhow::anyhow!("{module} did not come back: {e}; see `ferrohub edge logs {EDGE_HUB}`")
        })?;
    }
    println!("{module}");
    Ok(true)
}

async fn gateway_restarts(client: &Client) -> Result<u64, UdsError> {
    let s = client.status().await?;
    Ok(s["restartCount"].as_u64().unwrap_or(0))
}

/// Waits (bounded, 60 s) until the re-executed gateway answers with a higher restart count.
async fn wait_restarted(client: &Client, before: u64) -> Result<(), String> {
    let mut last = String::from("no answer yet");
    for _ in 0..240 {
        match gateway_restarts(client).await {
            Ok(n) if n > before => return Ok(()),
            Ok(_) => last = "still stopping".into(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last)
}

pub fn logs(module: &str, opts: &TailOpts, args: &TargetArgs) -> Result<bool> {
    let target = Target::resolve(args)?;
    let path = target.log_path(module)?;
    if edge::logs::files(&path).is_empty() && !opts.follow {
        let dir = path.parent().unwrap_or(Path::new("."));
        let known: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .strip_suffix(".log")
                            .map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default();
        bail!(
            "no logs for {module} in {} (logs there: {}); the gateway writes them once started: `{}`",
            dir.display(),
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
            target.start_command()
        );
    }
    print_log(&path, opts)
}

/// Prints the last lines of `path` (and its rotated files), then follows it with `-f`.
pub fn print_log(path: &Path, o: &TailOpts) -> Result<bool> {
    let mut out = std::io::stdout().lock();
    for line in edge::logs::tail(path, o.tail)? {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    if !o.follow {
        return Ok(true);
    }
    let mut follower = edge::logs::Follower::at_end(path);
    loop {
        let bytes = follower.poll()?;
        if !bytes.is_empty() {
            out.write_all(&bytes)?;
            out.flush()?;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
