//! How deep the service APIs' JSON documents may nest, for the hub and the provisioning service
//! alike: a twin's properties (IoT Hub's limit) and the request bodies that carry them (a full
//! twin, an enrollment's `initialTwin`), checked before anything parses a body.

/// Deepest nesting IoT Hub allows in tags and properties.
pub const TWIN_MAX_DEPTH: usize = 10;

/// The deepest nesting of objects and arrays a request body may have (the hub's and the
/// provisioning service's): room for a twin's [`TWIN_MAX_DEPTH`] levels of properties with their
/// `$metadata` inside the deepest envelope the APIs take (a full twin, an enrollment's
/// `initialTwin`), and no more.
pub const MAX_BODY_DEPTH: usize = 16;
const _: () = assert!(MAX_BODY_DEPTH >= TWIN_MAX_DEPTH + 5);

/// Refuses a JSON text whose objects and arrays nest deeper than [`MAX_BODY_DEPTH`], anywhere
/// (fields the handler would ignore too), before anything parses it. One pass over the bytes
/// with a counter: no recursion, whatever the input's depth. Malformed JSON passes; the parser
/// refuses it next.
pub fn check_json_depth(body: &[u8]) -> Result<(), String> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_BODY_DEPTH {
                    return Err(format!(
                        "the JSON body nests objects and arrays more than {MAX_BODY_DEPTH} levels \
                         deep; the limit is {MAX_BODY_DEPTH} (twin properties: {TWIN_MAX_DEPTH})"
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_is_counted_outside_strings_only() {
        assert!(check_json_depth(nested(MAX_BODY_DEPTH).as_bytes()).is_ok());
        assert!(check_json_depth(nested(MAX_BODY_DEPTH + 1).as_bytes()).is_err());
        let in_string = format!("{{\"a\": \"{}\\\"{}\"}}", "[".repeat(100), "{".repeat(100));
        assert!(
            check_json_depth(in_string.as_bytes()).is_ok(),
            "{in_string}"
        );
        // A sibling closes before the next opens: depth, not count.
        let wide = "[[]]".repeat(10_000);
        assert!(check_json_depth(wide.as_bytes()).is_ok());
        let deep = "[".repeat(1_000_000);
        assert!(check_json_depth(deep.as_bytes()).is_err());
    }
}
