//! Identifier rules: IoT Hub device and module ids, DPS registration ids, DNS names. The one
//! implementation the hub registry, the provisioning service and the CLI all check ids with.

use crate::error::PkiError;

/// Characters IoT Hub allows in device and module ids besides ASCII letters and digits.
const ID_PUNCTUATION: &str = "-.+%_#*?!(),:=@$'";

/// Checks an IoT Hub device id (also a DPS registration id when used as a CN):
/// 1–128 ASCII characters, letters, digits and `-.+%_#*?!(),:=@$'`, and not `.` or `..` (they
/// would name the parent of a URL path segment).
pub fn check_device_id(id: &str) -> Result<(), PkiError> {
    check_id("device id", id)
}

/// Checks a module id (same alphabet as device ids).
pub fn check_module_id(id: &str) -> Result<(), PkiError> {
    check_id("module id", id)
}

/// Checks an identity written as `DEVICE` or `DEVICE/MODULE`, the CN form IoT Hub uses for module
/// certificates. Returns the device and optional module parts.
pub fn split_identity(id: &str) -> Result<(&str, Option<&str>), PkiError> {
    match id.split_once('/') {
        None => check_device_id(id).map(|()| (id, None)),
        Some((device, module)) => {
            check_device_id(device)?;
            check_module_id(module)?;
            Ok((device, Some(module)))
        }
    }
}

fn check_id(what: &'static str, id: &str) -> Result<(), PkiError> {
    let bad = |reason| PkiError::InvalidName {
        what,
        value: id.to_owned(),
        reason,
    };
    if id.is_empty() || id.len() > 128 {
        return Err(bad("must be 1 to 128 characters"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ID_PUNCTUATION.contains(c))
    {
        return Err(bad(
            "may contain only ASCII letters, digits and -.+%_#*?!(),:=@$'",
        ));
    }
    if id == "." || id == ".." {
        return Err(bad("must not be \".\" or \"..\""));
    }
    Ok(())
}

/// Characters a device or module id may hold that MQTT topic names cannot: an identity with one
/// is accepted (IoT Hub accepts it too) but cannot send telemetry or use its twin over MQTT.
pub const MQTT_WILDCARDS: [char; 2] = ['#', '+'];

/// Why an accepted device or module id cannot be used over MQTT, if it cannot.
pub fn mqtt_unusable(id: &str) -> Option<String> {
    id.contains(MQTT_WILDCARDS).then(|| {
        format!(
            "id '{id}' contains '#' or '+', the MQTT topic wildcards: a device or module with \
             this id cannot publish telemetry or use its twin over MQTT (ferrohub's device \
             protocol); choose an id without them to connect over MQTT"
        )
    })
}

/// Checks a DPS registration id (also an enrollment group id): 1–128 ASCII letters, digits and
/// `-._:`, starting and ending with a letter or digit. Stricter than device ids, as Azure DPS is;
/// case-insensitive there.
pub fn check_registration_id(id: &str) -> Result<(), PkiError> {
    let bad = |reason| PkiError::InvalidName {
        what: "registration id",
        value: id.to_owned(),
        reason,
    };
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if id.is_empty() || id.len() > 128 {
        return Err(bad("must be 1 to 128 characters"));
    }
    let chars_ok = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
    if !chars_ok || !edge_ok(id.chars().next()) || !edge_ok(id.chars().last()) {
        return Err(bad(
            "may contain only ASCII letters, digits and -._: and must start and end with a letter or digit",
        ));
    }
    Ok(())
}

/// Checks a DNS name for a subjectAltName: labels of letters, digits and hyphens (a leading `*.`
/// wildcard is allowed), at most 253 characters.
pub fn check_dns_name(name: &str) -> Result<(), PkiError> {
    let bad = |reason| PkiError::InvalidName {
        what: "DNS name",
        value: name.to_owned(),
        reason,
    };
    let rest = name.strip_prefix("*.").unwrap_or(name);
    if rest.is_empty() || name.len() > 253 {
        return Err(bad("must be 1 to 253 characters"));
    }
    for label in rest.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(bad(
                "each dot-separated label must be 1-63 letters, digits or hyphens",
            ));
        }
    }
    Ok(())
}

/// Whether `name` (`DNS:x`, `IP:y` as [`crate::CertInfo`] lists them) covers `host`.
pub fn san_covers(name: &str, host: &str) -> bool {
    if let Some(ip) = name.strip_prefix("IP:") {
        return matches!((ip.parse::<std::net::IpAddr>(), host.parse::<std::net::IpAddr>()), (Ok(a), Ok(b)) if a == b);
    }
    let Some(dns) = name.strip_prefix("DNS:") else {
        return false;
    };
    match dns.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(parent)),
        None => dns.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids() {
        for ok in ["dev1", "a", "my-device.01", "x:y=z@w$", &"d".repeat(128)] {
            check_device_id(ok).unwrap();
        }
        for bad in ["", "has space", "slash/inside", "é", &"d".repeat(129)] {
            assert!(check_device_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exactly_the_iot_hub_alphabet_and_not_dot_segments() {
        for c in ('\0'..='\u{ff}').chain(['€', '\u{1F600}']) {
            let allowed = c.is_ascii_alphanumeric() || "-.+%_#*?!(),:=@$'".contains(c);
            let id = format!("a{c}b");
            assert_eq!(check_device_id(&id).is_ok(), allowed, "{c:?}");
            assert_eq!(check_module_id(&id).is_ok(), allowed, "{c:?}");
        }
        for bad in [".", ".."] {
            let e = check_device_id(bad).unwrap_err().to_string();
            assert!(e.contains("must not be"), "{e}");
            assert!(check_module_id(bad).is_err());
        }
        check_device_id("...").unwrap();
        let e = check_device_id("a/b").unwrap_err().to_string();
        assert!(
            e.contains("-.+%_#*?!(),:=@$'"),
            "the message lists the alphabet: {e}"
        );
    }

    #[test]
    fn mqtt_wildcards_are_named() {
        assert!(mqtt_unusable("dev-1").is_none());
        for id in ["a#b", "a+b", "#"] {
            check_device_id(id).unwrap();
            assert!(mqtt_unusable(id).unwrap().contains("MQTT"), "{id}");
        }
    }

    #[test]
    fn registration_ids_are_stricter() {
        check_registration_id("sn-007:a.b_c").unwrap();
        for bad in [
            "",
            ".",
            "..",
            "-a",
            "a-",
            "a b",
            "a/b",
            "a#b",
            "a+b",
            "é",
            &"x".repeat(129),
        ] {
            assert!(check_registration_id(bad).is_err(), "{bad}");
        }
        check_registration_id(&"x".repeat(128)).unwrap();
    }

    #[test]
    fn module_identities_split() {
        assert_eq!(split_identity("dev/mod").unwrap(), ("dev", Some("mod")));
        assert_eq!(split_identity("dev").unwrap(), ("dev", None));
        assert!(split_identity("dev/").is_err());
        assert!(split_identity("dev/a/b").is_err());
    }

    #[test]
    fn dns_names() {
        for ok in ["localhost", "gw.example.com", "*.example.com", "a-b"] {
            check_dns_name(ok).unwrap();
        }
        for bad in ["", "-a", "a..b", "a b", "*.", "ä.com"] {
            assert!(check_dns_name(bad).is_err(), "{bad}");
        }
    }
}
