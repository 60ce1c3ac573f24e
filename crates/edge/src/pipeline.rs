//! The upstream lane, pipelined: batches of different senders are in flight at the same time (so
//! the hub can make many of them durable with one fsync), while each sender's batches go one
//! after the other (so each sender's messages arrive in order, also across reconnects).
//!
//! The recorded position is the oldest message not yet acknowledged by the hub: after a restart
//! forwarding resumes there (messages after it that were already delivered are sent again: at
//! least once).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use durable_log::Record;
use hub::events::EventRecord;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::Gateway;
use crate::forward::{self, Lane};

/// Messages per batch (all in flight at once on the sender's connection).
const BATCH: usize = 64;
/// Messages read but not yet acknowledged, across all senders.
const WINDOW: usize = 4096;

/// One sender's batch: (store offset, topic, body).
type Batch = Vec<(u64, String, Vec<u8>)>;

#[derive(Default)]
struct Lanes {
    /// Offsets of routed messages read and not yet acknowledged.
    pending: BTreeSet<u64>,
    /// Batches waiting for their sender's previous batch.
    waiting: HashMap<String, VecDeque<Batch>>,
    /// Senders with a batch in flight.
    busy: HashSet<String>,
    /// Where reading continues.
    read_pos: u64,
}

impl Lanes {
    /// Everything before this is delivered (or not routed upstream).
    fn committed(&self) -> u64 {
        self.pending.first().copied().unwrap_or(self.read_pos)
    }

    /// Adds a page of records: routed ones join their sender's queue in batches.
    fn add(&mut self, g: &Gateway, records: Vec<Record>) {
        for rec in records {
            self.read_pos = rec.offset + 1;
            let Ok(ev) = serde_json::from_slice::<EventRecord>(&rec.payload) else {
                warn!(offset = rec.offset, "Skipping an unreadable stored record");
                continue;
            };
            let Some(topic) = forward::upstream_message(g, &rec, &ev) else {
                continue;
            };
            let client = forward::client_of(&ev);
            let queue = self.waiting.entry(client).or_default();
            match queue.back_mut() {
                Some(b) if b.len() < BATCH => b.push((rec.offset, topic, ev.body_bytes())),
                _ => queue.push_back(vec![(rec.offset, topic, ev.body_bytes())]),
            }
            self.pending.insert(rec.offset);
        }
    }

    /// Starts the next batch of every sender that has none in flight.
    fn dispatch(
        &mut self,
        g: &Arc<Gateway>,
        tasks: &mut JoinSet<(String, Vec<u64>, bool)>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let ready: Vec<String> = self
            .waiting
            .keys()
            .filter(|c| !self.busy.contains(*c))
            .cloned()
            .collect();
        for client in ready {
            let Some(batch) = self.waiting.get_mut(&client).and_then(VecDeque::pop_front) else {
                continue;
            };
            if self.waiting.get(&client).is_some_and(VecDeque::is_empty) {
                self.waiting.remove(&client);
            }
            self.busy.insert(client.clone());
            let offsets: Vec<u64> = batch.iter().map(|(o, _, _)| *o).collect();
            let (g, mut shutdown) = (g.clone(), shutdown.clone());
            tasks.spawn(async move {
                let done = forward::deliver(&g, &client, batch, &mut shutdown).await;
                (client, offsets, done)
            });
        }
    }
}

/// Runs the upstream lane until `shutdown`.
pub async fn run(g: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let start = forward::load_offset(&g, Lane::Upstream).max(g.local.events.start_offset());
    let mut lanes = Lanes {
        read_pos: start,
        ..Lanes::default()
    };
    let mut head = g.local.events.subscribe();
    let mut tasks: JoinSet<(String, Vec<u64>, bool)> = JoinSet::new();
    let mut saver = forward::OffsetSaver::new(Lane::Upstream, start);
    info!(offset = start, "Forwarding upstream");
    loop {
        // Records the store dropped (TTL, drop_oldest) are not waited for.
        let first = g.local.events.start_offset();
        lanes.read_pos = lanes.read_pos.max(first);
        if lanes.pending.len() < WINDOW {
            match g.local.events.read(lanes.read_pos, 256, 4 << 20) {
                Ok(records) => lanes.add(&g, records),
                Err(e) => warn!(error = %e, "Could not read the store"),
            }
        }
        lanes.dispatch(&g, &mut tasks, &shutdown);
        let committed = lanes.committed();
        saver.offer(&g, committed, false).await;
        let caught_up = lanes.read_pos >= g.local.events.next_offset();
        tokio::select! {
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                let Ok((client, offsets, done)) = joined else { return };
                if !done {
                    return; // shut down while the hub was away
                }
                lanes.busy.remove(&client);
                for o in offsets {
                    lanes.pending.remove(&o);
                }
                // Dropped by the store while in flight: not pending any more either.
                let first = g.local.events.start_offset();
                lanes.pending = lanes.pending.split_off(&first);
            }
            _ = head.changed(), if caught_up => {}
            () = tokio::time::sleep_until(saver.due()), if saver.behind(committed) => {}
            () = std::future::ready(()), if !caught_up && lanes.pending.len() < WINDOW => {}
            _ = shutdown.changed() => {
                tasks.abort_all();
                saver.offer(&g, lanes.committed(), true).await;
                return;
            }
        }
    }
}
