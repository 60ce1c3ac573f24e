//! The IoT Hub query language (`POST /devices/query`, message-route conditions): no text panics
//! the parser, and no parsed query panics when run over a few twins.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let twins = [
        json!({"deviceId": "d1", "tags": {"location": "x", "n": 3}, "properties": {"reported": {"temp": 21.5}}}),
        json!({"deviceId": "d2", "tags": null, "arr": [1, "a", {"b": true}]}),
        json!(null),
    ];
    if let Ok(query) = iot_query::parse(s) {
        let _ = query.run(&twins);
    }
    if let Ok(expr) = iot_query::parse_condition(s) {
        for twin in &twins {
            let _ = (expr.matches(twin), expr.eval(twin));
        }
    }
});
