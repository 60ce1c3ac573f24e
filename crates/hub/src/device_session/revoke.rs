//! What ends a live session from outside it: the reasons (delivered as
//! [`super::notify::Notification::Close`]) and which sessions a registry or CA change ends (see
//! [`Revoked::ends`]). Protocol-neutral: every head's sessions end the same way.
//!
//! A session ends when what its authentication rested on ([`Credential`]) changes: its own keys,
//! thumbprints or authentication type; its device's keys (a module that connected with a
//! device-level token); the gateway it connected through (`auth-chain`); the verified CA its
//! certificate chain ended in. Sessions that rested on something else stay.

use super::auth::{Credential, Identity};

/// Why the hub ends a session; the connection logs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EndReason {
    Replaced = 1,
    Disabled,
    Deleted,
    CredentialsChanged,
    GatewayChanged,
    ScopeChanged,
    CaWithdrawn,
    Shutdown,
    Storage,
    /// Its SAS token expired and no new one was put (AMQP's `$cbs`).
    Expired,
}

impl EndReason {
    const ALL: [Self; 10] = [
        Self::Replaced,
        Self::Disabled,
        Self::Deleted,
        Self::CredentialsChanged,
        Self::GatewayChanged,
        Self::ScopeChanged,
        Self::CaWithdrawn,
        Self::Shutdown,
        Self::Storage,
        Self::Expired,
    ];

    /// The reason whose code (`why as u8`) is `code`.
    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u8 == code)
    }

    /// The `ferrohub_auth_failures_total` reason for the ends a credential change causes (the
    /// others are not authentication failures, or are counted where they are refused).
    pub fn metric(self) -> Option<&'static str> {
        match self {
            Self::CredentialsChanged => Some("credentials_changed"),
            Self::GatewayChanged => Some("gateway_changed"),
            Self::ScopeChanged => Some("scope_changed"),
            Self::CaWithdrawn => Some("ca_withdrawn"),
            _ => None,
        }
    }

    /// What the operator reads in the log line, with the fix where there is one.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Replaced => "replaced by a newer connection with the same client id",
            Self::Disabled => "the device is disabled (enable it to let it connect again)",
            Self::Deleted => "the identity was deleted",
            Self::CredentialsChanged => {
                "its SAS keys, X.509 thumbprints or authentication type changed (the device must reconnect with the new credentials)"
            }
            Self::GatewayChanged => {
                "the gateway it connected through changed its keys, or was disabled or deleted"
            }
            Self::ScopeChanged => {
                "its deviceScope or parentScopes changed, so the gateway chain it connected through no longer holds"
            }
            Self::CaWithdrawn => {
                "the CA certificate its chain ended in was deleted or is no longer verified (upload and verify it again to let it connect)"
            }
            Self::Shutdown => "the hub is stopping",
            Self::Storage => "a message could not be made durable",
            Self::Expired => {
                "its SAS token expired (the client must put a new token before the old one expires, or reconnect)"
            }
        }
    }
}

/// A registry or CA change that ends the sessions resting on what changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked<'a> {
    /// A device's (`module_id: None`) or module's SAS keys, thumbprints or authentication type.
    Credentials {
        device_id: &'a str,
        module_id: Option<&'a str>,
    },
    /// A device disabled or deleted: its sessions, its modules', and those it carried as gateway.
    Device { device_id: &'a str, why: EndReason },
    /// A module deleted: its session, and those it carried as a gateway's `$edgeHub`.
    Module {
        device_id: &'a str,
        module_id: &'a str,
    },
    /// A device's `deviceScope` or `parentScopes`: its own and its modules' sessions opened
    /// through a gateway.
    Scope { device_id: &'a str },
    /// The verified CA whose anchor key ([`super::auth::anchor_key`]) is this is gone.
    Ca { anchor: u64 },
}

/// Whether `client_id` (`device` or `device/module`) is `device_id` or one of its modules.
fn of_device(client_id: &str, device_id: &str) -> bool {
    client_id
        .strip_prefix(device_id)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether `client_id` is exactly `device_id`/`module_id`.
fn is(client_id: &str, device_id: &str, module_id: Option<&str>) -> bool {
    match module_id {
        None => client_id == device_id,
        Some(m) => {
            client_id
                .strip_prefix(device_id)
                .and_then(|rest| rest.strip_prefix('/'))
                == Some(m)
        }
    }
}

impl Revoked<'_> {
    /// Why the sessions this ends are closed.
    pub fn reason(&self) -> EndReason {
        match self {
            Self::Credentials { .. } => EndReason::CredentialsChanged,
            Self::Device { why, .. } => *why,
            Self::Module { .. } => EndReason::Deleted,
            Self::Scope { .. } => EndReason::ScopeChanged,
            Self::Ca { .. } => EndReason::CaWithdrawn,
        }
    }

    /// Whether this ends the session of `client_id` authenticated as `identity`; `Some` carries
    /// the reason (a gateway's change is named as such).
    pub fn ends(&self, client_id: &str, identity: &Identity) -> Option<EndReason> {
        let via = match &identity.credential {
            Credential::Gateway(holder) => Some(&**holder),
            _ => None,
        };
        let gateway = Some(EndReason::GatewayChanged);
        match *self {
            Self::Credentials {
                device_id,
                module_id,
            } => {
                let own = matches!(identity.credential, Credential::Own | Credential::Ca(_));
                if own && is(client_id, device_id, module_id) {
                    return Some(self.reason());
                }
                if module_id.is_none()
                    && identity.credential == Credential::DeviceKey
                    && of_device(client_id, device_id)
                {
                    return Some(self.reason());
                }
                via.filter(|h| is(h, device_id, module_id)).and(gateway)
            }
            Self::Device { device_id, .. } => {
                if of_device(client_id, device_id) {
                    return Some(self.reason());
                }
                via.filter(|h| of_device(h, device_id)).and(gateway)
            }
            Self::Module {
                device_id,
                module_id,
            } => {
                if is(client_id, device_id, Some(module_id)) {
                    return Some(self.reason());
                }
                via.filter(|h| is(h, device_id, Some(module_id)))
                    .and(gateway)
            }
            Self::Scope { device_id } => {
                (via.is_some() && of_device(client_id, device_id)).then(|| self.reason())
            }
            Self::Ca { anchor } => {
                (identity.credential == Credential::Ca(anchor)).then(|| self.reason())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hub_wire::model::AuthType;

    fn id(client_id: &str, credential: Credential) -> Identity {
        let (device_id, module_id) = match client_id.split_once('/') {
            Some((d, m)) => (d.to_owned(), Some(m.to_owned())),
            None => (client_id.to_owned(), None),
        };
        Identity {
            device_id,
            module_id,
            auth_type: AuthType::Sas,
            generation_id: String::new(),
            token_expiry: None,
            credential,
        }
    }

    fn ended(r: Revoked<'_>, client_id: &str, credential: Credential) -> bool {
        r.ends(client_id, &id(client_id, credential)).is_some()
    }

    #[test]
    fn device_keys_end_the_device_and_modules_on_its_key_only() {
        let r = Revoked::Credentials {
            device_id: "d",
            module_id: None,
        };
        assert!(ended(r, "d", Credential::Own));
        assert!(ended(r, "d/m", Credential::DeviceKey));
        assert!(!ended(r, "d/m", Credential::Own), "the module's own key");
        assert!(!ended(r, "d", Credential::Policy));
        assert!(
            !ended(r, "dx", Credential::Own),
            "a device whose id extends d"
        );
        assert!(!ended(r, "dx/m", Credential::DeviceKey));
        assert!(ended(r, "child", Credential::Gateway("d".into())));
        assert!(!ended(r, "child", Credential::Gateway("d/$edgeHub".into())));
    }

    #[test]
    fn module_keys_end_that_module_and_what_it_carries() {
        let r = Revoked::Credentials {
            device_id: "e",
            module_id: Some("$edgeHub"),
        };
        assert!(ended(r, "e/$edgeHub", Credential::Own));
        assert!(!ended(r, "e", Credential::Own));
        assert!(!ended(r, "e/$edgeHub", Credential::DeviceKey));
        assert!(ended(r, "child", Credential::Gateway("e/$edgeHub".into())));
        assert!(!ended(r, "child", Credential::Gateway("f/$edgeHub".into())));
    }

    #[test]
    fn a_ca_ends_only_its_own_chains() {
        let r = Revoked::Ca { anchor: 7 };
        assert!(ended(r, "d", Credential::Ca(7)));
        assert!(!ended(r, "d", Credential::Ca(8)));
        assert!(!ended(r, "d", Credential::Own));
    }

    #[test]
    fn disabling_a_gateway_ends_what_it_carries_and_scope_ends_only_chains() {
        let r = Revoked::Device {
            device_id: "e",
            why: EndReason::Disabled,
        };
        assert!(ended(r, "e/m", Credential::Own));
        assert!(ended(r, "c", Credential::Gateway("e/$edgeHub".into())));
        assert!(!ended(r, "c", Credential::Own));
        let s = Revoked::Scope { device_id: "c" };
        assert!(ended(s, "c", Credential::Gateway("e/$edgeHub".into())));
        assert!(!ended(s, "c", Credential::Own));
    }
}
