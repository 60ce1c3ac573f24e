//! Durable-log recovery over arbitrary segment bytes: opening never panics, every record it
//! serves passes its CRC, offsets are contiguous, and appends continue after recovery.
#![no_main]

use durable_log::{Log, LogConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    // Split the input into up to two segment files (sealed + active) at its first byte.
    let (first, rest) = data
        .split_first()
        .map_or((0, data), |(b, r)| (*b as usize, r));
    let cut = first.min(rest.len());
    let (sealed, active) = rest.split_at(cut);
    let seg = |base: u64| dir.path().join(format!("{base:020}.log"));
    if !sealed.is_empty() {
        std::fs::write(seg(0), sealed).expect("write");
        std::fs::write(seg(1), active).expect("write");
    } else {
        std::fs::write(seg(0), active).expect("write");
    }
    let config = LogConfig {
        dir: dir.path().to_path_buf(),
        fsync: false,
        segment_bytes: 4096,
        ..LogConfig::default()
    };
    let Ok((log, report)) = Log::open(config) else {
        return;
    };
    let records = log
        .read(0, usize::MAX, usize::MAX)
        .expect("recovered records read back");
    for pair in records.windows(2) {
        assert_eq!(pair[0].offset + 1, pair[1].offset);
    }
    assert_eq!(
        records.last().map_or(log.next_offset(), |r| r.offset + 1),
        report.next_offset
    );
    let next = log
        .append_blocking(1, b"after".to_vec())
        .expect("append after recovery");
    assert_eq!(next, report.next_offset);
    let _ = log.close();
});
