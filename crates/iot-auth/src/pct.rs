//! Strict percent-decoding and the encode set shared by every module.
//!
//! The decoder never turns `+` into a space (the SDKs always send a literal plus as `%2B`, and
//! base64 signatures may carry a raw `+`), and it rejects malformed escapes instead of passing
//! them through, so that two different wire strings never decode to the same value by accident.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything except the RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`) is escaped.
///
/// This matches Python's `urllib.parse.quote(s, safe="")`, which is what the Python device SDK
/// uses for the `sr` of its SAS tokens and for property bags.
pub(crate) const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why a percent-encoded string could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// A `%` not followed by two hexadecimal digits.
    BadEscape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
}

/// Percent-encodes `s` with [`COMPONENT`].
pub(crate) fn encode(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// Strictly percent-decodes `s` into bytes. `+` stays a `+`.
pub(crate) fn decode_bytes(s: &str) -> Result<Vec<u8>, DecodeError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| hex_value(*c));
            let lo = bytes.get(i + 2).and_then(|c| hex_value(*c));
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push((hi << 4) | lo),
                _ => return Err(DecodeError::BadEscape),
            }
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

/// Strictly percent-decodes `s` into a UTF-8 string. `+` stays a `+`.
pub(crate) fn decode(s: &str) -> Result<String, DecodeError> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    String::from_utf8(decode_bytes(s)?).map_err(|_| DecodeError::NotUtf8)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_keeps_plus() {
        assert_eq!(decode("a%2Bb+c%20d").as_deref(), Ok("a+b+c d"));
        assert_eq!(decode("%24.ct").as_deref(), Ok("$.ct"));
        assert_eq!(decode("%e2%82%ac").as_deref(), Ok("\u{20ac}"));
    }

    #[test]
    fn rejects_malformed_escapes() {
        assert_eq!(decode("%zz"), Err(DecodeError::BadEscape));
        assert_eq!(decode("abc%"), Err(DecodeError::BadEscape));
        assert_eq!(decode("abc%4"), Err(DecodeError::BadEscape));
        assert_eq!(decode("%4g"), Err(DecodeError::BadEscape));
        assert_eq!(decode("%ff"), Err(DecodeError::NotUtf8));
    }

    #[test]
    fn encodes_everything_but_unreserved() {
        assert_eq!(encode("a/b c$+=~-._"), "a%2Fb%20c%24%2B%3D~-._");
        assert_eq!(encode("h\u{e9}"), "h%C3%A9");
    }
}
