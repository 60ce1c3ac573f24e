//! The commit delay: a group commit that already holds many records waits `commit_delay` for more
//! before its fsync; a lone append never waits.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

mod common;

use std::time::Duration;

use durable_log::Log;
use futures_util::FutureExt as _;

#[tokio::test]
async fn a_busy_commit_waits_for_more_and_a_lone_append_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), 1 << 20);
    config.commit_delay = Duration::from_millis(300);
    let (log, _) = Log::open(config).unwrap();

    // Light load: one append at a time is durable long before the delay would end.
    for i in 0..3 {
        let done = tokio::time::timeout(Duration::from_millis(200), log.submit(i, vec![1; 64]));
        done.await.expect("a lone append does not wait").unwrap();
    }

    // Heavy load: 64 appends at once. The writer takes the first alone or with a few, then a
    // batch of at least 16, which waits: 50 ms later most are still not durable.
    let pending: Vec<_> = (0..64).map(|i| log.submit(100 + i, vec![2; 64])).collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut waiting = Vec::new();
    for mut p in pending {
        match (&mut p).now_or_never() {
            Some(done) => drop(done.unwrap()),
            None => waiting.push(p),
        }
    }
    assert!(
        waiting.len() >= 16,
        "only {} of 64 were still waiting",
        waiting.len()
    );
    // Appends made during the delay join that commit: all become durable together.
    let late = log.submit(999, vec![3; 64]);
    let before = log.stats().commits;
    for p in waiting {
        p.await.unwrap();
    }
    late.await.unwrap();
    assert_eq!(
        log.stats().commits - before,
        1,
        "the late append shared the delayed commit"
    );
}
