//! Azure-style `$metadata` of desired and reported properties: a tree that mirrors the property
//! tree, where every object node and every leaf carries `$lastUpdated` and, for desired
//! properties, `$lastUpdatedVersion`. Arrays are leaves. The root node's markers describe the whole
//! section.
//!
//! Every function here is pure: the caller passes the time as an already formatted string.

use serde_json::{Map, Value};

/// When a node (or the section) was last written.
pub const LAST_UPDATED: &str = "$lastUpdated";
/// The desired `$version` after the update that last wrote a node.
pub const LAST_UPDATED_VERSION: &str = "$lastUpdatedVersion";

/// The marker keys of one node: `$lastUpdated` and, when `version` is given,
/// `$lastUpdatedVersion`.
pub fn stamp(now: &str, version: Option<u64>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(LAST_UPDATED.into(), now.into());
    if let Some(v) = version {
        m.insert(LAST_UPDATED_VERSION.into(), v.into());
    }
    m
}

/// The stamp for nodes whose metadata is unknown (twins stored before metadata existed): the
/// section's own `$lastUpdated`, or `0001-01-01T00:00:00Z` when that is unknown too.
pub fn fallback(meta: &Map<String, Value>, version: Option<u64>) -> Map<String, Value> {
    let last = meta
        .get(LAST_UPDATED)
        .and_then(Value::as_str)
        .unwrap_or(hub_wire::model::NEVER);
    stamp(last, version)
}

/// The metadata of `props`, root included: nodes present in `meta` keep their markers, missing
/// nodes and markers are taken from `fallback`, and nodes without a property are dropped. Only the
/// marker keys named in `fallback` are kept, so reported metadata never gains a version.
pub fn reconcile(
    meta: &Map<String, Value>,
    props: &Map<String, Value>,
    fallback: &Map<String, Value>,
) -> Map<String, Value> {
    node(Some(meta), Some(props), fallback)
}

fn node(
    meta: Option<&Map<String, Value>>,
    props: Option<&Map<String, Value>>,
    fallback: &Map<String, Value>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, default) in fallback {
        let v = meta.and_then(|m| m.get(key)).unwrap_or(default);
        out.insert(key.clone(), v.clone());
    }
    for (k, v) in props.into_iter().flatten() {
        if k.starts_with('$') {
            continue;
        }
        let child = meta.and_then(|m| m.get(k)).and_then(Value::as_object);
        out.insert(
            k.clone(),
            Value::Object(node(child, v.as_object(), fallback)),
        );
    }
    out
}

/// Records a JSON merge patch in `meta` (the metadata node of the object the patch applies to):
/// this node and every node the patch touches get `stamp`; `null` removes the node and its
/// subtree; a leaf (arrays included) replaces the subtree with a fresh node.
pub fn apply(
    meta: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    stamp: &Map<String, Value>,
) {
    meta.extend(stamp.clone());
    for (k, v) in patch {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                meta.remove(k);
            }
            Value::Object(p) => {
                let child = meta
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !child.is_object() {
                    *child = Value::Object(Map::new());
                }
                if let Value::Object(c) = child {
                    apply(c, p, stamp);
                }
            }
            _ => {
                meta.insert(k.clone(), Value::Object(stamp.clone()));
            }
        }
    }
}

/// A copy of `patch` without keys that start with `$`, at any depth (IoT Hub reserves them;
/// arrays are leaves and kept as they are).
pub fn strip_reserved(patch: &Map<String, Value>) -> Map<String, Value> {
    patch
        .iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| {
            let v = match v {
                Value::Object(m) => Value::Object(strip_reserved(m)),
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn apply_stamps_touched_nodes_and_keeps_siblings() {
        let mut meta = obj(json!({
            "$lastUpdated": "t0",
            "a": {"$lastUpdated": "t0", "x": {"$lastUpdated": "t0"}, "y": {"$lastUpdated": "t0"}},
            "b": {"$lastUpdated": "t0"},
        }));
        apply(&mut meta, &obj(json!({"a": {"x": 2}})), &stamp("t1", None));
        assert_eq!(
            Value::Object(meta),
            json!({
                "$lastUpdated": "t1",
                "a": {"$lastUpdated": "t1", "x": {"$lastUpdated": "t1"}, "y": {"$lastUpdated": "t0"}},
                "b": {"$lastUpdated": "t0"},
            })
        );
    }

    #[test]
    fn apply_replaces_subtrees_and_removes_on_null() {
        let mut meta = obj(json!({
            "$lastUpdated": "t0",
            "a": {"$lastUpdated": "t0", "x": {"$lastUpdated": "t0"}},
            "b": {"$lastUpdated": "t0", "z": {"$lastUpdated": "t0"}},
        }));
        apply(
            &mut meta,
            &obj(json!({"a": [1, {"k": 2}], "b": null, "c": {"d": {}}})),
            &stamp("t1", Some(3)),
        );
        let s = json!({"$lastUpdated": "t1", "$lastUpdatedVersion": 3});
        assert_eq!(
            Value::Object(meta),
            json!({
                "$lastUpdated": "t1", "$lastUpdatedVersion": 3,
                "a": s,
                "c": {"$lastUpdated": "t1", "$lastUpdatedVersion": 3, "d": s},
            })
        );
    }

    #[test]
    fn reconcile_fills_missing_nodes_and_prunes_stale_ones() {
        let props = obj(json!({"a": {"x": 1}, "b": [1, 2], "$junk": 1}));
        let meta = obj(json!({
            "$lastUpdated": "t5",
            "a": {"$lastUpdated": "t4", "$lastUpdatedVersion": 9, "gone": {"$lastUpdated": "t1"}},
            "b": {"$lastUpdated": "t3", "stale": {"$lastUpdated": "t1"}},
            "old": {"$lastUpdated": "t1"},
        }));
        let fb = fallback(&meta, None);
        assert_eq!(
            Value::Object(reconcile(&meta, &props, &fb)),
            json!({
                "$lastUpdated": "t5",
                "a": {"$lastUpdated": "t4", "x": {"$lastUpdated": "t5"}},
                "b": {"$lastUpdated": "t3"},
            })
        );
        let empty = Map::new();
        assert_eq!(
            Value::Object(reconcile(
                &empty,
                &obj(json!({"a": 1})),
                &fallback(&empty, Some(2))
            )),
            json!({
                "$lastUpdated": "0001-01-01T00:00:00Z", "$lastUpdatedVersion": 2,
                "a": {"$lastUpdated": "0001-01-01T00:00:00Z", "$lastUpdatedVersion": 2},
            })
        );
    }

    #[test]
    fn reserved_keys_are_stripped_at_every_depth() {
        assert_eq!(
            Value::Object(strip_reserved(&obj(json!({
                "$version": 4, "a": {"$lastUpdated": "x", "b": 1}, "c": [{"$k": 1}],
            })))),
            json!({"a": {"b": 1}, "c": [{"$k": 1}]})
        );
    }
}
