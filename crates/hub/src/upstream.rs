//! A hook for gateways: a local hub (the edge gateway's) whose twin, method and cloud-to-device
//! traffic belongs to another hub upstream. When an upstream hook is installed, twin requests and
//! method answers from a client are handed to it instead of being served locally, and it learns
//! what each client subscribes to so it can subscribe upstream on the client's behalf. Telemetry
//! and module inputs stay local (durable store, routes).

/// What the local hub tells the gateway's upstream side (installed in [`crate::Hub::upstream`]).
pub trait Upstream: Send + Sync + 'static {
    /// `client_id` (`device` or `device/module`) is subscribed to `filters`: on SUBSCRIBE, and at
    /// CONNECT with the filters of a restored session (none for a new one).
    fn subscribed(&self, client_id: &str, filters: &[String]);
    /// A twin GET, a reported-properties PATCH or a method answer from `client_id`, published on
    /// `topic`; the hook answers (twin responses) by sending to the client's connection.
    fn request(&self, client_id: &str, topic: &str, payload: Vec<u8>);
    /// The last connection of `client_id` ended.
    fn disconnected(&self, client_id: &str);
    /// `client_id` is not in the local registry: the hook may look it up upstream and add it.
    /// Resolves to `true` when it did (authentication is then tried once more).
    fn lookup(&self, client_id: &str) -> LookupFuture;
    /// Whether a new message from `client_id` may be stored; `Err` names why not (the
    /// connection is then closed without acknowledging it, so the sender keeps it).
    fn admit(&self, _client_id: &str) -> Result<(), String> {
        Ok(())
    }
}

/// See [`Upstream::lookup`].
pub type LookupFuture = std::pin::Pin<Box<dyn Future<Output = bool> + Send>>;
