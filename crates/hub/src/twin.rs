//! Device twins: tags, desired and reported properties with versions, JSON merge patches and the
//! IoT Hub document limits.

mod metadata;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Deepest nesting IoT Hub allows in tags and properties.
use hub_wire::limits::TWIN_MAX_DEPTH as MAX_DEPTH;
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
    /// The `$metadata` of `desired`, root markers included (empty for twins stored before
    /// metadata was kept; the service view fills the gaps).
    #[serde(default)]
    pub desired_metadata: Map<String, Value>,
    /// The `$metadata` of `reported`, root marker included.
    #[serde(default)]
    pub reported_metadata: Map<String, Value>,
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
            desired_metadata: Map::new(),
            reported_metadata: Map::new(),
        }
    }
}

/// Why a twin update is refused (→ 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct TwinError(pub String);

impl TwinState {
    /// `{"desired": {..., "$version": n}, "reported": {..., "$version": m}}`, what a device GETs
    /// (no `$metadata`).
    pub fn properties(&self) -> Value {
        serde_json::json!({
            "desired": with_version(&self.desired, self.desired_version),
            "reported": with_version(&self.reported, self.reported_version),
        })
    }

    /// What the service API shows: [`Self::properties`] with a `$metadata` object in each
    /// section (`$lastUpdated` on every node, plus `$lastUpdatedVersion` in desired).
    pub fn service_properties(&self) -> Value {
        serde_json::json!({
            "desired": with_metadata(
                &self.desired,
                &self.desired_metadata,
                self.desired_version,
                true,
            ),
            "reported": with_metadata(
                &self.reported,
                &self.reported_metadata,
                self.reported_version,
                false,
            ),
        })
    }

    /// Merges a reported patch from the device at `now` (RFC 3339 with milliseconds); returns the
    /// new reported version. Keys starting with `$` are ignored.
    pub fn patch_reported(&mut self, patch: &Value, now: &str) -> Result<u64, TwinError> {
        let patch = metadata::strip_reserved(
            patch
                .as_object()
                .ok_or_else(|| TwinError("a reported patch must be a JSON object".into()))?,
        );
        let mut next = self.reported.clone();
        merge(&mut next, &patch);
        check_section("reported", &next)?;
        let mut meta = metadata::reconcile(
            &self.reported_metadata,
            &self.reported,
            &metadata::fallback(&self.reported_metadata, None),
        );
        metadata::apply(&mut meta, &patch, &metadata::stamp(now, None));
        self.reported = next;
        self.reported_metadata = meta;
        self.reported_version += 1;
        self.bump();
        Ok(self.reported_version)
    }

    /// Merges a service patch `{tags?, properties?: {desired?}}` at `now` (RFC 3339 with
    /// milliseconds); `replace` (a `PUT`) replaces tags and desired properties and rebuilds the
    /// desired metadata. Returns the desired patch to push to the device (with its `$version`)
    /// when desired properties changed.
    pub fn patch_service(
        &mut self,
        patch: &Value,
        replace: bool,
        now: &str,
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
        let desired_patch = match patch.get("properties").and_then(|p| p.get("desired")) {
            Some(d) => metadata::strip_reserved(
                d.as_object()
                    .ok_or_else(|| TwinError("properties.desired must be an object".into()))?,
            ),
            None => Map::new(),
        };
        let mut desired = if replace {
            Map::new()
        } else {
            self.desired.clone()
        };
        merge(&mut desired, &desired_patch);
        check_section("tags", &tags)?;
        check_section("desired", &desired)?;
        self.tags = tags;
        self.bump();
        if desired == self.desired && !replace {
            return Ok(None);
        }
        self.desired_version += 1;
        self.desired_metadata = self.next_desired_metadata(&desired, &desired_patch, replace, now);
        self.desired = desired;
        let mut push = desired_patch;
        push.insert("$version".into(), self.desired_version.into());
        Ok(Some(Value::Object(push)))
    }

    /// The desired metadata after `patch` turned `self.desired` into `next` (the version is
    /// already bumped): rebuilt from scratch on `replace`, otherwise updated along the patch.
    fn next_desired_metadata(
        &self,
        next: &Map<String, Value>,
        patch: &Map<String, Value>,
        replace: bool,
        now: &str,
    ) -> Map<String, Value> {
        let stamp = metadata::stamp(now, Some(self.desired_version));
        if replace {
            return metadata::reconcile(&Map::new(), next, &stamp);
        }
        let previous = self.desired_version.saturating_sub(1);
        let mut meta = metadata::reconcile(
            &self.desired_metadata,
            &self.desired,
            &metadata::fallback(&self.desired_metadata, Some(previous)),
        );
        metadata::apply(&mut meta, patch, &stamp);
        meta
    }

    fn bump(&mut self) {
        self.version += 1;
        use base64::Engine as _;
        self.etag = base64::engine::general_purpose::STANDARD.encode(self.version.to_be_bytes());
    }
}

/// How twin metadata shows a time: RFC 3339 in UTC with milliseconds, `2026-11-23T12:00:00.123Z`.
pub fn metadata_time(t: ::time::OffsetDateTime) -> String {
    t.checked_to_offset(::time::UtcOffset::UTC).map_or_else(
        || hub_wire::model::NEVER.to_owned(),
        ferrohub_runtime::time::rfc3339_millis,
    )
}

/// A section as the service shows it: properties, `$metadata` (gaps filled) and `$version`.
fn with_metadata(
    section: &Map<String, Value>,
    meta: &Map<String, Value>,
    version: u64,
    desired: bool,
) -> Value {
    let fallback = metadata::fallback(meta, desired.then_some(version));
    let mut meta = metadata::reconcile(meta, section, &fallback);
    if desired {
        meta.insert(metadata::LAST_UPDATED_VERSION.into(), version.into());
    }
    let mut m = section.clone();
    m.insert("$metadata".into(), Value::Object(meta));
    m.insert("$version".into(), version.into());
    Value::Object(m)
}

fn with_version(section: &Map<String, Value>, version: u64) -> Value {
    let mut m = section.clone();
    m.insert("$version".into(), version.into());
    Value::Object(m)
}

use hub_wire::merge;

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
    ) -> Result<TwinState, ferrohub_runtime::store::StoreError> {
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
    ) -> Result<u64, ferrohub_runtime::error::ApiError> {
        let _guard = self.lock();
        let mut twin = self.get(hub, client_id)?;
        let v = twin
            .patch_reported(patch, &metadata_time(hub.clock.now()))
            .map_err(|e| ferrohub_runtime::error::ApiError::bad_request(e.0))?;
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
        if_match: &ferrohub_runtime::etag::IfMatch,
        replace: bool,
    ) -> Result<TwinState, ferrohub_runtime::error::ApiError> {
        let guard = self.lock();
        let mut twin = self.get(hub, client_id)?;
        if_match.check(Some(&twin.etag), &format!("twin {client_id}"))?;
        let push = twin
            .patch_service(patch, replace, &metadata_time(hub.clock.now()))
            .map_err(|e| ferrohub_runtime::error::ApiError::bad_request(e.0))?;
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

    const T1: &str = "2026-11-23T12:00:00.123Z";
    const T2: &str = "2026-11-23T12:05:00.456Z";
    const T3: &str = "2026-11-23T12:10:00.789Z";

    fn lu(t: &str) -> Value {
        json!({ "$lastUpdated": t })
    }

    fn luv(t: &str, v: u64) -> Value {
        json!({ "$lastUpdated": t, "$lastUpdatedVersion": v })
    }

    #[test]
    fn reported_patches_merge_and_version() {
        let mut t = TwinState::default();
        assert_eq!(
            t.patch_reported(&json!({"fw": "1.0", "net": {"ip": "a", "mask": 24}}), T1)
                .unwrap(),
            2
        );
        assert_eq!(
            t.patch_reported(&json!({"net": {"ip": null, "gw": "g"}}), T2)
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
                T1,
            )
            .unwrap();
        assert_eq!(push, Some(json!({"rate": 5, "$version": 2})));
        assert_ne!(t.etag, etag);
        assert_eq!(
            t.patch_service(&json!({"tags": {"site": "y"}}), false, T2)
                .unwrap(),
            None
        );
        assert_eq!(t.tags, json!({"site": "y"}).as_object().unwrap().clone());
        assert_eq!(
            t.service_properties()["desired"]["$metadata"],
            json!({"$lastUpdated": T1, "$lastUpdatedVersion": 2, "rate": luv(T1, 2)}),
            "a patch without a desired change leaves desired metadata alone"
        );
    }

    #[test]
    fn limits_are_enforced() {
        let mut t = TwinState::default();
        let mut deep = json!(1);
        for _ in 0..12 {
            deep = json!({ "a": deep });
        }
        assert!(t.patch_reported(&deep, T1).is_err());
        let big = json!({"blob": "x".repeat(40 * 1024)});
        assert!(t.patch_reported(&big, T1).is_err());
        assert_eq!(t.reported_version, 1, "a refused patch changes nothing");
        assert!(t.reported_metadata.is_empty(), "nor its metadata");
        assert!(t.patch_reported(&json!([1]), T1).is_err());
    }

    #[test]
    fn metadata_does_not_count_against_the_limits() {
        let mut t = TwinState::default();
        // Nine levels of properties are allowed; their metadata is as deep and larger.
        let mut deep = json!(1);
        for _ in 0..8 {
            deep = json!({ "a": deep });
        }
        t.patch_reported(&deep, T1).unwrap();
        let wide: Map<String, Value> = (0..1500).map(|i| (format!("k{i}"), json!(i))).collect();
        let size = serde_json::to_vec(&wide).unwrap().len();
        assert!(size < MAX_SECTION_BYTES);
        t.patch_reported(&Value::Object(wide), T2).unwrap();
        assert!(serde_json::to_vec(&t.reported_metadata).unwrap().len() > MAX_SECTION_BYTES);
        t.patch_reported(&json!({"k0": 1}), T3).unwrap();
    }

    #[test]
    fn nested_reported_patch_stamps_leaf_ancestors_and_root() {
        let mut t = TwinState::default();
        t.patch_reported(
            &json!({"telemetryConfig": {"sendFrequency": "5m", "status": "success"}}),
            T1,
        )
        .unwrap();
        let reported = &t.service_properties()["reported"];
        assert_eq!(
            reported["$metadata"],
            json!({
                "$lastUpdated": T1,
                "telemetryConfig": {
                    "$lastUpdated": T1,
                    "sendFrequency": lu(T1),
                    "status": lu(T1),
                },
            })
        );
        assert_eq!(reported["$version"], 2);
        assert_eq!(reported["telemetryConfig"]["status"], "success");
    }

    #[test]
    fn a_later_patch_stamps_only_the_touched_path() {
        let mut t = TwinState::default();
        t.patch_reported(
            &json!({"telemetryConfig": {"sendFrequency": "5m", "status": "success"}, "b": 1}),
            T1,
        )
        .unwrap();
        t.patch_reported(&json!({"telemetryConfig": {"status": "failed"}}), T2)
            .unwrap();
        assert_eq!(
            t.service_properties()["reported"]["$metadata"],
            json!({
                "$lastUpdated": T2,
                "telemetryConfig": {
                    "$lastUpdated": T2,
                    "sendFrequency": lu(T1),
                    "status": lu(T2),
                },
                "b": lu(T1),
            })
        );
    }

    #[test]
    fn null_removes_the_metadata_subtree() {
        let mut t = TwinState::default();
        t.patch_reported(&json!({"a": {"b": {"c": 1}, "d": 2}, "e": 3}), T1)
            .unwrap();
        t.patch_reported(&json!({"a": {"b": null}}), T2).unwrap();
        assert_eq!(
            t.service_properties()["reported"]["$metadata"],
            json!({"$lastUpdated": T2, "a": {"$lastUpdated": T2, "d": lu(T1)}, "e": lu(T1)})
        );
        t.patch_reported(&json!({"a": null}), T3).unwrap();
        assert_eq!(
            Value::Object(t.reported_metadata.clone()),
            json!({"$lastUpdated": T3, "e": lu(T1)})
        );
    }

    #[test]
    fn replacing_objects_and_leaves_replaces_the_metadata_subtree() {
        let mut t = TwinState::default();
        t.patch_reported(&json!({"a": {"x": 1, "y": 2}, "b": 5}), T1)
            .unwrap();
        t.patch_reported(&json!({"a": [1, {"z": 2}], "b": {"c": 1}}), T2)
            .unwrap();
        assert_eq!(
            t.service_properties()["reported"]["$metadata"],
            json!({
                "$lastUpdated": T2,
                "a": lu(T2),
                "b": {"$lastUpdated": T2, "c": lu(T2)},
            })
        );
    }

    #[test]
    fn desired_metadata_carries_last_updated_version() {
        let mut t = TwinState::default();
        let desired = |d: Value| json!({"properties": {"desired": d}});
        t.patch_service(
            &desired(json!({"cfg": {"freq": "5m", "mode": "a"}})),
            false,
            T1,
        )
        .unwrap();
        t.patch_service(&desired(json!({"cfg": {"mode": "b"}, "x": [1]})), false, T2)
            .unwrap();
        let d = &t.service_properties()["desired"];
        assert_eq!(d["$version"], 3);
        assert_eq!(
            d["$metadata"],
            json!({
                "$lastUpdated": T2,
                "$lastUpdatedVersion": 3,
                "cfg": {
                    "$lastUpdated": T2,
                    "$lastUpdatedVersion": 3,
                    "freq": luv(T1, 2),
                    "mode": luv(T2, 3),
                },
                "x": luv(T2, 3),
            })
        );
        assert!(d["$metadata"]["x"].get("$lastUpdatedVersion").is_some());
        assert!(
            t.service_properties()["reported"]["$metadata"]
                .get("$lastUpdatedVersion")
                .is_none(),
            "reported metadata has no versions"
        );
    }

    #[test]
    fn put_replace_rebuilds_desired_metadata() {
        let mut t = TwinState::default();
        t.patch_service(
            &json!({"properties": {"desired": {"a": {"b": 1}, "c": 2}}}),
            false,
            T1,
        )
        .unwrap();
        let push = t
            .patch_service(
                &json!({"tags": {"t": 1}, "properties": {"desired": {"c": 2, "d": {"e": 3}}}}),
                true,
                T2,
            )
            .unwrap();
        assert_eq!(push, Some(json!({"c": 2, "d": {"e": 3}, "$version": 3})));
        assert_eq!(
            t.service_properties()["desired"]["$metadata"],
            json!({
                "$lastUpdated": T2,
                "$lastUpdatedVersion": 3,
                "c": luv(T2, 3),
                "d": {"$lastUpdated": T2, "$lastUpdatedVersion": 3, "e": luv(T2, 3)},
            })
        );
    }

    #[test]
    fn reserved_keys_in_patches_are_ignored() {
        let mut t = TwinState::default();
        t.patch_reported(
            &json!({"$version": 9, "a": {"$lastUpdated": "x", "b": 1}}),
            T1,
        )
        .unwrap();
        assert_eq!(
            t.properties()["reported"],
            json!({"a": {"b": 1}, "$version": 2})
        );
        let push = t
            .patch_service(
                &json!({"properties": {"desired": {"$metadata": {}, "c": {"$x": 1, "d": 2}}}}),
                false,
                T1,
            )
            .unwrap();
        assert_eq!(push, Some(json!({"c": {"d": 2}, "$version": 2})));
    }

    #[test]
    fn device_properties_have_no_metadata() {
        let mut t = TwinState::default();
        t.patch_reported(&json!({"a": {"b": 1}}), T1).unwrap();
        t.patch_service(&json!({"properties": {"desired": {"c": 2}}}), false, T1)
            .unwrap();
        assert_eq!(
            t.properties(),
            json!({
                "desired": {"c": 2, "$version": 2},
                "reported": {"a": {"b": 1}, "$version": 2},
            })
        );
        let service = t.service_properties();
        assert!(service["desired"].get("$metadata").is_some());
        assert!(service["reported"].get("$metadata").is_some());
    }

    #[test]
    fn a_never_written_twin_shows_the_unknown_time() {
        let never = hub_wire::model::NEVER;
        assert_eq!(
            TwinState::default().service_properties(),
            json!({
                "desired": {"$metadata": luv(never, 1), "$version": 1},
                "reported": {"$metadata": lu(never), "$version": 1},
            })
        );
    }

    #[test]
    fn old_json_without_metadata_deserializes() {
        let old = json!({
            "tags": {}, "desired": {"a": {"b": 1}}, "desiredVersion": 4,
            "reported": {"r": 1, "s": 2}, "reportedVersion": 7, "version": 9, "etag": "AAAAAAAAAAk=",
        });
        let mut t: TwinState = serde_json::from_value(old).unwrap();
        assert!(t.desired_metadata.is_empty() && t.reported_metadata.is_empty());
        let never = hub_wire::model::NEVER;
        assert_eq!(
            t.service_properties()["desired"]["$metadata"],
            json!({
                "$lastUpdated": never, "$lastUpdatedVersion": 4,
                "a": {"$lastUpdated": never, "$lastUpdatedVersion": 4, "b": luv(never, 4)},
            })
        );
        t.patch_reported(&json!({"r": 5}), T1).unwrap();
        assert_eq!(
            t.service_properties()["reported"]["$metadata"],
            json!({"$lastUpdated": T1, "r": lu(T1), "s": lu(never)})
        );
        let stored = serde_json::to_value(&t).unwrap();
        let back: TwinState = serde_json::from_value(stored).unwrap();
        assert_eq!(back, t, "metadata survives a store round trip");
    }

    #[test]
    fn metadata_time_is_utc_with_milliseconds() {
        // 2026-11-23T12:00:00.123456Z, shown at +01:00.
        let t = ::time::OffsetDateTime::from_unix_timestamp_nanos(1_795_435_200_123_456_000)
            .unwrap()
            .to_offset(::time::UtcOffset::from_hms(1, 0, 0).unwrap());
        assert_eq!(t.hour(), 13);
        assert_eq!(metadata_time(t), "2026-11-23T12:00:00.123Z");
        let t = ::time::OffsetDateTime::from_unix_timestamp(1_795_435_200).unwrap();
        assert_eq!(metadata_time(t), "2026-11-23T12:00:00.000Z");
    }
}
