//! Syntax of topic names (PUBLISH) and topic filters (SUBSCRIBE), MQTT 3.1.1 section 4.7.

/// Whether `topic` may be the topic of a PUBLISH or a will: at least one character, no
/// wildcard (`+`, `#`) and no U+0000.
///
/// The decoder and the encoder both enforce this.
#[must_use]
pub fn is_valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// Whether `filter` is a well-formed topic filter: at least one character, no U+0000, `+` only
/// as a whole level, `#` only as the whole last level.
///
/// The codec itself only requires filters to be non-empty, so that a server can refuse a bad
/// filter with a SUBACK failure code instead of closing the connection; call this to decide.
#[must_use]
pub fn is_valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        let ok = match level {
            "+" => true,
            "#" => is_last,
            _ => !level.contains(['+', '#']),
        };
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(is_valid_topic_name("devices/dev1/messages/events/"));
        assert!(is_valid_topic_name("/"));
        assert!(is_valid_topic_name("$iothub/twin/GET/?$rid=1"));
        assert!(!is_valid_topic_name(""));
        assert!(!is_valid_topic_name("a/+/b"));
        assert!(!is_valid_topic_name("a/#"));
        assert!(!is_valid_topic_name("a\0b"));
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#",
            "+",
            "a/+/b",
            "a/#",
            "+/+",
            "/",
            "devices/dev1/messages/devicebound/#",
            "$iothub/twin/res/#",
        ] {
            assert!(is_valid_topic_filter(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+", "a/b+/c", "#/a", "++", "a\0"] {
            assert!(!is_valid_topic_filter(bad), "{bad}");
        }
    }
}
