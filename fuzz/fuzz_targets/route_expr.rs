//! IoT Edge routes and `$edgeHub` desired properties: no text panics the parser, and no parsed
//! route panics the evaluator on a JSON message.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use routes::{Message, Source, parse_edgehub_desired, parse_route, select};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let system = BTreeMap::from([
        ("contentType".to_owned(), "application/json".to_owned()),
        ("contentEncoding".to_owned(), "utf-8".to_owned()),
        ("connectionDeviceId".to_owned(), "leaf1".to_owned()),
    ]);
    let app = BTreeMap::from([
        ("alert".to_owned(), Some("1".to_owned())),
        ("none".to_owned(), None),
    ]);
    let body = br#"{"temp":31.5,"a":{"b":[{"c":"x"}]},"s":"str","n":null}"#;
    let mut routes = Vec::new();
    routes.extend(parse_route("r", s));
    routes.extend(parse_route(
        "w",
        &format!("FROM /messages/* WHERE {s} INTO $upstream"),
    ));
    for source in [
        Source::Device,
        Source::Module {
            module: "m1",
            output: Some("out"),
        },
    ] {
        let msg = Message {
            source,
            system: &system,
            app: &app,
            body,
        };
        let _ = select(&routes, &msg);
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(s) {
        let _ = parse_edgehub_desired(&json);
    }
});
