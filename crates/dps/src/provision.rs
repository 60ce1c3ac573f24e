//! Registration: allocate a hub, create or move the device there, record the result.
//!
//! A register request starts an operation and is answered `assigning` at once; the work runs in
//! the background and a poll of the operation id returns `assigned` (or `failed`) when it is done.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

use hub_wire::TwinPatch;
use hub_wire::model::{Device, Status};
use serde_json::Value;
use tracing::{info, warn};

use crate::Dps;
use crate::allocate::{self, Candidate};
use crate::attest::{Attested, Enrollment, HubAuth};
use crate::hubs::HubCallError;
use crate::model::{OperationStatus, RegistrationState};
use crate::ownership::{self, WriteError};

/// Operations in progress or recently finished, by operation id.
#[derive(Default)]
pub struct Operations {
    ops: Mutex<HashMap<String, Op>>,
}

struct Op {
    registration_id: String,
    done: Option<OperationStatus>,
    started: tokio::time::Instant,
}

/// Finished operations are kept this long for late polls.
const KEEP: std::time::Duration = std::time::Duration::from_secs(600);

impl Operations {
    fn start(&self, registration_id: &str) -> String {
        let mut id = [0u8; 12];
        let _ = pki::random_fill(&mut id);
        let op_id = format!("4.{}", hex::encode(id));
        if let Ok(mut ops) = self.ops.lock() {
            if ops.len() > 10_000 {
                ops.retain(|_, o| o.done.is_none() || o.started.elapsed() < KEEP);
            }
            ops.insert(
                op_id.clone(),
                Op {
                    registration_id: registration_id.to_lowercase(),
                    done: None,
                    started: tokio::time::Instant::now(),
                },
            );
        }
        op_id
    }

    fn finish(&self, op_id: &str, status: OperationStatus) {
        if let Ok(mut ops) = self.ops.lock()
            && let Some(op) = ops.get_mut(op_id)
        {
            op.done = Some(status);
        }
    }

    /// The state of an operation of this registration (`None`: unknown id).
    pub fn poll(&self, op_id: &str, registration_id: &str) -> Option<OperationStatus> {
        let ops = self.ops.lock().ok()?;
        let op = ops.get(op_id)?;
        if op.registration_id != registration_id.to_lowercase() {
            return None;
        }
        Some(op.done.clone().unwrap_or_else(|| assigning(op_id)))
    }
}

fn assigning(op_id: &str) -> OperationStatus {
    OperationStatus {
        operation_id: op_id.to_owned(),
        status: "assigning".into(),
        registration_state: None,
    }
}

/// Starts the registration of an attested device; returns the `assigning` answer.
pub fn begin(
    dps: &Arc<Dps>,
    registration_id: &str,
    attested: Attested,
    payload: Option<Value>,
) -> OperationStatus {
    let op_id = dps.operations.start(registration_id);
    let (dps2, op, reg) = (dps.clone(), op_id.clone(), registration_id.to_owned());
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let state = register(&dps2, &reg, attested, payload).await;
        dps2.metrics.registration_latency.observe(started.elapsed());
        let status = if state.status == "assigned" {
            ferrohub_runtime::metrics::inc(&dps2.metrics.registrations_assigned);
            "assigned"
        } else {
            ferrohub_runtime::metrics::inc(&dps2.metrics.registrations_failed);
            "failed"
        };
        let result = OperationStatus {
            operation_id: op.clone(),
            status: status.into(),
            registration_state: Some(state),
        };
        dps2.operations.finish(&op, result);
    });
    assigning(&op_id)
}

/// What happens to the device's data at the hub.
enum Plan {
    /// First assignment, or reset: the enrollment's initial twin.
    InitialTwin {
        delete_from: Option<(String, String)>,
    },
    /// Keep what the hub has.
    Keep,
    /// Copy tags and desired properties from the old hub, then delete it there.
    Migrate { from: String, device_id: String },
}

/// Allocates, writes the device to its hub and records the registration (assigned or failed).
pub async fn register(
    dps: &Dps,
    registration_id: &str,
    attested: Attested,
    payload: Option<Value>,
) -> RegistrationState {
    let now = ferrohub_runtime::time::rfc3339_millis(dps.clock.now());
    let previous = dps.store.get_registration(registration_id).ok().flatten();
    let mut state = RegistrationState {
        registration_id: registration_id.to_owned(),
        created_date_time_utc: Some(
            previous
                .as_ref()
                .and_then(|p| p.created_date_time_utc.clone())
                .unwrap_or_else(|| now.clone()),
        ),
        last_updated_date_time_utc: Some(now),
        etag: Some(ferrohub_runtime::etag::new_etag()),
        payload,
        x509: attested.x509.clone(),
        symmetric_key: attested.symmetric_key.clone(),
        enrollment_group_id: attested.enrollment.group_id().map(str::to_owned),
        ..Default::default()
    };
    match assign(dps, registration_id, &attested, previous.as_ref()).await {
        Ok((hub, device_id, substatus)) => {
            info!(registration_id, %hub, %device_id, substatus, "Device assigned");
            state.status = "assigned".into();
            state.assigned_hub = Some(hub);
            state.device_id = Some(device_id);
            state.substatus = Some(substatus.into());
        }
        Err((code, message)) => {
            warn!(registration_id, code, %message, "Registration failed");
            state.status = "failed".into();
            state.error_code = Some(code);
            state.error_message = Some(message);
        }
    }
    if let Err(e) = dps.store.put_registration(&state) {
        warn!(registration_id, error = %e, "Could not store the registration record");
    }
    state
}

type Failure = (u32, String);

async fn assign(
    dps: &Dps,
    registration_id: &str,
    attested: &Attested,
    previous: Option<&RegistrationState>,
) -> Result<(String, String, &'static str), Failure> {
    let settings = attested.enrollment.settings();
    let device_id = match &attested.enrollment {
        Enrollment::Individual(e) => e
            .device_id
            .clone()
            .unwrap_or_else(|| registration_id.to_owned()),
        Enrollment::Group(_) => registration_id.to_owned(),
    };
    let linked: Vec<Candidate> = dps
        .hubs
        .hubs
        .iter()
        .map(|h| Candidate {
            hostname: h.hostname.clone(),
            weight: h.weight,
        })
        .collect();
    let candidates = allocate::candidates(&linked, &settings.iot_hubs);
    let policy = settings
        .allocation_policy
        .as_deref()
        .unwrap_or(&dps.config.allocation_policy);
    let chosen = allocate::choose(
        policy,
        &candidates,
        settings.iot_hub_host_name.as_deref(),
        registration_id,
    )
    .map_err(|e| (400_207, e.to_string()))?;
    let reprovision = settings.reprovision_policy.unwrap_or_default();
    let prior = previous
        .filter(|p| p.status == "assigned")
        .and_then(|p| {
            Some((
                p.assigned_hub.clone()?,
                p.device_id.clone()?,
                p.substatus.clone(),
            ))
        })
        .filter(|(h, _, _)| linked.iter().any(|c| c.hostname.eq_ignore_ascii_case(h)));
    let (hub, plan, substatus) = match prior {
        None => (
            chosen,
            Plan::InitialTwin { delete_from: None },
            "initialAssignment",
        ),
        Some((old, _, sub)) if !reprovision.update_hub_assignment => {
            (old, Plan::Keep, static_substatus(sub.as_deref()))
        }
        Some((old, old_id, sub)) if old.eq_ignore_ascii_case(&chosen) && old_id == device_id => {
            if reprovision.migrate_device_data {
                (old, Plan::Keep, static_substatus(sub.as_deref()))
            } else {
                (
                    old,
                    Plan::InitialTwin { delete_from: None },
                    "deviceDataReset",
                )
            }
        }
        Some((old, old_id, _)) => {
            if reprovision.migrate_device_data {
                (
                    chosen,
                    Plan::Migrate {
                        from: old,
                        device_id: old_id,
                    },
                    "deviceDataMigrated",
                )
            } else {
                (
                    chosen,
                    Plan::InitialTwin {
                        delete_from: Some((old, old_id)),
                    },
                    "deviceDataReset",
                )
            }
        }
    };
    let recorded_here = previous.is_some_and(|p| {
        p.status == "assigned"
            && p.device_id.as_deref() == Some(device_id.as_str())
            && p.assigned_hub
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(&hub))
    });
    apply(dps, &hub, &device_id, attested, plan, recorded_here)
        .await
        .map_err(|e| match e {
            WriteError::NotManaged => (
                ownership::NOT_MANAGED_CODE,
                ownership::NOT_MANAGED_MESSAGE.to_owned(),
            ),
            WriteError::Hub(e) => (
                500_000 + hub_code(&e),
                format!("assigning to {hub} failed: {e}"),
            ),
        })?;
    Ok((hub, device_id, substatus))
}

fn static_substatus(previous: Option<&str>) -> &'static str {
    match previous {
        Some("deviceDataMigrated") => "deviceDataMigrated",
        Some("deviceDataReset") => "deviceDataReset",
        _ => "initialAssignment",
    }
}

fn hub_code(e: &HubCallError) -> u32 {
    match e {
        HubCallError::Status { status, .. } => u32::from(status.as_u16()),
        _ => 0,
    }
}

/// Writes the device (and its twin, per `plan`) to `hub`, if this service may (see
/// [`ownership`]). `recorded_here`: this service's record assigned `device_id` at `hub`.
async fn apply(
    dps: &Dps,
    hub: &str,
    device_id: &str,
    attested: &Attested,
    plan: Plan,
    recorded_here: bool,
) -> Result<(), WriteError> {
    let settings = attested.enrollment.settings();
    let device = hub_device(
        device_id,
        &attested.auth,
        settings.capabilities.iot_edge,
        ownership::mark(dps),
    );
    let twin = match &plan {
        Plan::Keep => None,
        Plan::InitialTwin { .. } => settings.initial_twin.as_ref().map(initial_twin_document),
        Plan::Migrate {
            from,
            device_id: old,
        } => migrated_twin(dps, from, old).await?,
    };
    let (existed, etag) = ownership::write_device(
        dps,
        hub,
        device_id,
        &device,
        recorded_here,
        settings.allow_overwrite,
    )
    .await?;
    if let Some(twin) = twin
        && let Err(e) = dps.hubs.write_twin(hub, device_id, &twin, true).await
    {
        if !existed {
            // Nothing half-created: the device goes away with its failed twin.
            let _ = dps.hubs.delete_device(hub, device_id, &etag).await;
        }
        return Err(e.into());
    }
    match plan {
        Plan::Migrate {
            from,
            device_id: old,
        }
        | Plan::InitialTwin {
            delete_from: Some((from, old)),
        } => Ok(ownership::delete_device(dps, &from, &old).await?),
        _ => Ok(()),
    }
}

/// The device record written to the hub: enabled, the credential the device proved here, the
/// enrollment's `iotEdge` capability, managed by this service (`mark`).
fn hub_device(device_id: &str, auth: &HubAuth, iot_edge: bool, mark: String) -> Device {
    Device {
        device_id: device_id.to_owned(),
        status: Status::Enabled,
        authentication: auth.authentication(),
        capabilities: hub_wire::model::Capabilities { iot_edge },
        managed_by: Some(mark),
        ..Device::default()
    }
}

/// Tags and desired properties of the device's old copy, if that copy is still ours.
async fn migrated_twin(
    dps: &Dps,
    from: &str,
    old: &str,
) -> Result<Option<TwinPatch>, HubCallError> {
    let Some(current) = dps.hubs.get_device(from, old).await? else {
        return Ok(None);
    };
    if ownership::owned_etag(&ownership::mark(dps), &current).is_none() {
        return Ok(None);
    }
    let t = dps.hubs.get_twin(from, old).await?;
    Ok(Some(TwinPatch {
        tags: Some(t["tags"].clone()),
        ..TwinPatch::desired(strip_meta(&t["properties"]["desired"]))
    }))
}

/// `{tags, properties: {desired}}` from an enrollment's `initialTwin` (TwinCollection metadata
/// such as `version`/`count` dropped).
fn initial_twin_document(t: &Value) -> TwinPatch {
    TwinPatch {
        tags: Some(strip_meta(&t["tags"])),
        ..TwinPatch::desired(strip_meta(&t["properties"]["desired"]))
    }
}

fn strip_meta(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        _ => Value::Object(serde_json::Map::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The record the hub's devices API parses from a body, but for the times, which the hub
    /// sets itself whatever a client sends.
    fn as_hub_reads(body: Value) -> Device {
        let mut d: Device = serde_json::from_value(body).unwrap();
        d.connection_state_updated_time.clear();
        d.status_updated_time.clear();
        d.last_activity_time.clear();
        d
    }

    #[test]
    fn the_hub_reads_the_device_record_as_the_json_written_before() {
        let keys = HubAuth::Keys {
            primary: "p".into(),
            secondary: "s".into(),
        };
        let old = json!({"deviceId": "d1", "status": "enabled",
            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "p", "secondaryKey": "s"}},
            "capabilities": {"iotEdge": true}, "managedBy": "dps:0ne1"});
        let typed = hub_device("d1", &keys, true, "dps:0ne1".into());
        assert_eq!(as_hub_reads(hub_wire::body(&typed)), as_hub_reads(old));
        let old = json!({"deviceId": "d2", "status": "enabled",
            "authentication": {"type": "selfSigned",
                "x509Thumbprint": {"primaryThumbprint": "AB", "secondaryThumbprint": "AB"}},
            "capabilities": {"iotEdge": false}, "managedBy": "dps:0ne1"});
        let typed = hub_device(
            "d2",
            &HubAuth::Thumbprint("AB".into()),
            false,
            "dps:0ne1".into(),
        );
        assert_eq!(as_hub_reads(hub_wire::body(&typed)), as_hub_reads(old));
    }

    #[test]
    fn initial_twins_keep_only_tags_and_desired() {
        let t = json!({"tags": {"a": 1}, "properties": {"desired": {"rate": 2, "$version": 4}, "reported": {"x": 1}}});
        assert_eq!(
            hub_wire::body(&initial_twin_document(&t)),
            json!({"tags": {"a": 1}, "properties": {"desired": {"rate": 2}}})
        );
        assert_eq!(
            hub_wire::body(&initial_twin_document(&json!({}))),
            json!({"tags": {}, "properties": {"desired": {}}})
        );
    }

    #[test]
    fn operations_belong_to_their_registration() {
        let ops = Operations::default();
        let id = ops.start("Dev1");
        assert_eq!(ops.poll(&id, "dev1").unwrap().status, "assigning");
        assert!(ops.poll(&id, "dev2").is_none());
        assert!(ops.poll("4.nope", "dev1").is_none());
        ops.finish(
            &id,
            OperationStatus {
                operation_id: id.clone(),
                status: "assigned".into(),
                registration_state: None,
            },
        );
        assert_eq!(ops.poll(&id, "DEV1").unwrap().status, "assigned");
    }
}
