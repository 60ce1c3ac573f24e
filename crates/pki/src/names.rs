//! Identifier rules: IoT Hub device and module ids, DNS names.

use crate::error::PkiError;

/// Characters IoT Hub allows in device and module ids besides ASCII letters and digits.
const ID_PUNCTUATION: &str = "-.+%_#*?!(),:=@$'";

/// Checks an IoT Hub device id (also a DPS registration id when used as a CN):
/// 1–128 ASCII characters, letters, digits and `-.+%_#*?!(),:=@$'`.
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
