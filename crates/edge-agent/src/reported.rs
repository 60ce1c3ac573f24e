//! The `$edgeAgent` reported properties, in IoT Edge's shape, and the patch that turns one
//! reported document into another. Pure.
//!
//! ```json
//! {
//!   "schemaVersion": "1.1",
//!   "version": {"version": "0.1.0", "build": "ferrohub"},
//!   "lastDesiredVersion": 7,
//!   "lastDesiredStatus": {"code": 200, "description": ""},
//!   "runtime": {"type": "process", "platform": {"os": "linux", "architecture": "x86_64"}},
//!   "systemModules": {"edgeAgent": {...}, "edgeHub": {...}},
//!   "modules": {"ai_insights": {"runtimeStatus": "running", "exitCode": 0, "restartCount": 1,
//!               "lastStartTimeUtc": "...", "lastExitTimeUtc": "...", "lastRestartTimeUtc": "...",
//!               "statusDescription": "...", "status": "running", "restartPolicy": "always",
//!               "type": "process", "version": "1.0", "settings": {"command": "..."}}}
//! }
//! ```

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::deployment::{ModuleSpec, Runner, SystemModule};
use crate::supervisor::{ModuleState, RuntimeStatus};

/// IoT Edge's "never" time.
pub const NEVER: &str = "0001-01-01T00:00:00Z";

/// `lastDesiredStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredStatus {
    pub code: u16,
    pub description: String,
}

/// Everything the reported properties say.
pub struct Report<'a> {
    pub last_desired_version: Option<u64>,
    pub last_desired_status: &'a DesiredStatus,
    pub agent_started: OffsetDateTime,
    /// `systemModules.edgeHub` of the deployment in force and its state (`None`: not deployed).
    pub edge_hub: Option<(SystemModule, ModuleState)>,
    pub modules: Vec<(&'a ModuleSpec, ModuleState)>,
}

fn time(t: Option<OffsetDateTime>) -> Value {
    t.map_or_else(
        || NEVER.into(),
        |t| ferrohub_runtime::time::rfc3339(t).into(),
    )
}

fn state_fields(s: &ModuleState) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("runtimeStatus".into(), s.runtime_status.as_str().into());
    m.insert("statusDescription".into(), s.description.clone().into());
    m.insert("exitCode".into(), s.exit_code.unwrap_or(0).into());
    m.insert("restartCount".into(), s.restart_count.into());
    m.insert("lastStartTimeUtc".into(), time(s.last_start));
    m.insert("lastExitTimeUtc".into(), time(s.last_exit));
    m.insert("lastRestartTimeUtc".into(), time(s.last_restart));
    m
}

fn settings(r: &Runner) -> Value {
    match r {
        Runner::Process {
            command,
            args,
            working_dir,
        } => {
            let mut s = json!({"command": command, "args": args});
            if let Some(d) = working_dir {
                s["workingDir"] = d.clone().into();
            }
            s
        }
        Runner::Docker { image, .. } => json!({"image": image}),
    }
}

/// The reported properties document.
pub fn build(r: &Report<'_>) -> Value {
    let agent = ModuleState {
        runtime_status: RuntimeStatus::Running,
        last_start: Some(r.agent_started),
        description: "running".into(),
        ..ModuleState::default()
    };
    let mut agent = state_fields(&agent);
    agent.insert("type".into(), "process".into());
    let mut system = Map::new();
    system.insert("edgeAgent".into(), Value::Object(agent));
    if let Some((spec, state)) = &r.edge_hub {
        let mut hub = state_fields(state);
        hub.insert("status".into(), spec.status.as_str().into());
        hub.insert("restartPolicy".into(), spec.restart_policy.as_str().into());
        hub.insert("type".into(), "process".into());
        system.insert("edgeHub".into(), Value::Object(hub));
    }
    let mut modules = Map::new();
    for (spec, state) in &r.modules {
        let mut m = state_fields(state);
        m.insert("status".into(), spec.status.as_str().into());
        m.insert("restartPolicy".into(), spec.restart_policy.as_str().into());
        m.insert("type".into(), spec.runner.type_name().into());
        m.insert("version".into(), spec.version.clone().into());
        m.insert("settings".into(), settings(&spec.runner));
        modules.insert(spec.name.clone(), Value::Object(m));
    }
    json!({
        "schemaVersion": "1.1",
        "version": {"version": env!("CARGO_PKG_VERSION"), "build": "ferrohub"},
        "lastDesiredVersion": r.last_desired_version,
        "lastDesiredStatus": {
            "code": r.last_desired_status.code,
            "description": r.last_desired_status.description,
        },
        "runtime": {
            "type": "process",
            "platform": {"os": std::env::consts::OS, "architecture": std::env::consts::ARCH},
        },
        "systemModules": system,
        "modules": modules,
    })
}

/// The patch that turns reported properties `have` into `want`: members that changed (objects
/// recursively), and `null` for members `want` no longer has. Members of `have` whose name
/// starts with `$` (`$version`, `$metadata`) are not the agent's and are left alone.
pub fn diff(have: &Value, want: &Value) -> Value {
    let (Some(have), Some(want)) = (have.as_object(), want.as_object()) else {
        return want.clone();
    };
    let mut out = Map::new();
    for k in have.keys() {
        if !k.starts_with('$') && !want.contains_key(k) {
            out.insert(k.clone(), Value::Null);
        }
    }
    for (k, w) in want {
        match (have.get(k), w) {
            (Some(h), Value::Object(_)) if h.is_object() => {
                let d = diff(h, w);
                if d.as_object().is_some_and(|m| !m.is_empty()) {
                    out.insert(k.clone(), d);
                }
            }
            (Some(h), _) if h == w => {}
            _ => {
                out.insert(k.clone(), w.clone());
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_patches_changes_and_nulls_removals() {
        let have = json!({
            "$version": 4,
            "lastDesiredVersion": 2,
            "modules": {"a": {"runtimeStatus": "running", "restartCount": 0}, "gone": {"x": 1}},
            "systemModules": {"edgeHub": {"runtimeStatus": "running"}}
        });
        let want = json!({
            "lastDesiredVersion": 3,
            "modules": {"a": {"runtimeStatus": "running", "restartCount": 1}, "new": {"x": 2}},
            "systemModules": {"edgeHub": {"runtimeStatus": "running"}}
        });
        assert_eq!(
            diff(&have, &want),
            json!({
                "lastDesiredVersion": 3,
                "modules": {"a": {"restartCount": 1}, "gone": null, "new": {"x": 2}}
            })
        );
        assert_eq!(diff(&want, &want), json!({}));
        // From nothing, everything.
        assert_eq!(diff(&json!({}), &want), want);
    }

    #[test]
    fn a_patch_applied_with_the_hubs_merge_gives_the_wanted_document() {
        let have = json!({"modules": {"a": {"k": 1, "old": true}, "b": {}}, "top": "x"});
        let want = json!({"modules": {"a": {"k": 2}}, "top": "y", "more": [1, 2]});
        let mut merged = have.as_object().unwrap().clone();
        hub_wire::merge(&mut merged, diff(&have, &want).as_object().unwrap());
        assert_eq!(Value::Object(merged), want);
    }
}
