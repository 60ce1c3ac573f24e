//! The agent's own MQTT connection to the hub as `{edge}/$edgeAgent`: it reads the twin, follows
//! desired-property patches (each patch is followed by a full GET, so the agent always sees the
//! whole deployment), and keeps the reported properties equal to what the agent last built,
//! patching only what differs from what the hub has. It reconnects by itself.

use std::time::Duration;

use mqtt_codec::{Packet, Publish, QoS, Subscribe};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use edge::upstream::{self, HubLink, UpstreamError, Writer};

use crate::reported::diff;

/// How the session gets a fresh SAS token for `{edge}/$edgeAgent`.
pub type TokenFn = std::sync::Arc<dyn Fn() -> String + Send + Sync>;

/// What the session needs.
pub struct TwinLink {
    pub link: HubLink,
    pub client_id: String,
    pub token: TokenFn,
    /// Every full read of the desired properties (with `$version`).
    pub desired: mpsc::UnboundedSender<Value>,
    /// The reported properties the agent wants the hub to show.
    pub reported: watch::Receiver<Value>,
    /// Whether the session is connected (for `edge list`'s edgeAgent line).
    pub connected: watch::Sender<bool>,
}

const PING_EVERY: Duration = Duration::from_secs(60);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Runs the session until `shutdown`, reconnecting with back-off (1 s doubling to 30 s).
pub async fn run(mut t: TwinLink, mut shutdown: watch::Receiver<bool>) {
    let mut wait = Duration::from_secs(1);
    loop {
        match session(&mut t, &mut shutdown).await {
            Ok(()) => return,
            Err(e) => {
                t.connected.send_replace(false);
                warn!(error = %e, retry_in = ?wait, "The $edgeAgent connection to the hub failed");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        wait = (wait * 2).min(MAX_RETRY);
    }
}

struct State {
    next_rid: u64,
    get_rid: Option<u64>,
    /// The reported properties the hub has (from the last GET, then each acknowledged patch).
    hub_reported: Option<Value>,
    /// A reported patch in flight: its request id and the full document it brings about.
    in_flight: Option<(u64, Value)>,
    /// The last document the hub refused (not sent again).
    refused: Option<Value>,
}

impl State {
    fn rid(&mut self) -> u64 {
        self.next_rid += 1;
        self.next_rid
    }
}

async fn session(
    t: &mut TwinLink,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), UpstreamError> {
    let token = (t.token)();
    let (mut rd, mut wr) = upstream::connect(&t.link, &t.client_id, false, &token).await?;
    info!(client_id = %t.client_id, "Connected to the hub");
    wr.send(&[Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![
            ("$iothub/twin/res/#".into(), QoS::AtMostOnce),
            (
                "$iothub/twin/PATCH/properties/desired/#".into(),
                QoS::AtMostOnce,
            ),
        ],
    })])
    .await?;
    let mut s = State {
        next_rid: 0,
        get_rid: None,
        hub_reported: None,
        in_flight: None,
        refused: None,
    };
    get(&mut wr, &mut s).await?;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            p = rd.recv() => on_packet(t, &mut wr, &mut s, p?).await?,
            changed = t.reported.changed() => {
                if changed.is_err() {
                    wr.close().await;
                    return Ok(());
                }
                patch(t, &mut wr, &mut s).await?;
            }
            _ = ping.tick() => wr.send(&[Packet::PingReq]).await?,
            _ = shutdown.changed() => {
                wr.close().await;
                return Ok(());
            }
        }
    }
}

async fn get(wr: &mut Writer, s: &mut State) -> Result<(), UpstreamError> {
    let rid = s.rid();
    s.get_rid = Some(rid);
    publish(wr, format!("$iothub/twin/GET/?$rid={rid}"), Vec::new()).await
}

async fn publish(wr: &mut Writer, topic: String, payload: Vec<u8>) -> Result<(), UpstreamError> {
    wr.send(&[Packet::Publish(Publish::at_most_once(topic, payload))])
        .await
}

/// Sends the difference between what the hub has and what the agent wants, if any and if no
/// patch is in flight.
async fn patch(t: &TwinLink, wr: &mut Writer, s: &mut State) -> Result<(), UpstreamError> {
    if s.in_flight.is_some() {
        return Ok(());
    }
    let Some(have) = &s.hub_reported else {
        return Ok(());
    };
    let want = t.reported.borrow().clone();
    if !want.is_object() || s.refused.as_ref() == Some(&want) {
        return Ok(());
    }
    let delta = diff(have, &want);
    if delta.as_object().is_none_or(serde_json::Map::is_empty) {
        return Ok(());
    }
    let rid = s.rid();
    s.in_flight = Some((rid, want));
    debug!(rid, "Patching the $edgeAgent reported properties");
    publish(
        wr,
        format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}"),
        delta.to_string().into_bytes(),
    )
    .await
}

async fn on_packet(
    t: &mut TwinLink,
    wr: &mut Writer,
    s: &mut State,
    p: Packet,
) -> Result<(), UpstreamError> {
    let Packet::Publish(p) = p else {
        if let Packet::SubAck(_) = p {
            t.connected.send_replace(true);
        }
        return Ok(());
    };
    if let (QoS::AtLeastOnce, Some(id)) = (p.qos, p.packet_id) {
        wr.send(&[Packet::PubAck(id)]).await?;
    }
    if p.topic
        .starts_with("$iothub/twin/PATCH/properties/desired/")
    {
        return get(wr, s).await;
    }
    let Some(rest) = p.topic.strip_prefix("$iothub/twin/res/") else {
        return Ok(());
    };
    let (status, query) = rest.split_once('/').unwrap_or((rest, ""));
    let status: u16 = status.parse().unwrap_or(0);
    let rid = query
        .trim_start_matches('?')
        .split('&')
        .find_map(|kv| kv.strip_prefix("$rid="))
        .and_then(|r| r.parse::<u64>().ok());
    if rid.is_some() && rid == s.get_rid {
        s.get_rid = None;
        if status != 200 {
            return Err(UpstreamError::Protocol(format!(
                "the hub answered the twin GET with {status}"
            )));
        }
        let twin: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
        s.hub_reported = Some(twin["reported"].clone());
        let _ = t.desired.send(twin["desired"].clone());
    } else if let Some((id, doc)) = s.in_flight.take_if(|(id, _)| Some(*id) == rid) {
        if (200..300).contains(&status) {
            s.hub_reported = Some(doc);
        } else {
            warn!(rid = id, status, body = %String::from_utf8_lossy(&p.payload), "The hub refused a reported patch");
            s.refused = Some(doc);
        }
    }
    patch(t, wr, s).await
}
