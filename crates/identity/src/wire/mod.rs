//! The JSON bodies of the three daemons' APIs, in one place for both sides: the daemons' handlers
//! parse and answer with these types, and every client (identityd → keyd/certd, the gateway, the
//! agent, the CLI) builds its requests and reads its answers with the same ones, so a field name
//! lives in exactly one spot. Names and shapes are aziot's (`keyHandle`, `certId`, `genId`, …).
//!
//! Request fields are declared in alphabetical order, as the `json!` maps they replaced wrote
//! them, so what goes over the sockets is byte for byte what it was.

pub mod certd;
pub mod identityd;
pub mod keyd;
