//! CA certificates with proof of possession: the service itself is the runtime's (the
//! provisioning service uses it too, see [`ferrohub_runtime::cas`]); what the hub adds is that a
//! CA deleted or no longer verified ends the live device sessions whose chains ended in it.

use ferrohub_runtime::cas::AnchoredSessions;

use crate::device_session::live::Connections;
use crate::device_session::revoke::Revoked;

impl AnchoredSessions for Connections {
    fn end_anchored_by(&self, thumbprint: &str) -> usize {
        let anchor = crate::mqtt::auth::anchor_key(thumbprint);
        self.revoke(&Revoked::Ca { anchor })
    }
}
