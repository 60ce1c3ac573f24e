//! Store-and-forward: every message a child sent is already durable in the gateway's local events
//! log (acknowledged after fsync); this task routes each one and sends `$upstream` messages to the
//! hub on the child's behalf, in log order, and records how far it got. While the hub is away the
//! log keeps the backlog; after a restart forwarding resumes from the recorded offset, so delivery
//! is at least once.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use hub::events::EventRecord;
use iot_auth::topic::{PropertyBag, SystemProperty};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::Gateway;
use crate::upstream::Upstream;

/// System properties a device sets that travel upstream in the property bag.
const CARRIED: [SystemProperty; 7] = [
    SystemProperty::MessageId,
    SystemProperty::CorrelationId,
    SystemProperty::UserId,
    SystemProperty::ContentType,
    SystemProperty::ContentEncoding,
    SystemProperty::CreationTimeUtc,
    SystemProperty::MessageSchema,
];

fn offset_file(g: &Gateway) -> PathBuf {
    g.config.data_dir.join("forwarded-offset")
}

fn load_offset(g: &Gateway) -> u64 {
    std::fs::read_to_string(offset_file(g))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn save_offset(g: &Gateway, offset: u64) {
    let path = offset_file(g);
    let tmp = path.with_extension("tmp");
    let written =
        std::fs::write(&tmp, offset.to_string()).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        warn!(error = %e, "Could not record the forwarding offset");
    }
}

/// The routing view of a stored message.
fn routed_upstream(g: &Gateway, ev: &EventRecord, body: &[u8]) -> bool {
    let mut system: BTreeMap<String, String> = ev.system_properties.clone();
    system.insert("connectionDeviceId".into(), ev.device_id.clone());
    if let Some(m) = &ev.module_id {
        system.insert("connectionModuleId".into(), m.clone());
    }
    let output = ev.system_properties.get("outputName").map(String::as_str);
    let source = match &ev.module_id {
        Some(m) => routes::Source::Module { module: m, output },
        None => routes::Source::Device,
    };
    let msg = routes::Message {
        source,
        system: &system,
        app: &ev.properties,
        body,
    };
    routes::select(&g.routes, &msg)
        .iter()
        .any(|r| r.sink == routes::Sink::Upstream)
}

fn upstream_topic(ev: &EventRecord) -> String {
    let mut bag = PropertyBag::new();
    for p in CARRIED {
        if let Some(v) = ev.system_properties.get(p.name()) {
            bag.push_system(p, v.clone());
        }
    }
    for (k, v) in &ev.properties {
        bag.push(k.clone(), v.clone());
    }
    iot_auth::topic::telemetry_topic(&ev.device_id, None, &bag)
}

/// Forwards until `shutdown`; never skips a message: on a failure it waits and retries the same
/// one.
pub async fn run(g: std::sync::Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let mut offset = load_offset(&g).max(g.local.events.start_offset());
    let mut head = g.local.events.subscribe();
    let mut conns: HashMap<String, Upstream> = HashMap::new();
    info!(offset, "Forwarding to the hub");
    loop {
        let records = match g.local.events.read(offset, 256, 4 << 20) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "Could not read the store");
                Vec::new()
            }
        };
        if records.is_empty() {
            tokio::select! {
                _ = head.changed() => continue,
                _ = shutdown.changed() => return,
            }
        }
        // Consecutive messages of one device go up together (all in flight at once).
        let mut batch: Vec<(String, Vec<u8>)> = Vec::new();
        let mut batch_device = String::new();
        let mut batch_end = offset;
        for rec in records {
            let next = rec.offset + 1;
            let Ok(ev) = serde_json::from_slice::<EventRecord>(&rec.payload) else {
                warn!(offset = rec.offset, "Skipping an unreadable stored record");
                batch_end = next;
                continue;
            };
            let body = ev.body_bytes();
            if ev.module_id.is_some() || !routed_upstream(&g, &ev, &body) {
                batch_end = next;
                continue;
            }
            if !batch.is_empty() && (batch_device != ev.device_id || batch.len() >= 64) {
                if !deliver(
                    &g,
                    &mut conns,
                    &batch_device,
                    std::mem::take(&mut batch),
                    &mut shutdown,
                )
                .await
                {
                    save_offset(&g, offset);
                    return;
                }
                offset = batch_end;
            }
            batch_device.clone_from(&ev.device_id);
            batch.push((upstream_topic(&ev), body));
            batch_end = next;
        }
        if !batch.is_empty() && !deliver(&g, &mut conns, &batch_device, batch, &mut shutdown).await
        {
            save_offset(&g, offset);
            return;
        }
        offset = batch_end;
        save_offset(&g, offset);
    }
}

/// Sends one device's batch until the hub has it all; `false` when shut down first.
async fn deliver(
    g: &Gateway,
    conns: &mut HashMap<String, Upstream>,
    device: &str,
    batch: Vec<(String, Vec<u8>)>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let n = batch.len() as u64;
    loop {
        match send(g, conns, device, batch.clone()).await {
            Ok(()) => {
                g.forwarded
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                return true;
            }
            Err(e) => {
                conns.remove(device);
                warn!(error = %e, device, held = n, "Hub unreachable; holding messages");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return false,
                }
            }
        }
    }
}

async fn send(
    g: &Gateway,
    conns: &mut HashMap<String, Upstream>,
    device: &str,
    batch: Vec<(String, Vec<u8>)>,
) -> Result<(), crate::upstream::UpstreamError> {
    if !conns.contains_key(device) {
        let up = Upstream::connect(&g.link, device, &g.edge_hub_token()).await?;
        conns.insert(device.to_owned(), up);
    }
    match conns.get_mut(device) {
        Some(up) => up.publish_all(batch).await,
        None => Ok(()),
    }
}
