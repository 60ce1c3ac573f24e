//! The servers' clock: injected so expiry, token validity and timestamps are testable, and the
//! time formats the service APIs show.

use std::sync::Arc;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place a server reads the wall clock
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that shows a set time (tests).
pub struct FixedClock(pub std::sync::Mutex<OffsetDateTime>);

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0.lock().map_or(OffsetDateTime::UNIX_EPOCH, |t| *t)
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// The time shown for "never" (a device that never connected): the service SDKs parse it, where
/// they would not parse an empty string.
pub const NEVER: &str = "0001-01-01T00:00:00Z";

/// Unix milliseconds on `clock` (0 before 1970).
pub fn now_ms(clock: &dyn Clock) -> i64 {
    i64::try_from(clock.now().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(0)
        .max(0)
}

/// RFC 3339 with a `Z` suffix, as the service API shows times.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| NEVER.to_owned())
}

/// Now, formatted, for log-facing text such as error tracking stamps.
pub fn now_rfc3339() -> String {
    rfc3339(SystemClock.now())
}

/// A monotonic instant for latency measurement (never for validity decisions).
#[allow(clippy::disallowed_methods)]
pub fn instant() -> std::time::Instant {
    std::time::Instant::now()
}

/// RFC 3339 with milliseconds, as `iothub-enqueuedtime` is shown.
pub fn rfc3339_millis(t: OffsetDateTime) -> String {
    let ms = t.millisecond();
    let base = t.replace_nanosecond(0).unwrap_or(t);
    let s = base.format(&Rfc3339).unwrap_or_else(|_| NEVER.to_owned());
    match s.strip_suffix('Z') {
        Some(head) => format!("{head}.{ms:03}Z"),
        None => s,
    }
}
