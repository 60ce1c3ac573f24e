//! `ferrohub hub events`: the hub's telemetry from its events endpoint, as a readable block per
//! event on a terminal and as the endpoint's JSON lines otherwise (or with `--json`).

use std::io::{IsTerminal as _, Write as _};

use anyhow::Result;
use clap::{Args, ValueEnum};
use http_body_util::BodyExt as _;
use hub::events::ConsumedEvent;

use super::admin::{Conn, enc};

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// text on a terminal, json otherwise.
    Auto,
    /// One block per event: time, device (and module), properties, body.
    Text,
    /// One JSON object per line, as `GET /events` sends them.
    Json,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    conn: Conn,
    /// Keep reading and print new events as they arrive.
    #[arg(long)]
    follow: bool,
    /// Only events from this device id.
    #[arg(long, value_name = "ID")]
    device: Option<String>,
    /// Start at the oldest stored event.
    #[arg(long, conflicts_with = "from")]
    from_start: bool,
    /// Start at this offset.
    #[arg(long, value_name = "OFFSET")]
    from: Option<u64>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Print JSON lines (same as --format json), for scripts and jq.
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// How to print events.
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
}

pub async fn events(a: EventsArgs) -> Result<()> {
    let client = a.conn.client()?;
    let from = match (a.from, a.from_start, a.follow) {
        (Some(n), _, _) => n.to_string(),
        (None, true, _) | (None, false, false) => "start".into(),
        (None, false, true) => "end".into(),
    };
    let mut path = format!("/events?from={from}&follow={}", a.follow);
    if let Some(d) = &a.device {
        path.push_str(&format!("&device={}", enc(d)));
    }
    if let Some(n) = a.limit {
        path.push_str(&format!("&limit={n}"));
    }
    let text = match (a.json, a.format) {
        (true, _) | (false, Format::Json) => false,
        (false, Format::Text) => true,
        (false, Format::Auto) => std::io::stdout().is_terminal(),
    };
    let mut body = client.stream(&path).await?;
    let mut stdout = std::io::stdout().lock();
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if !text {
            stdout.write_all(&data)?;
        } else {
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                stdout.write_all(render(&line[..end]).as_bytes())?;
            }
        }
        stdout.flush()?;
    }
    if !pending.is_empty() {
        stdout.write_all(render(&pending).as_bytes())?;
    }
    Ok(())
}

/// One event as a block: `TIME  DEVICE[/MODULE]  (offset N)`, then its properties, the message's
/// own system properties (the hub's `iothub-*` stamps left out) and the body, as text when it is
/// UTF-8, else as hex. A line that is not an event is printed as it came.
fn render(line: &[u8]) -> String {
    let Ok(consumed) = serde_json::from_slice::<ConsumedEvent>(line) else {
        return format!("{}\n", printable(&String::from_utf8_lossy(line)));
    };
    let e = &consumed.event;
    let who = match &e.module_id {
        Some(m) => format!("{}/{m}", e.device_id),
        None => e.device_id.clone(),
    };
    let mut out = format!(
        "{}  {}  (offset {})\n",
        printable(&e.enqueued_time),
        printable(&who),
        consumed.offset
    );
    let properties: Vec<String> = e
        .properties
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        })
        .collect();
    let properties = match properties.is_empty() {
        true => "(none)".to_owned(),
        false => properties.join(", "),
    };
    out.push_str(&format!("  properties: {}\n", printable(&properties)));
    let system: Vec<String> = e
        .system_properties
        .iter()
        .filter(|(k, _)| !k.starts_with("iothub-"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !system.is_empty() {
        out.push_str(&format!("  system: {}\n", printable(&system.join(", "))));
    }
    if e.body_encoding == "base64" {
        let bytes = e.body_bytes();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!("  body (hex, {} bytes): {hex}\n", bytes.len()));
    } else {
        let body = printable(&e.body).replace('\n', "\n        ");
        out.push_str(&format!("  body: {body}\n"));
    }
    out
}

/// `s` with control characters escaped (a device's text must not drive the terminal), keeping
/// newlines and tabs.
fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '\n' | '\t' => vec![c],
            c if c.is_control() => c.escape_default().collect(),
            c => vec![c],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_block_shows_time_device_properties_and_body() {
        let line = br#"{"offset":3,"deviceId":"gw","moduleId":"filter","enqueuedTime":"2026-11-23T00:00:00.000Z","systemProperties":{"iothub-connection-device-id":"gw","messageId":"m1"},"properties":{"alert":"1","flag":null},"body":"a\nb\u001b[2J","bodyEncoding":"utf-8"}"#;
        assert_eq!(
            render(line),
            "2026-11-23T00:00:00.000Z  gw/filter  (offset 3)\n  properties: alert=1, flag\n  \
             system: messageId=m1\n  body: a\n        b\\u{1b}[2J\n"
        );
        let binary = br#"{"offset":4,"deviceId":"d","enqueuedTime":"t","systemProperties":{},"properties":{},"body":"AP8Q","bodyEncoding":"base64"}"#;
        assert_eq!(
            render(binary),
            "t  d  (offset 4)\n  properties: (none)\n  body (hex, 3 bytes): 00ff10\n"
        );
        assert_eq!(render(b"not json"), "not json\n");
    }
}
