//! `GET /events`: the telemetry log as NDJSON, from an offset, optionally following the head.
//!
//! Query: `from` (offset, `start` or `end`; default `start`), `device` (only this device id),
//! `follow` (`true` keeps the response open and streams new events), `limit` (stop after N).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::admit;
use crate::Hub;
use crate::config::Right;
use crate::error::ApiError;
use crate::events::{ConsumedEvent, EventRecord};

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
    admit(&hub, &uri, &headers, Right::ServiceConnect)?;
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
            let Ok(event) = serde_json::from_slice::<EventRecord>(&r.payload) else {
                continue;
            };
            if c.device.as_deref().is_some_and(|d| d != event.device_id) {
                continue;
            }
            if serde_json::to_writer(
                &mut out,
                &ConsumedEvent {
                    offset: r.offset,
                    event,
                },
            )
            .is_ok()
            {
                out.push(b'\n');
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

fn percent_decode(s: &str) -> String {
    iot_auth::percent_decode(s).unwrap_or_else(|| s.to_owned())
}
