//! Module processes: one task per module starts its process (in its own process group, with its
//! environment, working directory and uid), captures its output into rotating log files, and
//! restarts it with back-off as its restart policy says. Commands change its spec, restart or
//! stop it; its [`ModuleState`] is what `edge list` and the reported properties show.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, BufReader};
use tokio::process::Child;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{info, warn};

use crate::backoff::{Backoff, Exit, should_restart};
use crate::deployment::{DesiredStatus, RestartPolicy, User};
use crate::logs::{LogSettings, RotatingLog};

/// How to start a module's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    /// The whole environment (nothing is inherited).
    pub env: BTreeMap<String, String>,
    pub dir: PathBuf,
    pub user: Option<User>,
    /// Run to completion before each start (e.g. `docker rm -f NAME`); failures are ignored.
    pub pre: Option<(String, Vec<String>)>,
}

/// What a module should be doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub launch: Launch,
    pub policy: RestartPolicy,
    pub status: DesiredStatus,
}

/// `runtimeStatus`, as IoT Edge reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeStatus {
    Unknown,
    Backoff,
    Running,
    Stopped,
    Failed,
}

impl RuntimeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Backoff => "backoff",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }
}

/// What a module is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleState {
    pub runtime_status: RuntimeStatus,
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
    /// Restarts by the agent (after an exit, or asked for) since the module was deployed.
    pub restart_count: u32,
    pub last_start: Option<OffsetDateTime>,
    pub last_exit: Option<OffsetDateTime>,
    pub last_restart: Option<OffsetDateTime>,
    /// Why it is in this state (an exit, a start failure, the wait before a restart).
    pub description: String,
}

impl Default for ModuleState {
    fn default() -> Self {
        Self {
            runtime_status: RuntimeStatus::Unknown,
            pid: None,
            exit_code: None,
            restart_count: 0,
            last_start: None,
            last_exit: None,
            last_restart: None,
            description: String::new(),
        }
    }
}

/// What every module task shares.
pub struct Shared {
    pub clock: ferrohub_runtime::time::SharedClock,
    pub backoff: Backoff,
    pub logs: LogSettings,
    pub data_dir: PathBuf,
    pub stop_grace: Duration,
    /// Signalled whenever a module's state changes.
    pub changed: Arc<Notify>,
    /// The agent's own log.
    pub events: Mutex<Option<RotatingLog>>,
}

impl Shared {
    /// Logs an agent event (to tracing and to the agent's log file).
    pub fn event(&self, text: &str) {
        info!(target: "edge_agent", "{text}");
        let line = format!(
            "{} {text}",
            ferrohub_runtime::time::rfc3339(self.clock.now())
        );
        if let Ok(mut log) = self.events.lock()
            && let Some(log) = log.as_mut()
            && let Err(e) = log.write_line(line.as_bytes())
        {
            warn!(error = %e, "Cannot write the agent log");
        }
    }

    fn pid_file(&self, module: &str) -> PathBuf {
        self.data_dir.join("state/pids").join(module)
    }
}

enum Cmd {
    Set(Box<Desired>),
    Restart,
    Shutdown(oneshot::Sender<()>),
}

struct Handle {
    tx: mpsc::UnboundedSender<Cmd>,
    state: Arc<Mutex<ModuleState>>,
    desired: Desired,
}

/// Runs and watches module processes.
pub struct Supervisor {
    shared: Arc<Shared>,
    modules: Mutex<BTreeMap<String, Handle>>,
}

impl Supervisor {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            modules: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Starts supervising `name`, or hands it a new spec: its process restarts with it if it
    /// differs from the one it has (not counted as a restart); the same spec changes nothing.
    pub fn set(&self, name: &str, desired: Desired) {
        let Ok(mut modules) = self.modules.lock() else {
            return;
        };
        if let Some(h) = modules.get_mut(name) {
            if h.desired == desired {
                return;
            }
            if h.tx.send(Cmd::Set(Box::new(desired.clone()))).is_ok() {
                h.desired = desired;
                return;
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(Mutex::new(ModuleState::default()));
        let task = Task {
            name: name.to_owned(),
            desired: desired.clone(),
            state: state.clone(),
            shared: self.shared.clone(),
            rx,
            consecutive: 0,
        };
        tokio::spawn(task.run());
        modules.insert(name.to_owned(), Handle { tx, state, desired });
    }

    /// Restarts `name` now; `false` if there is no such module.
    pub fn restart(&self, name: &str) -> bool {
        self.modules
            .lock()
            .ok()
            .and_then(|m| m.get(name).map(|h| h.tx.send(Cmd::Restart).is_ok()))
            .unwrap_or(false)
    }

    /// Stops `name` (SIGTERM, then SIGKILL after the grace period) and forgets it.
    pub async fn remove(&self, name: &str) {
        let handle = self.modules.lock().ok().and_then(|mut m| m.remove(name));
        if let Some(h) = handle {
            let (done, wait) = oneshot::channel();
            if h.tx.send(Cmd::Shutdown(done)).is_ok() {
                let _ = wait.await;
            }
        }
        self.shared.changed.notify_one();
    }

    /// Stops every module.
    pub async fn shutdown(&self) {
        let names: Vec<String> = self
            .modules
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for n in names {
            self.remove(&n).await;
        }
    }

    /// The state of every supervised module.
    pub fn states(&self) -> BTreeMap<String, ModuleState> {
        self.modules
            .lock()
            .map(|m| {
                m.iter()
                    .filter_map(|(n, h)| h.state.lock().ok().map(|s| (n.clone(), s.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The state of one module.
    pub fn state(&self, name: &str) -> Option<ModuleState> {
        self.modules.lock().ok().and_then(|m| {
            m.get(name)
                .and_then(|h| h.state.lock().ok().map(|s| s.clone()))
        })
    }
}

/// What a module task does next.
enum Next {
    Start,
    Wait,
    Exit,
}

struct Task {
    name: String,
    desired: Desired,
    state: Arc<Mutex<ModuleState>>,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Cmd>,
    /// Restarts after exits since the last stable run (for the back-off).
    consecutive: u32,
}

impl Task {
    async fn run(mut self) {
        let mut next = self.initial();
        loop {
            next = match next {
                Next::Start => self.start_and_watch().await,
                Next::Wait => self.idle().await,
                Next::Exit => break,
            };
        }
        let _ = std::fs::remove_file(self.shared.pid_file(&self.name));
    }

    fn initial(&mut self) -> Next {
        if self.desired.status == DesiredStatus::Running {
            Next::Start
        } else {
            self.update(|s| {
                s.runtime_status = RuntimeStatus::Stopped;
                s.description = "stopped by the deployment".into();
            });
            Next::Wait
        }
    }

    fn update(&self, f: impl FnOnce(&mut ModuleState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
        self.shared.changed.notify_one();
    }

    fn now(&self) -> OffsetDateTime {
        self.shared.clock.now()
    }

    /// Applies a command that arrived while the module is not running.
    fn handle(&mut self, cmd: Option<Cmd>) -> Next {
        match cmd {
            None => Next::Exit,
            Some(Cmd::Shutdown(done)) => {
                let _ = done.send(());
                Next::Exit
            }
            Some(Cmd::Set(d)) => {
                self.desired = *d;
                self.consecutive = 0;
                self.initial()
            }
            Some(Cmd::Restart) if self.desired.status == DesiredStatus::Running => {
                self.count_restart("asked for");
                Next::Start
            }
            Some(Cmd::Restart) => {
                self.shared.event(&format!(
                    "Not restarting module {}: the deployment says stopped",
                    self.name
                ));
                Next::Wait
            }
        }
    }

    async fn idle(&mut self) -> Next {
        let cmd = self.rx.recv().await;
        self.handle(cmd)
    }

    fn count_restart(&self, why: &str) {
        let now = self.now();
        let mut n = 0;
        self.update(|s| {
            s.restart_count += 1;
            s.last_restart = Some(now);
            n = s.restart_count;
        });
        self.shared.event(&format!(
            "Restarting module {} ({why}; restart {n})",
            self.name
        ));
    }

    async fn start_and_watch(&mut self) -> Next {
        let started = self.now();
        let mut child = match self.spawn().await {
            Ok(c) => c,
            Err(e) => {
                let exit = Exit::Code(127);
                self.record_exit(exit, &format!("cannot start: {e}"));
                return self.after_exit(exit, Duration::ZERO).await;
            }
        };
        let pid = child.id();
        self.update(|s| {
            s.runtime_status = RuntimeStatus::Running;
            s.pid = pid;
            s.last_start = Some(started);
            s.description = "running".into();
        });
        self.shared.event(&format!(
            "Started module {} (pid {})",
            self.name,
            pid.map_or_else(|| "?".into(), |p| p.to_string())
        ));
        let cmd = tokio::select! {
            status = child.wait() => {
                kill_group(pid, rustix::process::Signal::KILL);
                let exit = match status {
                    Ok(s) => Exit::from_status(s),
                    Err(_) => Exit::Code(-1),
                };
                self.record_exit(exit, "");
                let ran = (self.now() - started).try_into().unwrap_or(Duration::ZERO);
                return self.after_exit(exit, ran).await;
            }
            cmd = self.rx.recv() => cmd,
        };
        let exit = self.stop(&mut child, pid).await;
        self.record_exit(exit, "stopped by the agent");
        self.update(|s| s.runtime_status = RuntimeStatus::Stopped);
        match cmd {
            Some(Cmd::Restart) => {
                self.count_restart("asked for");
                Next::Start
            }
            other => self.handle(other),
        }
    }

    /// After an exit on its own: wait and start again, or stay down, as the policy says.
    async fn after_exit(&mut self, exit: Exit, ran: Duration) -> Next {
        if self.desired.status != DesiredStatus::Running
            || !should_restart(self.desired.policy, exit)
        {
            self.update(|s| {
                s.runtime_status = if exit.success() {
                    RuntimeStatus::Stopped
                } else {
                    RuntimeStatus::Failed
                };
            });
            return Next::Wait;
        }
        self.consecutive = self.shared.backoff.next_count(self.consecutive, ran);
        let delay = self.shared.backoff.delay(self.consecutive);
        self.update(|s| {
            s.runtime_status = RuntimeStatus::Backoff;
            s.description = format!("{}; restarting in {delay:?}", s.description);
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {
                self.count_restart(&format!("it ended with {exit}"));
                Next::Start
            }
            cmd = self.rx.recv() => match cmd {
                Some(Cmd::Restart) => {
                    self.count_restart("asked for");
                    Next::Start
                }
                other => self.handle(other),
            },
        }
    }

    fn record_exit(&self, exit: Exit, why: &str) {
        let now = self.now();
        let description = if why.is_empty() {
            format!("exited with {exit}")
        } else {
            format!("{why} ({exit})")
        };
        self.shared
            .event(&format!("Module {}: {description}", self.name));
        self.update(|s| {
            s.pid = None;
            s.exit_code = Some(exit.code());
            s.last_exit = Some(now);
            s.description = description;
        });
        let _ = std::fs::remove_file(self.shared.pid_file(&self.name));
    }

    async fn spawn(&self) -> std::io::Result<Child> {
        let l = &self.desired.launch;
        if let Some((program, args)) = &l.pre {
            let _ = tokio::process::Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
        std::fs::create_dir_all(&l.dir)?;
        // The module's own directory (not a workingDir the deployment names) belongs to its user.
        if let Some(u) = l.user
            && l.dir.starts_with(self.shared.data_dir.join("modules"))
        {
            std::os::unix::fs::chown(&l.dir, Some(u.uid), u.gid)?;
        }
        let mut cmd = tokio::process::Command::new(&l.program);
        cmd.args(&l.args)
            .env_clear()
            .envs(&l.env)
            .current_dir(&l.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(u) = l.user {
            cmd.uid(u.uid);
            if let Some(g) = u.gid {
                cmd.gid(g);
            }
        }
        let mut child = cmd.spawn()?;
        let log = RotatingLog::open(
            &crate::config::log_path(&self.shared.data_dir, &self.name),
            self.shared.logs,
        )?;
        let log = Arc::new(Mutex::new(log));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(out, log.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(err, log));
        }
        if let Some(pid) = child.id() {
            write_pid_file(&self.shared.pid_file(&self.name), pid);
        }
        Ok(child)
    }

    /// SIGTERM to the module's process group, SIGKILL after the grace period.
    async fn stop(&self, child: &mut Child, pid: Option<u32>) -> Exit {
        kill_group(pid, rustix::process::Signal::TERM);
        let status = match tokio::time::timeout(self.shared.stop_grace, child.wait()).await {
            Ok(s) => s,
            Err(_) => {
                kill_group(pid, rustix::process::Signal::KILL);
                child.wait().await
            }
        };
        kill_group(pid, rustix::process::Signal::KILL);
        status.map_or(Exit::Code(-1), Exit::from_status)
    }
}

/// Copies a process's output into its log, line by line.
async fn pump(out: impl AsyncRead + Unpin, log: Arc<Mutex<RotatingLog>>) {
    let mut reader = BufReader::new(out);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(crate::logs::MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if let Ok(mut log) = log.lock()
                    && let Err(e) = log.write_line(&line)
                {
                    warn!(error = %e, "Cannot write a module log");
                }
            }
        }
    }
}

fn kill_group(pid: Option<u32>, signal: rustix::process::Signal) {
    if let Some(pid) = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// The start time of `pid` (clock ticks since boot, `/proc/PID/stat` field 22): with the pid it
/// names one process, not a later one that got the same pid.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

fn write_pid_file(path: &std::path::Path, pid: u32) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let ticks = start_ticks(pid).unwrap_or(0);
    if let Err(e) = std::fs::write(path, format!("{pid} {ticks}\n")) {
        warn!(error = %e, "Cannot record a module's pid");
    }
}

/// Kills module processes a previous agent left running (it was killed before it could stop
/// them), found by their pid files; returns the modules that had one.
pub fn reap_stale(data_dir: &std::path::Path) -> Vec<String> {
    let dir = data_dir.join("state/pids");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut reaped = Vec::new();
    for e in entries.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let mut parts = text.split_whitespace();
        let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
        let ticks = parts.next().and_then(|t| t.parse::<u64>().ok());
        if let (Some(pid), Some(ticks)) = (pid, ticks)
            && start_ticks(pid) == Some(ticks)
        {
            kill_group(Some(pid), rustix::process::Signal::KILL);
            reaped.push(e.file_name().to_string_lossy().into_owned());
        }
        let _ = std::fs::remove_file(e.path());
    }
    reaped
}

#[cfg(test)]
mod tests {
    #[test]
    fn start_ticks_of_this_process() {
        let me = std::process::id();
        assert!(super::start_ticks(me).is_some());
        assert_eq!(super::start_ticks(u32::MAX), None);
    }
}
