#![allow(clippy::unwrap_used)]
//! Concurrent appenders share fdatasyncs.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{config, segments};
use durable_log::{Log, LogConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments, so that batches also cross segment boundaries.
    let (log, _) = Log::open(config(dir.path(), 1000)).unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(200));
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let (log, start) = (log.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let offset = log.append(i, i.to_le_bytes().to_vec()).await.unwrap();
                (offset, i)
            })
        })
        .collect();
    let mut offsets = BTreeSet::new();
    let mut by_offset = Vec::new();
    for t in tasks {
        let (offset, i) = t.await.unwrap();
        assert!(offsets.insert(offset), "offset {offset} given twice");
        by_offset.push((offset, i));
    }
    assert_eq!(
        offsets.into_iter().collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>()
    );

    let stats = log.stats();
    assert_eq!(stats.appends, 200);
    assert!(
        stats.commits < stats.appends,
        "no group commit happened: {stats:?}"
    );
    assert!(stats.commits >= 1);

    // Every appender's payload is at the offset it was told.
    let records = log.read(0, 1000, usize::MAX).unwrap();
    for (offset, i) in by_offset {
        assert_eq!(records[offset as usize].payload, i.to_le_bytes());
        assert_eq!(records[offset as usize].timestamp_ms, i);
    }
    assert_eq!(log.next_offset(), 200);
    assert!(segments(dir.path()).len() >= 6);
    log.close().unwrap();
    let (log, report) = Log::open(config(dir.path(), 1000)).unwrap();
    assert_eq!((report.next_offset, report.truncated_bytes), (200, 0));
    assert_eq!(log.read(0, 1000, usize::MAX).unwrap(), records);
}

#[test]
fn blocking_appends_from_threads_share_commits_and_batches_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_batch: 4,
        ..config(dir.path(), 512)
    };
    let (log, _) = Log::open(cfg.clone()).unwrap();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let log = log.clone();
            s.spawn(move || {
                for i in 0..25u64 {
                    log.append_blocking(t * 100 + i, vec![t as u8; 40]).unwrap();
                }
            });
        }
    });
    let stats = log.stats();
    assert_eq!(stats.appends, 200);
    // max_batch 4: at least 50 commits, and a batch that crosses a segment boundary still works.
    assert!(stats.commits >= 50, "{stats:?}");
    assert!(segments(dir.path()).len() > 5);
    let records = log.read(0, 1000, usize::MAX).unwrap();
    assert_eq!(records.len(), 200);
    for t in 0..8u8 {
        let mine: Vec<u64> = records
            .iter()
            .filter(|r| r.payload[0] == t)
            .map(|r| r.timestamp_ms - u64::from(t) * 100)
            .collect();
        assert_eq!(
            mine,
            (0..25).collect::<Vec<_>>(),
            "thread {t}'s records are in its order"
        );
    }
    log.close().unwrap();
    let (_, report) = Log::open(cfg).unwrap();
    assert_eq!((report.next_offset, report.truncated_bytes), (200, 0));
}
