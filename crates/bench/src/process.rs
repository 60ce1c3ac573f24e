//! A server the bench runs as a child process (mosquitto, or `ferrohub hub --config`): started
//! (optionally pinned with `taskset`), waited for until its port answers, stopped with SIGTERM,
//! and measured through `/proc/PID/status`. Only loopback ports are ever waited on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::net::TcpStream;

use crate::clock;

/// One server process and how to start it again (the gateway bench restarts its hub broker).
pub struct ServerProcess {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go (appended).
    pub log: PathBuf,
    /// The port it must listen on before it counts as started (127.0.0.1).
    pub port: u16,
    /// `taskset -c CPUS` in front of the program, when set.
    pub cpus: Option<String>,
    child: Option<Child>,
}

impl ServerProcess {
    pub fn new(program: &Path, args: Vec<String>, log: PathBuf, port: u16) -> Self {
        Self {
            program: program.to_owned(),
            args,
            env: Vec::new(),
            log,
            port,
            cpus: None,
            child: None,
        }
    }

    /// Pins the process to `cpus` (a `taskset -c` list such as `1` or `0,1`).
    #[must_use]
    pub fn pinned(mut self, cpus: Option<String>) -> Self {
        self.cpus = cpus;
        self
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts the process and waits (at most 20 s) until its port accepts connections.
    pub async fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = match &self.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.program.display()))?;
        let child = self.child.insert(child);
        let deadline = clock::instant() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                let log = tail(&self.log, 30).join("\n");
                self.child = None;
                bail!("{} exited ({status}):\n{log}", self.program.display());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            if clock::instant() >= deadline {
                bail!(
                    "{} did not listen on 127.0.0.1:{} within 20 s",
                    self.program.display(),
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM (mosquitto saves its database, the hub closes its log), then waits for the exit;
    /// kills it after 30 s.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = clock::instant() + Duration::from_secs(30);
        while child.try_wait()?.is_none() {
            if clock::instant() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} did not stop within 30 s of SIGTERM; killed it",
                    self.program.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The process's resident set size in KiB (`VmRSS` in `/proc/PID/status`).
    pub fn rss_kib(&self) -> Result<u64> {
        let pid = self.pid().context("the server is not running")?;
        rss_kib(pid)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `VmRSS` of process `pid`, in KiB. With `taskset` in front, the pid is still the server's:
/// taskset execs the program in place.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("/proc/{pid}/status has no VmRSS"))
}

/// CPU time (user + system) process `pid` ("self" for this one) has used, in seconds, from
/// `/proc/PID/stat` (clock ticks of 1/100 s, Linux's USER_HZ).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU seconds used by the server and by this bench process, read together.
#[derive(Clone, Copy)]
pub struct CpuMark {
    server: Option<f64>,
    bench: Option<f64>,
}

impl CpuMark {
    pub fn now(server: &ServerProcess) -> Self {
        Self {
            server: server.pid().and_then(|p| cpu_seconds(&p.to_string())),
            bench: cpu_seconds("self"),
        }
    }

    /// CPU seconds since `self` as JSON: server, bench (the load generator and its consumer).
    pub fn since(&self, server: &ServerProcess) -> serde_json::Value {
        let now = Self::now(server);
        let d = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        serde_json::json!({
            "server_cpu_seconds": d(self.server, now.server),
            "bench_cpu_seconds": d(self.bench, now.bench),
        })
    }
}

/// A free loopback port (the OS picks it; the server binds it right after).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].iter().map(|l| (*l).to_owned()).collect()
}

/// Refuses any address outside 127.0.0.0/8 and ::1: the bench only ever loads this machine.
pub fn ensure_loopback(addr: SocketAddr) -> Result<()> {
    if !addr.ip().is_loopback() {
        bail!("{addr} is not a loopback address; the bench only targets this machine");
    }
    Ok(())
}

/// The soft limit on open files of this process (`/proc/self/limits`).
/// Refuses a connection count outside 1..=19000 or beyond the open-file limit (with room for
/// the process's other descriptors), naming `ulimit -n`.
pub fn check_connection_count(n: usize) -> Result<()> {
    if n == 0 || n > 19_000 {
        bail!("--connections must be 1..=19000");
    }
    if let Some(limit) = open_file_limit()
        && limit < n as u64 + 256
    {
        bail!(
            "the open-file limit is {limit}; {n} connections need {} (ulimit -n)",
            n + 256
        );
    }
    Ok(())
}

/// Awaits connect tasks: what they opened, and the first three failures (for the report).
pub async fn gather<T>(
    tasks: Vec<tokio::task::JoinHandle<Result<T>>>,
) -> Result<(Vec<T>, Vec<String>)> {
    let (mut held, mut errors) = (Vec::with_capacity(tasks.len()), Vec::new());
    for t in tasks {
        match t.await.context("a connect task panicked")? {
            Ok(c) => held.push(c),
            Err(e) if errors.len() < 3 => errors.push(format!("{e:#}")),
            Err(_) => {}
        }
    }
    Ok((held, errors))
}

pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
