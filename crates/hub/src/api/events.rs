//! `GET /events`: the telemetry log as NDJSON, from an offset, optionally following the head.
//!
//! Query: `from` (offset, `start` or `end`; default `start`), `device` (only this device id),
//! `follow` (`true` keeps the response open and streams new events), `limit` (stop after N).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::{Target, admit};
use crate::Hub;
use crate::config::Right;
use crate::events::{ConsumedEvent, EventRecord};
use ferrohub_runtime::error::ApiError;

const BATCH: usize = 512;

struct Cursor {
    hub: Arc<Hub>,
    next: u64,
    device: Option<String>,
    follow: bool,
    remaining: u64,
    head: tokio::sync::watch::Receiver<u64>,
}

fn param<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

pub async fn stream(
    State(hub): State<Arc<Hub>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admit(&hub, &uri, &headers, Right::ServiceConnect, Target::Hub)?;
    let next = match param(&uri, "from") {
        None | Some("start") => hub.events.start_offset(),
        Some("end") => hub.events.next_offset(),
        Some(n) => n.parse().map_err(|_| {
            ApiError::bad_request(format!("from={n} is not an offset, 'start' or 'end'"))
        })?,
    };
    let remaining = match param(&uri, "limit") {
        Some(n) => n
            .parse()
            .map_err(|_| ApiError::bad_request(format!("limit={n} is not a number")))?,
        None => u64::MAX,
    };
    let cursor = Cursor {
        head: hub.events.subscribe(),
        hub,
        next,
        device: param(&uri, "device").map(percent_decode),
        follow: param(&uri, "follow") == Some("true"),
        remaining,
    };
    let body = futures_util::stream::unfold(cursor, next_chunk);
    Ok((
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}

/// The next chunk of NDJSON lines, or `None` at the end (not following, or the limit reached).
async fn next_chunk(mut c: Cursor) -> Option<(Result<Vec<u8>, std::io::Error>, Cursor)> {
    loop {
        if c.remaining == 0 {
            return None;
        }
        let records = match c.hub.events.read(c.next, BATCH, 4 * 1024 * 1024) {
            Ok(r) => r,
            Err(e) => {
                return Some((
                    Err(std::io::Error::other(e.to_string())),
                    Cursor { remaining: 0, ..c },
                ));
            }
        };
        if records.is_empty() {
            if !c.follow {
                return None;
            }
            let head = *c.head.borrow_and_update();
            if head <= c.next && c.head.changed().await.is_err() {
                return None;
            }
            continue;
        }
        let mut out = Vec::new();
        for r in records {
            c.next = r.offset + 1;
            if write_line(&mut out, r.offset, &r.payload, c.device.as_deref()) {
                c.remaining -= 1;
                if c.remaining == 0 {
                    break;
                }
            }
        }
        if !out.is_empty() {
            return Some((Ok(out), c));
        }
    }
}

/// Appends the NDJSON line of a stored record (`{"offset":N,` + the record's own fields) unless
/// `device` filters it out; false when nothing was written. Records are stored as the JSON of an
/// [`EventRecord`] with `deviceId` first, so the line is spliced rather than decoded and encoded
/// again; anything else is decoded (and skipped when it does not parse).
fn write_line(out: &mut Vec<u8>, offset: u64, payload: &[u8], device: Option<&str>) -> bool {
    const PREFIX: &[u8] = b"{\"deviceId\":\"";
    let spliceable = payload.starts_with(PREFIX)
        && payload.ends_with(b"}")
        && payload[PREFIX.len()..]
            .iter()
            .position(|b| *b == b'"' || *b == b'\\')
            .is_some_and(|end| {
                let id = &payload[PREFIX.len()..PREFIX.len() + end];
                payload[PREFIX.len() + end] == b'"' && device.is_none_or(|d| d.as_bytes() == id)
            });
    if spliceable {
        out.extend_from_slice(b"{\"offset\":");
        out.extend_from_slice(offset.to_string().as_bytes());
        out.push(b',');
        out.extend_from_slice(&payload[1..]);
        out.push(b'\n');
        return true;
    }
    let Ok(event) = serde_json::from_slice::<EventRecord>(payload) else {
        return false;
    };
    if device.is_some_and(|d| d != event.device_id) {
        return false;
    }
    if serde_json::to_writer(&mut *out, &ConsumedEvent { offset, event }).is_err() {
        return false;
    }
    out.push(b'\n');
    true
}

fn percent_decode(s: &str) -> String {
    iot_auth::percent_decode(s).unwrap_or_else(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(device: &str) -> Vec<u8> {
        let mut e = EventRecord {
            device_id: device.into(),
            module_id: Some("m".into()),
            enqueued_time: "2026-11-23T00:00:00.000Z".into(),
            system_properties: [("messageId".to_owned(), "x\"y".to_owned())].into(),
            properties: [("k".to_owned(), None)].into(),
            body: String::new(),
            body_encoding: String::new(),
        };
        e.set_body(b"{\"t\":1}");
        serde_json::to_vec(&e).unwrap()
    }

    fn decoded(offset: u64, payload: &[u8]) -> serde_json::Value {
        let event = serde_json::from_slice(payload).unwrap();
        serde_json::to_value(ConsumedEvent { offset, event }).unwrap()
    }

    #[test]
    fn a_spliced_line_is_the_decoded_and_encoded_one() {
        for device in ["dev-1", "d:=@$'(),", "with\"quote", "back\\slash"] {
            let payload = record(device);
            let mut out = Vec::new();
            assert!(write_line(&mut out, 42, &payload, None), "{device}");
            assert_eq!(out.last(), Some(&b'\n'));
            let line: serde_json::Value = serde_json::from_slice(&out[..out.len() - 1]).unwrap();
            assert_eq!(line, decoded(42, &payload), "{device}");
        }
    }

    #[test]
    fn the_device_filter_and_unreadable_records() {
        let payload = record("a");
        let mut out = Vec::new();
        assert!(!write_line(&mut out, 1, &payload, Some("b")));
        assert!(!write_line(&mut out, 1, &payload, Some("ab")));
        assert!(out.is_empty());
        assert!(write_line(&mut out, 1, &payload, Some("a")));
        let mut junk = Vec::new();
        assert!(!write_line(&mut junk, 2, b"{\"deviceId\":\"a\"", None));
        assert!(!write_line(&mut junk, 2, b"not json", None));
        assert!(junk.is_empty());
    }
}
