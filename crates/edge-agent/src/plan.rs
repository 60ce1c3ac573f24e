//! The reconciler: what to do to turn the modules the agent runs into the modules a deployment
//! names. Pure: it compares specs and returns actions; the agent carries them out.

use std::collections::BTreeMap;

use crate::deployment::{DesiredStatus, ModuleSpec};

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop the module and delete its identity (it left the deployment).
    Remove(String),
    /// A new module: create its identity, then run it if its status is `running`.
    Create(ModuleSpec),
    /// The module's spec changed: stop the old process, run the new spec if `running`.
    Update(ModuleSpec),
    /// Only the desired status changed to `running`.
    Start(ModuleSpec),
    /// Only the desired status changed to `stopped`.
    Stop(ModuleSpec),
}

impl Action {
    pub fn module(&self) -> &str {
        match self {
            Self::Remove(n) => n,
            Self::Create(s) | Self::Update(s) | Self::Start(s) | Self::Stop(s) => &s.name,
        }
    }
}

/// The actions that turn `current` (the specs the agent runs, by name) into `desired`:
/// removals first, then stops, then creations, updates and starts in start order
/// (`startupOrder`, then name). Unchanged modules get no action.
pub fn plan(
    current: &BTreeMap<String, ModuleSpec>,
    desired: &BTreeMap<String, ModuleSpec>,
) -> Vec<Action> {
    let mut removals: Vec<Action> = current
        .keys()
        .filter(|n| !desired.contains_key(*n))
        .map(|n| Action::Remove(n.clone()))
        .collect();
    let mut stops = Vec::new();
    let mut ordered: Vec<&ModuleSpec> = desired.values().collect();
    ordered.sort_by(|a, b| (a.startup_order, &a.name).cmp(&(b.startup_order, &b.name)));
    let mut rest = Vec::new();
    for spec in ordered {
        let Some(old) = current.get(&spec.name) else {
            rest.push(Action::Create(spec.clone()));
            continue;
        };
        if old == spec {
            continue;
        }
        let same_but_status = ModuleSpec {
            status: spec.status,
            ..old.clone()
        } == *spec;
        if !same_but_status {
            rest.push(Action::Update(spec.clone()));
        } else if spec.status == DesiredStatus::Stopped {
            stops.push(Action::Stop(spec.clone()));
        } else {
            rest.push(Action::Start(spec.clone()));
        }
    }
    removals.append(&mut stops);
    removals.append(&mut rest);
    removals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::{RestartPolicy, Runner};

    fn spec(name: &str, order: u32) -> ModuleSpec {
        ModuleSpec {
            name: name.into(),
            runner: Runner::Process {
                command: "/bin/sleep".into(),
                args: vec!["100".into()],
                working_dir: None,
            },
            version: "1.0".into(),
            status: DesiredStatus::Running,
            restart_policy: RestartPolicy::Always,
            startup_order: order,
            env: BTreeMap::new(),
            user: None,
        }
    }

    fn map(specs: &[ModuleSpec]) -> BTreeMap<String, ModuleSpec> {
        specs.iter().map(|s| (s.name.clone(), s.clone())).collect()
    }

    #[test]
    fn from_nothing_creates_in_startup_order() {
        let desired = map(&[spec("b", 2), spec("a", 5), spec("c", 2)]);
        let actions = plan(&BTreeMap::new(), &desired);
        let names: Vec<&str> = actions.iter().map(Action::module).collect();
        assert_eq!(names, ["b", "c", "a"]);
        assert!(actions.iter().all(|a| matches!(a, Action::Create(_))));
    }

    #[test]
    fn unchanged_modules_get_no_action() {
        let m = map(&[spec("a", 1), spec("b", 2)]);
        assert!(plan(&m, &m).is_empty());
    }

    #[test]
    fn removed_first_then_stops_then_the_rest() {
        let current = map(&[spec("gone", 0), spec("a", 1), spec("b", 2), spec("c", 3)]);
        let mut stopped = spec("c", 3);
        stopped.status = DesiredStatus::Stopped;
        let mut changed = spec("a", 1);
        changed.env.insert("X".into(), "1".into());
        let desired = map(&[
            changed.clone(),
            spec("b", 2),
            stopped.clone(),
            spec("new", 0),
        ]);
        let actions = plan(&current, &desired);
        assert_eq!(
            actions,
            vec![
                Action::Remove("gone".into()),
                Action::Stop(stopped),
                Action::Create(spec("new", 0)),
                Action::Update(changed),
            ]
        );
    }

    #[test]
    fn a_status_change_back_to_running_is_a_start_and_a_version_change_an_update() {
        let mut stopped = spec("a", 1);
        stopped.status = DesiredStatus::Stopped;
        let current = map(&[stopped, spec("b", 1)]);
        let mut newer = spec("b", 1);
        newer.version = "2.0".into();
        let actions = plan(&current, &map(&[spec("a", 1), newer.clone()]));
        assert_eq!(
            actions,
            vec![Action::Start(spec("a", 1)), Action::Update(newer)]
        );
    }

    #[test]
    fn an_empty_deployment_removes_everything() {
        let current = map(&[spec("a", 1), spec("b", 2)]);
        let actions = plan(&current, &BTreeMap::new());
        assert_eq!(
            actions,
            vec![Action::Remove("a".into()), Action::Remove("b".into())]
        );
    }
}
