//! Property bags: the `k=v&k2=v2` query strings carried in telemetry, C2D and input topics.

use super::TopicError;
use crate::pct;

/// An ordered list of message properties as carried in an MQTT topic.
///
/// On the wire this is an RFC 2396 query string: `&`-separated, keys and values
/// percent-encoded (`%24.ct=application%2Fjson`). `key` alone means "no value" (`None`) while
/// `key=` means an empty value (`Some("")`). A `+` is a literal plus, never a space.
/// Empty segments (e.g. a trailing `&`) are ignored, so an entry with an empty key and no value
/// does not survive an encode/parse round trip.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropertyBag {
    entries: Vec<(String, Option<String>)>,
}

impl PropertyBag {
    /// An empty bag.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses an encoded bag, percent-decoding keys and values.
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        let mut entries = Vec::new();
        for segment in s.split('&').filter(|seg| !seg.is_empty()) {
            let (key, value) = match segment.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (segment, None),
            };
            let key = pct::decode(key).map_err(|_| TopicError::BadEncoding)?;
            let value = value
                .map(|v| pct::decode(v).map_err(|_| TopicError::BadEncoding))
                .transpose()?;
            entries.push((key, value));
        }
        Ok(Self { entries })
    }

    /// Encodes the bag: every character but `A-Z a-z 0-9 - . _ ~` is percent-encoded in keys
    /// and values (so `$` is `%24`, `/` is `%2F`, a space is `%20`); keys without a value are
    /// written bare.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (key, value) in &self.entries {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(&pct::encode(key));
            if let Some(value) = value {
                out.push('=');
                out.push_str(&pct::encode(value));
            }
        }
        out
    }

    /// Appends an entry (duplicates are kept).
    pub fn push(&mut self, key: impl Into<String>, value: Option<String>) {
        self.entries.push((key.into(), value));
    }

    /// Appends a system property under its wire name (e.g. `$.mid`).
    pub fn push_system(&mut self, property: SystemProperty, value: impl Into<String>) {
        self.push(property.wire_name(), Some(value.into()));
    }

    /// Builder form of [`PropertyBag::push`] for a key with a value.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.push(key, Some(value.into()));
        self
    }

    /// The value of the first entry named `key` (`None` if absent or valueless).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Whether an entry named `key` exists (with or without a value).
    pub fn contains_key(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == key)
    }

    /// All entries in order.
    pub fn entries(&self) -> &[(String, Option<String>)] {
        &self.entries
    }

    /// Iterates `(key, value)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_deref()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the bag has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Separates system properties (see [`SystemProperty`]) from application properties,
    /// keeping the order within each group.
    pub fn split_system(&self) -> SplitProperties {
        let mut split = SplitProperties::default();
        for (key, value) in &self.entries {
            match SystemProperty::from_wire(key) {
                Some(p) => split.system.push((p, value.clone())),
                None => split.application.push(key.clone(), value.clone()),
            }
        }
        split
    }
}

impl FromIterator<(String, Option<String>)> for PropertyBag {
    fn from_iter<I: IntoIterator<Item = (String, Option<String>)>>(iter: I) -> Self {
        Self {
            entries: iter.into_iter().collect(),
        }
    }
}

impl IntoIterator for PropertyBag {
    type Item = (String, Option<String>);
    type IntoIter = std::vec::IntoIter<(String, Option<String>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// A property bag split by [`PropertyBag::split_system`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SplitProperties {
    /// Recognised system properties with their (decoded) values.
    pub system: Vec<(SystemProperty, Option<String>)>,
    /// Everything else.
    pub application: PropertyBag,
}

impl SplitProperties {
    /// The value of the first occurrence of system property `property`.
    pub fn system_value(&self, property: SystemProperty) -> Option<&str> {
        self.system
            .iter()
            .find(|(p, _)| *p == property)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// System properties recognised in MQTT property bags (after percent-decoding the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SystemProperty {
    /// `$.mid`
    MessageId,
    /// `$.cid`
    CorrelationId,
    /// `$.uid`
    UserId,
    /// `$.to`
    To,
    /// `$.ct`
    ContentType,
    /// `$.ce`
    ContentEncoding,
    /// `$.exp`
    ExpiryTimeUtc,
    /// `$.on` (module output name)
    OutputName,
    /// `$.ifid`
    InterfaceId,
    /// `$.sub` (component name)
    ComponentName,
    /// `$.ctime`
    CreationTimeUtc,
    /// `$.schema`
    MessageSchema,
    /// `iothub-operation`
    Operation,
    /// `$.cdid` (set by the server on delivery; never trusted from a client)
    ConnectionDeviceId,
    /// `$.cmid` (set by the server on delivery; never trusted from a client)
    ConnectionModuleId,
}

impl SystemProperty {
    /// Every system property.
    pub const ALL: [Self; 15] = [
        Self::MessageId,
        Self::CorrelationId,
        Self::UserId,
        Self::To,
        Self::ContentType,
        Self::ContentEncoding,
        Self::ExpiryTimeUtc,
        Self::OutputName,
        Self::InterfaceId,
        Self::ComponentName,
        Self::CreationTimeUtc,
        Self::MessageSchema,
        Self::Operation,
        Self::ConnectionDeviceId,
        Self::ConnectionModuleId,
    ];

    /// The decoded key used in topics, e.g. `$.mid`.
    pub fn wire_name(self) -> &'static str {
        self.names().0
    }

    /// The routing / message-model name, e.g. `messageId`.
    pub fn name(self) -> &'static str {
        self.names().1
    }

    /// Looks up a decoded topic key.
    pub fn from_wire(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.wire_name() == key)
    }

    fn names(self) -> (&'static str, &'static str) {
        match self {
            Self::MessageId => ("$.mid", "messageId"),
            Self::CorrelationId => ("$.cid", "correlationId"),
            Self::UserId => ("$.uid", "userId"),
            Self::To => ("$.to", "to"),
            Self::ContentType => ("$.ct", "contentType"),
            Self::ContentEncoding => ("$.ce", "contentEncoding"),
            Self::ExpiryTimeUtc => ("$.exp", "expiryTimeUtc"),
            Self::OutputName => ("$.on", "outputName"),
            Self::InterfaceId => ("$.ifid", "interfaceId"),
            Self::ComponentName => ("$.sub", "componentName"),
            Self::CreationTimeUtc => ("$.ctime", "creationTimeUtc"),
            Self::MessageSchema => ("$.schema", "messageSchema"),
            Self::Operation => ("iothub-operation", "operation"),
            Self::ConnectionDeviceId => ("$.cdid", "connectionDeviceId"),
            Self::ConnectionModuleId => ("$.cmid", "connectionModuleId"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_python_style_bag() {
        let b = PropertyBag::parse(
            "%24.mid=m1&%24.ct=application%2Fjson&%24.ce=utf-8&color=light%20red&a%2Bb=1+2",
        )
        .unwrap();
        assert_eq!(b.get("$.mid"), Some("m1"));
        assert_eq!(b.get("$.ct"), Some("application/json"));
        assert_eq!(b.get("color"), Some("light red"));
        assert_eq!(b.get("a+b"), Some("1+2"));
        assert_eq!(b.len(), 5);
    }

    #[test]
    fn valueless_and_empty_values() {
        let b = PropertyBag::parse("flag&empty=&&x=1&").unwrap();
        assert_eq!(
            b.entries(),
            &[
                ("flag".to_owned(), None),
                ("empty".to_owned(), Some(String::new())),
                ("x".to_owned(), Some("1".to_owned())),
            ]
        );
        assert!(b.contains_key("flag"));
        assert_eq!(b.get("flag"), None);
        assert_eq!(b.encode(), "flag&empty=&x=1");
    }

    #[test]
    fn malformed_escape_is_an_error() {
        assert_eq!(PropertyBag::parse("a=%zz"), Err(TopicError::BadEncoding));
        assert_eq!(PropertyBag::parse("%2=1"), Err(TopicError::BadEncoding));
        assert_eq!(PropertyBag::parse("a=%"), Err(TopicError::BadEncoding));
    }

    #[test]
    fn encodes_c2d_bag() {
        let mut b = PropertyBag::new();
        b.push_system(SystemProperty::MessageId, "id 1");
        b.push_system(SystemProperty::To, "/devices/dev1/messages/deviceBound");
        let b = b.with("iothub-ack", "full").with("k+", "a&b=c");
        assert_eq!(
            b.encode(),
            "%24.mid=id%201&%24.to=%2Fdevices%2Fdev1%2Fmessages%2FdeviceBound&iothub-ack=full&k%2B=a%26b%3Dc"
        );
        assert_eq!(PropertyBag::parse(&b.encode()).unwrap(), b);
        assert_eq!(PropertyBag::new().encode(), "");
    }

    #[test]
    fn splits_system_properties() {
        let b = PropertyBag::parse("%24.on=alert&temp=20&%24.ct=application%2Fjson&iothub-operation=x&%24.cdid=spoof&%24.other=1")
            .unwrap();
        let split = b.split_system();
        let names: Vec<&str> = split.system.iter().map(|(p, _)| p.name()).collect();
        assert_eq!(
            names,
            [
                "outputName",
                "contentType",
                "operation",
                "connectionDeviceId"
            ]
        );
        assert_eq!(
            split.system_value(SystemProperty::OutputName),
            Some("alert")
        );
        assert_eq!(split.system_value(SystemProperty::MessageId), None);
        assert_eq!(split.application.encode(), "temp=20&%24.other=1");
    }

    #[test]
    fn system_property_table_is_consistent() {
        for p in SystemProperty::ALL {
            assert_eq!(SystemProperty::from_wire(p.wire_name()), Some(p));
        }
        assert_eq!(SystemProperty::from_wire("%24.mid"), None);
        assert_eq!(SystemProperty::ExpiryTimeUtc.name(), "expiryTimeUtc");
    }

    #[test]
    fn collects_and_iterates() {
        let b: PropertyBag = vec![
            ("a".to_owned(), None),
            ("b".to_owned(), Some("1".to_owned())),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            b.iter().collect::<Vec<_>>(),
            [("a", None), ("b", Some("1"))]
        );
        assert!(!b.is_empty());
        assert_eq!(b.into_iter().count(), 2);
    }
}
