//! `$body` queries.

use super::support::{Msg, condition_error, eval_on, num, string};
use crate::Value;

const BODY: &str = r#"{"temp": 35.5, "ok": true, "none": null, "name": "dev",
    "a": {"b": [{"c": "x"}, {"c": "y"}], "list": [1, 2]}}"#;

#[test]
fn queries_a_json_body() {
    let msg = Msg::device().json(BODY);
    assert_eq!(eval_on("$body.temp", &msg), num(35.5));
    assert_eq!(eval_on("$body.temp > 30", &msg), Value::Bool(true));
    assert_eq!(eval_on("$body.ok", &msg), Value::Bool(true));
    assert_eq!(
        eval_on("$body.ok AND $body.temp > 30", &msg),
        Value::Bool(true)
    );
    assert_eq!(eval_on("$body.name = 'dev'", &msg), Value::Bool(true));
    assert_eq!(eval_on("$body.none", &msg), Value::Null);
    assert_eq!(eval_on("IS_NULL($body.none)", &msg), Value::Bool(true));
    assert_eq!(
        eval_on("$BODY.temp", &msg),
        num(35.5),
        "prefix is case-insensitive"
    );
    assert_eq!(
        eval_on("$body.TEMP", &msg),
        Value::Undefined,
        "keys are not"
    );
}

#[test]
fn array_indices() {
    let msg = Msg::device().json(BODY);
    assert_eq!(eval_on("$body.a.b[0].c", &msg), string("x"));
    assert_eq!(eval_on("$body.a.b[1].c = 'y'", &msg), Value::Bool(true));
    assert_eq!(eval_on("$body.a.b[2].c", &msg), Value::Undefined);
    assert_eq!(eval_on("$body.a.list[1] + 1", &msg), num(3.0));
    assert_eq!(eval_on("$body.temp[0]", &msg), Value::Undefined);
}

#[test]
fn objects_arrays_and_missing_paths_are_undefined() {
    let msg = Msg::device().json(BODY);
    for cond in [
        "$body.a",
        "$body.a.b",
        "$body.a.list",
        "$body.missing",
        "$body.a.missing.deeper",
    ] {
        assert_eq!(eval_on(cond, &msg), Value::Undefined, "{cond}");
        assert_eq!(
            eval_on(&format!("IS_DEFINED({cond})"), &msg),
            Value::Bool(false)
        );
    }
}

#[test]
fn requires_json_content_type_and_known_encoding() {
    let plain = Msg::device().body(br#"{"temp": 40}"#);
    assert_eq!(eval_on("$body.temp", &plain), Value::Undefined);
    let no_encoding = plain.clone().sys("contentType", "application/json");
    assert_eq!(eval_on("$body.temp", &no_encoding), Value::Undefined);
    let text = plain
        .clone()
        .sys("contentType", "text/plain")
        .sys("contentEncoding", "utf-8");
    assert_eq!(eval_on("$body.temp", &text), Value::Undefined);
    let latin1 = plain
        .clone()
        .sys("contentType", "application/json")
        .sys("contentEncoding", "iso-8859-1");
    assert_eq!(eval_on("$body.temp", &latin1), Value::Undefined);
    let mixed_case = plain
        .sys("ContentType", "Application/JSON")
        .sys("contentencoding", "UTF-8");
    assert_eq!(eval_on("$body.temp", &mixed_case), num(40.0));
}

#[test]
fn invalid_json_body_is_undefined() {
    let msg = Msg::device().json("{not json");
    assert_eq!(eval_on("$body.temp", &msg), Value::Undefined);
    assert_eq!(
        eval_on("NOT IS_DEFINED($body.temp)", &msg),
        Value::Bool(true)
    );
}

#[test]
fn utf16_and_utf32_bodies() {
    let json = r#"{"t": "é"}"#;
    let utf16: Vec<u8> = json.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let msg = Msg::device()
        .sys("contentType", "application/json")
        .sys("contentEncoding", "utf-16")
        .body(&utf16);
    assert_eq!(eval_on("$body.t", &msg), string("é"));
    let utf32: Vec<u8> = json
        .chars()
        .flat_map(|c| u32::from(c).to_le_bytes())
        .collect();
    let msg = Msg::device()
        .sys("contentType", "application/json")
        .sys("contentEncoding", "utf-32")
        .body(&utf32);
    assert_eq!(eval_on("$body.t", &msg), string("é"));
    let odd = Msg::device()
        .sys("contentType", "application/json")
        .sys("contentEncoding", "utf-16")
        .body(b"{}x");
    assert_eq!(eval_on("$body.t", &odd), Value::Undefined);
}

#[test]
fn utf8_bom_is_ignored() {
    let msg = Msg::device().json("\u{feff}{\"t\": 1}");
    assert_eq!(eval_on("$body.t", &msg), num(1.0));
}

#[test]
fn application_property_shadows_plain_body_query() {
    let msg = Msg::device()
        .json(r#"{"temp": 1, "a": [5]}"#)
        .app("$body.temp", "app");
    assert_eq!(eval_on("$body.temp", &msg), string("app"));
    assert_eq!(eval_on("{$body.temp}", &msg), num(1.0));
    // Bracketed queries never look at application properties.
    let msg = msg.app("$body.a[0]", "app");
    assert_eq!(eval_on("$body.a[0]", &msg), num(5.0));
}

#[test]
fn invalid_body_paths_are_parse_errors() {
    assert_eq!(
        condition_error("$body. = 1"),
        "column 1: $body query cannot be empty"
    );
    assert_eq!(
        condition_error("x = $body.a[x]"),
        "column 5: invalid $body query 'a[x]'"
    );
    assert_eq!(
        condition_error("$body.a..b"),
        "column 1: invalid $body query 'a..b'"
    );
    assert_eq!(
        condition_error("$body.a[1"),
        "column 1: invalid $body query 'a[1'"
    );
    assert_eq!(
        condition_error("{$body.[0]}"),
        "column 2: invalid $body query '[0]'"
    );
}

#[test]
fn body_named_property_without_dot_is_a_system_property() {
    let msg = Msg::device().json(r#"{"a": 1}"#).sys("body", "sys");
    assert_eq!(eval_on("$body", &msg), string("sys"));
}
