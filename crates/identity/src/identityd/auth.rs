//! Who may do what: the caller's uid mapped to a principal (aziot's `AuthId`) and the operation
//! matrix. root and the principal without `idtype` (the host daemon) may do everything; a module
//! principal only reads its own module identity; anyone may read the trust bundle.

use crate::config::daemons::Principal;

/// The caller, as identityd sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthId {
    LocalRoot,
    /// The one principal without `idtype`.
    Daemon,
    HostProcess(Principal),
    Unknown,
}

/// What a caller asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    GetDevice,
    GetModule(String),
    GetAllHubModules,
    CreateModule,
    UpdateModule,
    DeleteModule,
    ReprovisionDevice,
    GetTrustBundle,
}

/// Principals are checked before root, so a host process may run as root.
pub fn authenticate(uid: u32, principals: &[Principal]) -> AuthId {
    if let Some(p) = principals.iter().find(|p| p.uid == uid) {
        return if p.idtype.is_some() {
            AuthId::HostProcess(p.clone())
        } else {
            AuthId::Daemon
        };
    }
    if uid == 0 {
        AuthId::LocalRoot
    } else {
        AuthId::Unknown
    }
}

pub fn authorize(who: &AuthId, op: &Operation) -> bool {
    let has = |p: &Principal, t: &str| p.idtype.as_ref().is_some_and(|v| v.iter().any(|x| x == t));
    match (who, op) {
        (_, Operation::GetTrustBundle) => true,
        (AuthId::LocalRoot | AuthId::Daemon, _) => true,
        (AuthId::HostProcess(p), Operation::GetDevice) => has(p, "device"),
        (AuthId::HostProcess(p), Operation::GetModule(m)) => {
            *m == p.name && (has(p, "module") || has(p, "local"))
        }
        _ => false,
    }
}

/// root registered as a module principal (aziot's walkthrough does that to call the API as root)
/// reads that module's identity but stays the machine's administrator: it may still reload and
/// reprovision (`config apply`, `system reprovision`), whatever principal its uid maps to.
pub fn root_administers(uid: u32, op: &Operation) -> bool {
    uid == 0 && *op == Operation::ReprovisionDevice
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(uid: u32, name: &str, idtype: Option<&[&str]>) -> Principal {
        Principal {
            uid,
            name: name.into(),
            idtype: idtype.map(|t| t.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn the_operation_matrix() {
        let ps = vec![
            principal(1001, "mymodule", Some(&["module"])),
            principal(1002, "edged", None),
            principal(0, "rootmod", Some(&["module"])),
        ];
        let module = authenticate(1001, &ps);
        assert!(authorize(&module, &Operation::GetModule("mymodule".into())));
        assert!(
            !authorize(&module, &Operation::GetModule("other".into())),
            "only its own module"
        );
        assert!(!authorize(&module, &Operation::GetDevice));
        assert!(!authorize(&module, &Operation::CreateModule));
        assert!(authorize(&module, &Operation::GetTrustBundle));
        assert_eq!(authenticate(1002, &ps), AuthId::Daemon);
        assert!(authorize(&AuthId::Daemon, &Operation::ReprovisionDevice));
        assert!(
            matches!(authenticate(0, &ps), AuthId::HostProcess(_)),
            "principals before root"
        );
        assert_eq!(authenticate(0, &[]), AuthId::LocalRoot);
        let unknown = authenticate(4242, &ps);
        assert_eq!(unknown, AuthId::Unknown);
        assert!(!authorize(&unknown, &Operation::GetDevice));
        assert!(authorize(&unknown, &Operation::GetTrustBundle));
        let device = authenticate(1003, &[principal(1003, "dev", Some(&["device"]))]);
        assert!(authorize(&device, &Operation::GetDevice));
        // root mapped to a module principal keeps reload/reprovision, nothing more; others don't.
        assert!(!authorize(
            &authenticate(0, &ps),
            &Operation::ReprovisionDevice
        ));
        assert!(root_administers(0, &Operation::ReprovisionDevice));
        assert!(!root_administers(0, &Operation::CreateModule));
        assert!(!root_administers(1001, &Operation::ReprovisionDevice));
    }
}
