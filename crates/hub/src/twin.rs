//! Device twins: tags, desired and reported properties with versions, JSON merge patches and the
//! IoT Hub document limits.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Deepest nesting IoT Hub allows in tags and properties.
pub const MAX_DEPTH: usize = 10;
/// Largest serialized tags, desired or reported section.
pub const MAX_SECTION_BYTES: usize = 32 * 1024;

/// The stored twin of a device or module.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TwinState {
    pub tags: Map<String, Value>,
    pub desired: Map<String, Value>,
    pub desired_version: u64,
    pub reported: Map<String, Value>,
    pub reported_version: u64,
    pub version: u64,
    pub etag: String,
}

impl Default for TwinState {
    fn default() -> Self {
        Self {
            tags: Map::new(),
            desired: Map::new(),
            desired_version: 1,
            reported: Map::new(),
            reported_version: 1,
            version: 1,
            etag: "AAAAAAAAAAE=".into(),
        }
    }
}

/// Why a twin update is refused (→ 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct TwinError(pub String);

impl TwinState {
    /// `{"desired": {..., "$version": n}, "reported": {..., "$version": m}}`, what a device GETs.
    pub fn properties(&self) -> Value {
        serde_json::json!({
            "desired": with_version(&self.desired, self.desired_version),
            "reported": with_version(&self.reported, self.reported_version),
        })
    }

    /// Merges a reported patch from the device; returns the new reported version.
    pub fn patch_reported(&mut self, patch: &Value) -> Result<u64, TwinError> {
        let patch = patch
            .as_object()
            .ok_or_else(|| TwinError("a reported patch must be a JSON object".into()))?;
        let mut next = self.reported.clone();
        merge(&mut next, patch);
        check_section("reported", &next)?;
        self.reported = next;
        self.reported_version += 1;
        self.bump();
        Ok(self.reported_version)
    }

    /// Merges a service patch `{tags?, properties?: {desired?}}`; returns the desired patch to push
    /// to the device (with its `$version`) when desired properties changed.
    pub fn patch_service(
        &mut self,
        patch: &Value,
        replace: bool,
    ) -> Result<Option<Value>, TwinError> {
        let patch = patch
            .as_object()
            .ok_or_else(|| TwinError("a twin patch must be a JSON object".into()))?;
        let mut tags = if replace {
            Map::new()
        } else {
            self.tags.clone()
        };
        if let Some(t) = patch.get("tags") {
            merge(
                &mut tags,
                t.as_object()
                    .ok_or_else(|| TwinError("tags must be an object".into()))?,
            );
        }
        let desired_patch = patch.get("properties").and_then(|p| p.get("desired"));
        let mut desired = if replace {
            Map::new()
        } else {
            self.desired.clone()
        };
        if let Some(d) = desired_patch {
            let mut d = d
                .as_object()
                .ok_or_else(|| TwinError("properties.desired must be an object".into()))?
                .clone();
            d.retain(|k, _| !k.starts_with('$'));
            merge(&mut desired, &d);
        }
        check_section("tags", &tags)?;
        check_section("desired", &desired)?;
        self.tags = tags;
        let changed = desired != self.desired || replace;
        self.desired = desired;
        self.bump();
        if !changed {
            return Ok(None);
        }
        self.desired_version += 1;
        let mut push = desired_patch
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        push.retain(|k, _| !k.starts_with('$'));
        push.insert("$version".into(), self.desired_version.into());
        Ok(Some(Value::Object(push)))
    }

    fn bump(&mut self) {
        self.version += 1;
        use base64::Engine as _;
        self.etag = base64::engine::general_purpose::STANDARD.encode(self.version.to_be_bytes());
    }
}

fn with_version(section: &Map<String, Value>, version: u64) -> Value {
    let mut m = section.clone();
    m.insert("$version".into(), version.into());
    Value::Object(m)
}

/// RFC 7396 merge: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                let entry = target
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(t) = entry {
                    merge(t, p);
                } else {
                    *entry = Value::Object(Map::new());
                    if let Value::Object(t) = entry {
                        merge(t, p);
                    }
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn check_section(name: &str, section: &Map<String, Value>) -> Result<(), TwinError> {
    let d = section.values().map(depth).max().unwrap_or(0) + 1;
    if d > MAX_DEPTH {
        return Err(TwinError(format!(
            "{name} is nested {d} levels deep; the limit is {MAX_DEPTH}"
        )));
    }
    let size = serde_json::to_vec(section).map_or(usize::MAX, |b| b.len());
    if size > MAX_SECTION_BYTES {
        return Err(TwinError(format!(
            "{name} is {size} bytes; the limit is {MAX_SECTION_BYTES}"
        )));
    }
    Ok(())
}

/// Reads, patches and stores twins; pushes desired patches to a subscribed connection.
pub struct TwinService {
    write: std::sync::Mutex<()>,
}

impl Default for TwinService {
    fn default() -> Self {
        Self {
            write: std::sync::Mutex::new(()),
        }
    }
}

impl TwinService {
    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The twin of an identity (empty when never written).
    pub fn get(
        &self,
        hub: &crate::Hub,
        client_id: &str,
    ) -> Result<TwinState, crate::store::StoreError> {
        Ok(hub
            .registry
            .store()
            .get_twin(client_id)?
            .unwrap_or_default())
    }

    /// A device's reported patch; returns the new reported version.
    pub fn patch_reported(
        &self,
        hub: &crate::Hub,
        client_id: &str,
        patch: &Value,
    ) -> Result<u64, crate::error::ApiError> {
        let _guard = self.lock();
        let mut twin = self.get(hub, client_id)?;
        let v = twin
            .patch_reported(patch)
            .map_err(|e| crate::error::ApiError::bad_request(e.0))?;
        hub.registry.store().put_twin(client_id, &twin)?;
        Ok(v)
    }

    /// A service patch (`PATCH`, or `PUT` with `replace`) with an `If-Match` check; a desired change
    /// is pushed to the device if it is connected and subscribed.
    pub fn patch_service(
        &self,
        hub: &crate::Hub,
        client_id: &str,
        patch: &Value,
        if_match: &crate::registry::IfMatch,
        replace: bool,
    ) -> Result<TwinState, crate::error::ApiError> {
        let guard = self.lock();
        let mut twin = self.get(hub, client_id)?;
        if_match.check(Some(&twin.etag), &format!("twin {client_id}"))?;
        let push = twin
            .patch_service(patch, replace)
            .map_err(|e| crate::error::ApiError::bad_request(e.0))?;
        hub.registry.store().put_twin(client_id, &twin)?;
        drop(guard);
        if let Some(push) = push {
            hub.connections
                .push_desired(client_id, twin.desired_version, &push);
        }
        Ok(twin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reported_patches_merge_and_version() {
        let mut t = TwinState::default();
        assert_eq!(
            t.patch_reported(&json!({"fw": "1.0", "net": {"ip": "a", "mask": 24}}))
                .unwrap(),
            2
        );
        assert_eq!(
            t.patch_reported(&json!({"net": {"ip": null, "gw": "g"}}))
                .unwrap(),
            3
        );
        assert_eq!(
            t.properties()["reported"],
            json!({"fw": "1.0", "net": {"mask": 24, "gw": "g"}, "$version": 3})
        );
    }

    #[test]
    fn desired_changes_produce_a_versioned_push() {
        let mut t = TwinState::default();
        let etag = t.etag.clone();
        let push = t
            .patch_service(
                &json!({"tags": {"site": "x"}, "properties": {"desired": {"rate": 5}}}),
                false,
            )
            .unwrap();
        assert_eq!(push, Some(json!({"rate": 5, "$version": 2})));
        assert_ne!(t.etag, etag);
        assert_eq!(
            t.patch_service(&json!({"tags": {"site": "y"}}), false)
                .unwrap(),
            None
        );
        assert_eq!(t.tags, json!({"site": "y"}).as_object().unwrap().clone());
    }

    #[test]
    fn limits_are_enforced() {
        let mut t = TwinState::default();
        let mut deep = json!(1);
        for _ in 0..12 {
            deep = json!({ "a": deep });
        }
        assert!(t.patch_reported(&deep).is_err());
        let big = json!({"blob": "x".repeat(40 * 1024)});
        assert!(t.patch_reported(&big).is_err());
        assert_eq!(t.reported_version, 1, "a refused patch changes nothing");
        assert!(t.patch_reported(&json!([1])).is_err());
    }
}
