#![allow(clippy::unwrap_used)]
//! Crash consistency: a writer process is killed with SIGKILL at random points while several
//! threads append with fsync on, many times over the same log. After every kill the log is
//! reopened and every record whose append was acknowledged (printed by the writer after
//! `append` returned) must be there, intact (its CRC is checked on read), at its acknowledged
//! offset, in each thread's order. Some rounds also get a torn tail written after the kill (a
//! half-written batch, as a power cut leaves it): recovery must cut it off, not serve it.
//!
//! The writer is this test binary itself, re-run with `--ignored --exact crash_child_writer`
//! and the log directory in an environment variable. Set `CRASH_SEED` to replay a run.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use durable_log::{Log, LogConfig};

const DIR_ENV: &str = "DURABLE_LOG_CRASH_DIR";
const ROUND_ENV: &str = "DURABLE_LOG_CRASH_ROUND";
/// Kill/restart rounds; `CRASH_ROUNDS` raises it for a longer run (`scripts/reliability`).
fn rounds() -> u64 {
    std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}
const WRITERS: u64 = 3;
/// Each writer thread stops after this many appends, so a child that is never killed ends.
const MAX_PER_WRITER: u64 = 400;

fn config(dir: &Path) -> LogConfig {
    LogConfig {
        dir: dir.to_path_buf(),
        // Small segments, so kills also land around segment rolls.
        segment_bytes: 4096,
        max_batch: 16,
        fsync: true,
        ..LogConfig::default()
    }
}

/// The payload writer `thread` appends as its `seq`-th record in `round`: self-describing, with
/// a length that varies.
fn payload(round: u64, thread: u64, seq: u64) -> Vec<u8> {
    let mut p = format!("{round}:{thread}:{seq}:").into_bytes();
    let fill = ((round * 31 + thread * 7 + seq * 13) % 120) as usize;
    p.extend((0..fill).map(|i| (i as u8) ^ (seq as u8)));
    p
}

fn parse_payload(p: &[u8]) -> (u64, u64, u64) {
    let text = String::from_utf8_lossy(p);
    let mut it = text.split(':').map(|s| s.parse::<u64>().unwrap());
    (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
}

/// The writer process: appends from [`WRITERS`] threads and prints `ACK offset thread seq`
/// once each append has returned (the record is durable).
#[test]
#[ignore = "run by crash_kill_nine_never_loses_an_acknowledged_record as a child process"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let (log, _) = Log::open(config(Path::new(&dir))).unwrap();
    println!("READY");
    std::thread::scope(|s| {
        for thread in 0..WRITERS {
            let log = &log;
            s.spawn(move || {
                for seq in 0..MAX_PER_WRITER {
                    let offset = log
                        .append_blocking(round * 1000 + seq, payload(round, thread, seq))
                        .unwrap();
                    // One write per line: a line is either whole or missing after the kill.
                    let line = format!("ACK {offset} {thread} {seq}\n");
                    std::io::stdout().lock().write_all(line.as_bytes()).unwrap();
                }
            });
        }
    });
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        })
}

fn spawn_writer(dir: &Path, round: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "crash_child_writer", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(DIR_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs one writer until `kill_after` acknowledgements (0: kill as soon as it is up, possibly
/// during recovery), SIGKILLs it, and returns every acknowledgement it printed.
fn run_round(dir: &Path, round: u64, kill_after: u64) -> Vec<(u64, u64, u64)> {
    let mut child = spawn_writer(dir, round);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut acks = Vec::new();
    let mut line = Vec::new();
    let mut killed = false;
    loop {
        if !killed && acks.len() as u64 >= kill_after {
            child.kill().unwrap(); // SIGKILL
            killed = true;
        }
        line.clear();
        if out.read_until(b'\n', &mut line).unwrap() == 0 {
            break;
        }
        // A line cut by the kill has no newline: it was not a complete acknowledgement.
        let Some(text) = line.strip_suffix(b"\n") else {
            continue;
        };
        let text = String::from_utf8_lossy(text);
        if let Some(rest) = text.strip_prefix("ACK ") {
            let v: Vec<u64> = rest.split(' ').map(|s| s.parse().unwrap()).collect();
            acks.push((v[0], v[1], v[2]));
        }
    }
    let mut rest = Vec::new();
    let _ = out.read_to_end(&mut rest);
    let status = child.wait().unwrap();
    assert!(
        killed,
        "round {round}: the writer exited by itself ({status}) after {} acks",
        acks.len()
    );
    acks
}

/// Appends a half-written record (a header promising more bytes than follow) to the last
/// segment, as a power cut in the middle of a batch leaves it. Returns the bytes added.
fn tear_tail(dir: &Path, rng: &mut Rng) -> u64 {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let Some(last) = segments.last() else {
        return 0;
    };
    let len = 40 + rng.below(200) as u32;
    let mut torn = Vec::new();
    torn.extend(len.to_le_bytes());
    torn.extend(0xDEAD_BEEFu32.to_le_bytes());
    torn.extend((0..rng.below(u64::from(len))).map(|i| i as u8));
    let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    f.write_all(&torn).unwrap();
    f.sync_all().unwrap();
    torn.len() as u64
}

#[test]
fn crash_kill_nine_never_loses_an_acknowledged_record() {
    let seed = seed();
    eprintln!("CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    // Every acknowledged record of every round: offset -> (round, thread, seq).
    let mut acked: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    let (mut kills_mid_append, mut torn_rounds, mut truncated_total) = (0, 0, 0);
    let rounds = rounds();
    for round in 0..rounds {
        let kill_after = match rng.below(6) {
            0 => 0,
            _ => 1 + rng.below(300),
        };
        for (offset, thread, seq) in run_round(dir.path(), round, kill_after) {
            let old = acked.insert(offset, (round, thread, seq));
            assert!(
                old.is_none(),
                "offset {offset} acknowledged twice (seed {seed})"
            );
        }
        kills_mid_append += u64::from(kill_after > 0);
        let torn = if rng.below(3) == 0 {
            torn_rounds += 1;
            tear_tail(dir.path(), &mut rng)
        } else {
            0
        };

        let (log, report) = Log::open(config(dir.path()))
            .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e} (seed {seed})"));
        assert!(
            report.truncated_bytes >= torn,
            "round {round}: a torn tail of {torn} bytes was served (seed {seed})"
        );
        truncated_total += report.truncated_bytes;
        // `read` verifies every record's CRC; offsets must be contiguous from 0.
        let records = log.read(0, usize::MAX, usize::MAX).unwrap();
        assert_eq!(records.len() as u64, report.next_offset, "round {round}");
        let mut last_seq: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "round {round}: offsets not contiguous");
            let (rr, thread, seq) = parse_payload(&r.payload);
            assert_eq!(
                r.payload,
                payload(rr, thread, seq),
                "offset {}: payload",
                r.offset
            );
            // Each writer thread's records are in its own order.
            if let Some(prev) = last_seq.insert((rr, thread), seq) {
                assert!(seq > prev, "offset {}: thread order broken", r.offset);
            }
        }
        for (&offset, &want) in &acked {
            let got = records
                .get(offset as usize)
                .map(|r| parse_payload(&r.payload));
            assert_eq!(
                got,
                Some(want),
                "round {round}: acknowledged offset {offset} lost or changed (seed {seed})"
            );
        }
        // Appends continue right after what survived.
        assert_eq!(
            log.append_blocking(1, payload(rounds + round, 0, 0))
                .unwrap(),
            report.next_offset
        );
        log.close().unwrap();
        acked.insert(report.next_offset, (rounds + round, 0, 0));
    }
    // One row of docs/reliability.md (collected by scripts/reliability).
    eprintln!(
        "RELIABILITY|durable-log writer killed (SIGKILL) mid-append|{WRITERS} threads appending \
         with fdatasync, {} acknowledged records over {rounds} restarts|SIGKILL at random points \
         ({kills_mid_append} mid-append, {} at start-up or recovery), {torn_rounds} torn tails written \
         after the kill|every acknowledged record present, CRC-intact, in order; \
         {truncated_total} torn bytes truncated, never served|0",
        acked.len(),
        rounds - kills_mid_append,
    );
    assert!(acked.len() as u64 > rounds);
}
