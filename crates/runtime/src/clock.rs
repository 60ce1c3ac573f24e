//! The wall clock of the commands (the `ferrohub` CLI, quickstart, bench): the one place they
//! read it, from the system clock in [`crate::time`]. Servers and libraries take a
//! [`Clock`](crate::time::Clock) or `now` as a parameter instead.

use time::OffsetDateTime;

use crate::time::{Clock as _, SystemClock};

pub use crate::time::instant;

/// The current time, truncated to whole seconds (X.509 times carry no fractions).
pub fn now() -> OffsetDateTime {
    let t = SystemClock.now();
    t.replace_nanosecond(0).unwrap_or(t)
}

/// Parses an RFC 3339 time (`2027-01-15T08:00:00Z`) or unix seconds (`1800000000`).
pub fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    if let Ok(secs) = s.parse::<i64>() {
        return OffsetDateTime::from_unix_timestamp(secs).map_err(|e| e.to_string());
    }
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|e| {
        format!("{s:?} is not an RFC 3339 time like 2027-01-15T08:00:00Z or unix seconds ({e})")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_both_forms() {
        assert_eq!(
            super::parse_time("1800000000").unwrap().unix_timestamp(),
            1_800_000_000
        );
        assert_eq!(
            super::parse_time("2027-01-15T08:00:00Z")
                .unwrap()
                .unix_timestamp(),
            1_800_000_000
        );
        assert!(super::parse_time("yesterday").is_err());
    }
}
