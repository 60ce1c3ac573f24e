//! Which hub devices this provisioning service may write: the ones it created, marked with
//! `managedBy: "dps:<idScope>"` at the hub, or ones an enrollment with `allowOverwrite` adopts.
//!
//! Every write is conditional on what was read: a create carries no `If-Match` (the hub answers
//! 409 if the device appeared meanwhile), a replace or delete carries the etag that was checked
//! (412 if the device changed meanwhile); either way the device is read and judged again.

use hub_wire::model::Device;
use serde_json::Value;
use tracing::warn;

use crate::Dps;
use crate::hubs::HubCallError;

/// The registration error code and message of a device this service may not take over.
pub const NOT_MANAGED_CODE: u32 = 409_201;
pub const NOT_MANAGED_MESSAGE: &str =
    "device exists and is not managed by this provisioning service";

/// Reads and conditional writes before giving up on a device that keeps changing.
const ATTEMPTS: usize = 3;

/// A device write that failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Hub(#[from] HubCallError),
    #[error("{NOT_MANAGED_MESSAGE}")]
    NotManaged,
}

/// The `managedBy` value of the devices this service creates.
pub fn mark(dps: &Dps) -> String {
    format!("dps:{}", dps.config.id_scope)
}

/// What may be done with the device id at a hub.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No such device: create it.
    Create,
    /// Replace (or delete) the version with this etag.
    Replace(String),
    /// Someone else's device: leave it alone.
    NotManaged(Option<String>),
}

/// Judges the device found at the hub (`current`) for a write of `wanted`.
///
/// It is ours when it carries our mark. A device without any mark that this service's own
/// registration record assigned here (created before devices were marked) is ours too, but only
/// when it already has the credentials and capabilities the write gives it, so that nothing is
/// taken from anyone. `adopt` (the enrollment's `allowOverwrite`) takes any device.
pub fn judge(
    mark: &str,
    current: Option<&Value>,
    wanted: &Device,
    recorded_here: bool,
    adopt: bool,
) -> Verdict {
    let Some(current) = current else {
        return Verdict::Create;
    };
    let etag = current["etag"].as_str().unwrap_or_default().to_owned();
    let manager = current["managedBy"].as_str().filter(|m| !m.is_empty());
    let legacy = manager.is_none() && recorded_here && same_identity(current, wanted);
    if adopt || manager == Some(mark) || legacy {
        Verdict::Replace(etag)
    } else {
        Verdict::NotManaged(manager.map(str::to_owned))
    }
}

/// Same authentication (type, keys, thumbprints) and the same `iotEdge` capability.
///
/// A `certificateAuthority` device (what this service wrote for X.509 groups before it wrote
/// thumbprints) counts as the same identity as the thumbprint of a leaf the group accepted: the
/// write narrows it to that one certificate and gives nothing new.
fn same_identity(current: &Value, wanted: &Device) -> bool {
    use hub_wire::model::AuthType;
    let Ok(a) = serde_json::from_value::<Device>(current.clone()) else {
        return false;
    };
    let b = wanted;
    let (x, y) = (&a.authentication, &b.authentication);
    let narrowed = x.kind() == AuthType::CertificateAuthority && y.kind() == AuthType::SelfSigned;
    let same = x.kind() == y.kind() && x.keys() == y.keys() && x.thumbprints() == y.thumbprints();
    (same || narrowed) && a.capabilities == b.capabilities
}

/// Creates `device` at `hub` or replaces the one there if this service may; returns whether it
/// existed and the etag of what was written.
pub async fn write_device(
    dps: &Dps,
    hub: &str,
    device_id: &str,
    device: &Device,
    recorded_here: bool,
    adopt: bool,
) -> Result<(bool, String), WriteError> {
    let mark = mark(dps);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = dps.hubs.get_device(hub, device_id).await?;
        let if_match = match judge(&mark, current.as_ref(), device, recorded_here, adopt) {
            Verdict::Create => None,
            Verdict::Replace(etag) => Some(etag),
            Verdict::NotManaged(manager) => {
                ferrohub_runtime::metrics::inc(&dps.metrics.registrations_not_managed);
                warn!(
                    %hub, device_id, managed_by = manager.as_deref().unwrap_or("(none)"),
                    "Registration refused: the device already exists at the hub and this \
                     provisioning service did not create it; to let this enrollment take it over \
                     set allowOverwrite on the enrollment (`--allow-overwrite`), or delete the \
                     device at the hub"
                );
                return Err(WriteError::NotManaged);
            }
        };
        match dps
            .hubs
            .put_device(hub, device_id, device, if_match.as_deref())
            .await
        {
            Ok(written) => {
                let etag = written["etag"].as_str().unwrap_or_default().to_owned();
                return Ok((if_match.is_some(), etag));
            }
            Err(e) if attempt < ATTEMPTS && changed_meanwhile(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Deletes the device from `hub` if it is ours (it moved to another hub); someone else's device
/// of the same id is left alone.
pub async fn delete_device(dps: &Dps, hub: &str, device_id: &str) -> Result<(), HubCallError> {
    let mark = mark(dps);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(current) = dps.hubs.get_device(hub, device_id).await? else {
            return Ok(());
        };
        let Some(etag) = owned_etag(&mark, &current) else {
            warn!(
                %hub, device_id, managed_by = current["managedBy"].as_str().unwrap_or("(none)"),
                "The device moved to another hub; its old copy is now managed by someone else \
                 and is left in place"
            );
            return Ok(());
        };
        match dps.hubs.delete_device(hub, device_id, &etag).await {
            Err(e) if attempt < ATTEMPTS && changed_meanwhile(&e) => {}
            other => return other,
        }
    }
}

/// The device's etag if it is ours to read and delete as the old copy of a device that moved
/// (this service's record put it there, so an unmarked device counts as ours).
pub fn owned_etag(mark: &str, current: &Value) -> Option<String> {
    let manager = current["managedBy"].as_str().filter(|m| !m.is_empty());
    (manager.is_none() || manager == Some(mark))
        .then(|| current["etag"].as_str().unwrap_or_default().to_owned())
}

/// 409 (created meanwhile) or 412 (changed meanwhile): read again.
fn changed_meanwhile(e: &HubCallError) -> bool {
    matches!(e, HubCallError::Status { status, .. }
        if *status == hyper::StatusCode::CONFLICT || *status == hyper::StatusCode::PRECONDITION_FAILED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MARK: &str = "dps:0ne00000001";
    const K1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const K2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

    fn sas(key: &str, edge: bool) -> Value {
        json!({"deviceId": "d", "etag": "E1", "authentication": {"type": "sas",
            "symmetricKey": {"primaryKey": key, "secondaryKey": key}},
            "capabilities": {"iotEdge": edge}})
    }

    /// The device record a write sends, from its JSON.
    fn typed(v: Value) -> Device {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_marked_or_adopted_devices_are_replaced() {
        let wanted = typed(sas(K1, false));
        assert_eq!(judge(MARK, None, &wanted, false, false), Verdict::Create);
        let mut ours = sas(K2, true);
        ours["managedBy"] = json!(MARK);
        assert_eq!(
            judge(MARK, Some(&ours), &wanted, false, false),
            Verdict::Replace("E1".into())
        );
        let mut other = sas(K2, false);
        other["managedBy"] = json!("dps:0neOTHER");
        assert_eq!(
            judge(MARK, Some(&other), &wanted, true, false),
            Verdict::NotManaged(Some("dps:0neOTHER".into()))
        );
        assert_eq!(
            judge(MARK, Some(&other), &wanted, false, true),
            Verdict::Replace("E1".into()),
            "allowOverwrite adopts"
        );
        let ca = json!({"deviceId": "d", "etag": "E1", "authentication": {"type": "certificateAuthority"}});
        assert_eq!(
            judge(MARK, Some(&ca), &wanted, false, false),
            Verdict::NotManaged(None)
        );
    }

    #[test]
    fn unmarked_devices_of_our_records_are_ours_only_with_the_same_identity() {
        let wanted = typed(sas(K1, false));
        let same = sas(K1, false);
        assert_eq!(
            judge(MARK, Some(&same), &wanted, true, false),
            Verdict::Replace("E1".into())
        );
        assert_eq!(
            judge(MARK, Some(&same), &wanted, false, false),
            Verdict::NotManaged(None),
            "no record of ours"
        );
        for changed in [sas(K2, false), sas(K1, true)] {
            assert_eq!(
                judge(MARK, Some(&changed), &wanted, true, false),
                Verdict::NotManaged(None)
            );
        }
    }

    #[test]
    fn unmarked_certificate_authority_devices_of_our_records_narrow_to_the_thumbprint() {
        let ca = json!({"deviceId": "d", "etag": "E1",
            "authentication": {"type": "certificateAuthority"}, "capabilities": {"iotEdge": true}});
        let mut wanted = typed(
            json!({"deviceId": "d", "authentication": {"type": "selfSigned",
            "x509Thumbprint": {"primaryThumbprint": "AB", "secondaryThumbprint": "AB"}},
            "capabilities": {"iotEdge": true}}),
        );
        assert_eq!(
            judge(MARK, Some(&ca), &wanted, true, false),
            Verdict::Replace("E1".into())
        );
        assert_eq!(
            judge(MARK, Some(&ca), &wanted, false, false),
            Verdict::NotManaged(None),
            "no record of ours"
        );
        wanted.capabilities.iot_edge = false;
        assert_eq!(
            judge(MARK, Some(&ca), &wanted, true, false),
            Verdict::NotManaged(None)
        );
    }

    #[test]
    fn old_copies_of_moved_devices_are_deleted_only_if_ours() {
        let mut d = sas(K1, false);
        assert_eq!(owned_etag(MARK, &d), Some("E1".into()));
        d["managedBy"] = json!(MARK);
        assert_eq!(owned_etag(MARK, &d), Some("E1".into()));
        d["managedBy"] = json!("manual");
        assert_eq!(owned_etag(MARK, &d), None);
    }
}
