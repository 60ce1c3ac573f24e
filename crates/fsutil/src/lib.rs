//! Files every ferrohub process writes the same way, in a crate with no network or async
//! dependencies so that the storage crates (the durable log) and the servers share it: private
//! permissions (0700 directories, 0600 files), the one atomic durable write (temporary file,
//! fsync, rename, directory fsync), and the data-directory lock that keeps a second process off
//! a data directory.

pub mod atomic;
pub mod datalock;
pub mod fsperm;
