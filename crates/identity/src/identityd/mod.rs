//! identityd: the device identity (provisioned manually or through DPS), module identities kept
//! in sync with the hub, and the caller's own identity by uid.
