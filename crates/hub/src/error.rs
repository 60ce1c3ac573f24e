//! The service API's error type is the runtime's (every server's REST API answers alike), and so
//! is how a registry storage failure is answered (`From<StoreError>`: 507 on a full disk, else
//! 500).

pub use ferrohub_runtime::error::ApiError;
