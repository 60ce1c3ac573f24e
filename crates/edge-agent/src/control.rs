//! The agent's local control socket (`{data_dir}/agent.sock`, mode 0600: root and the agent's
//! user) for `ferrohub edge list|restart` and `ferrohub edge agent status`. The protocol, its
//! client and `edge list`'s lines are shared with a gateway run without an agent
//! ([`edge::control`]); this is the agent's server.
//!
//! - `GET /modules` → `[{"name", "status", "description", "config", "pid", "restart_count"}]`
//! - `POST /modules/{name}/restart` → 200, or 404 for an unknown module
//! - `GET /status` → `{"edgeId", "lastDesiredVersion", "lastDesiredStatus", "reported"}`

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use serde_json::json;
use time::OffsetDateTime;
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::agent::Agent;
use crate::supervisor::{ModuleState, RuntimeStatus};

pub use edge::control::{Client, ListEntry, bind, since};

/// Serves the control API until `shutdown`.
pub async fn serve(listener: UnixListener, agent: Arc<Agent>, shutdown: watch::Receiver<bool>) {
    let app = Router::new()
        .route("/modules", get(list))
        .route("/modules/{name}/restart", post(restart))
        .route("/status", get(status))
        .with_state(agent);
    identity::uds::serve(listener, app, 10, "edge-agent", shutdown).await;
}

async fn list(State(agent): State<Arc<Agent>>) -> Response {
    axum::Json(agent.list()).into_response()
}

async fn restart(State(agent): State<Arc<Agent>>, UrlPath(name): UrlPath<String>) -> Response {
    if agent.restart(&name) {
        axum::Json(json!({"restarted": name})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": format!("no module {name} is running under this agent")})),
        )
            .into_response()
    }
}

async fn status(State(agent): State<Arc<Agent>>) -> Response {
    let (version, s) = agent.status();
    axum::Json(json!({
        "edgeId": agent.config.edge_id,
        "hub": agent.config.hub_hostname,
        "lastDesiredVersion": version,
        "lastDesiredStatus": {"code": s.code, "description": s.description},
        "reported": agent.report(),
    }))
    .into_response()
}

/// A line of `edge list` for a supervised module.
pub fn entry(name: &str, s: &ModuleState, config: String, now: OffsetDateTime) -> ListEntry {
    let description = match s.runtime_status {
        RuntimeStatus::Running => match s.last_start {
            Some(t) => format!("Up {}", since(t, now)),
            None => "Up".into(),
        },
        RuntimeStatus::Stopped | RuntimeStatus::Failed => match s.last_exit {
            Some(t) => format!("{} {} ago", capitalized(&s.description), since(t, now)),
            None => capitalized(&s.description),
        },
        RuntimeStatus::Backoff | RuntimeStatus::Unknown => capitalized(&s.description),
    };
    ListEntry {
        name: name.to_owned(),
        status: s.runtime_status.as_str().to_owned(),
        description,
        config,
        pid: s.pid,
        restart_count: s.restart_count,
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or_else(String::new, |f| {
        f.to_uppercase().collect::<String>() + c.as_str()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_describe_the_state() {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let running = ModuleState {
            runtime_status: RuntimeStatus::Running,
            last_start: Some(t),
            pid: Some(42),
            ..ModuleState::default()
        };
        let e = entry(
            "m",
            &running,
            "/bin/m".into(),
            t + time::Duration::seconds(90),
        );
        assert_eq!(
            (e.status.as_str(), e.description.as_str()),
            ("running", "Up 1 minute")
        );
        let failed = ModuleState {
            runtime_status: RuntimeStatus::Failed,
            last_exit: Some(t),
            description: "exited with exit code 3".into(),
            ..ModuleState::default()
        };
        let e = entry("m", &failed, String::new(), t + time::Duration::seconds(5));
        assert_eq!(e.description, "Exited with exit code 3 5 seconds ago");
    }
}
