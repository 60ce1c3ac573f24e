#![allow(clippy::unwrap_used)]
//! Parsing and evaluating realistic IoT Hub queries over twin documents.

use iot_query::{
    Aggregate, CompareOp, Expr, Function, Query, Select, SelectItem, Source, parse, parse_condition,
};
use serde_json::{Value, json};

fn twins() -> Vec<Value> {
    vec![
        json!({
            "deviceId": "dev-1", "status": "enabled", "capabilities": {"iotEdge": true},
            "tags": {"location": "x", "floor": 1},
            "properties": {"reported": {"fw": "1.2", "temp": 21.0}, "desired": {}}
        }),
        json!({
            "deviceId": "dev-2", "status": "disabled", "capabilities": {"iotEdge": false},
            "tags": {"location": "x"},
            "properties": {"reported": {"fw": "1.1", "temp": 19}, "desired": {}}
        }),
        json!({
            "deviceId": "sensor-3", "status": "enabled", "capabilities": {"iotEdge": false},
            "tags": {"location": "y", "owner": "it's mine"},
            "properties": {"reported": {"fw": "1.2", "temp": 25}, "desired": {}}
        }),
        json!({
            "deviceId": "bare", "status": "enabled", "capabilities": {"iotEdge": false},
            "properties": {"reported": {}, "desired": {}}
        }),
    ]
}

fn ids(results: &[Value]) -> Vec<&str> {
    results
        .iter()
        .map(|r| r["deviceId"].as_str().unwrap())
        .collect()
}

fn select_ids(query: &str) -> Vec<String> {
    let query = parse(query).unwrap();
    ids(&query.run(&twins()).unwrap())
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[test]
fn select_star_returns_every_document() {
    let query = parse("SELECT * FROM devices").unwrap();
    assert_eq!(
        query,
        Query {
            select: Select::All,
            source: Source::Devices,
            filter: None,
            group_by: None
        }
    );
    assert_eq!(query.run(&twins()).unwrap(), twins());
}

#[test]
fn tag_and_reported_property_filter() {
    assert_eq!(
        select_ids(
            "SELECT * FROM devices WHERE tags.location = 'x' AND properties.reported.fw = '1.2'"
        ),
        ["dev-1"]
    );
}

#[test]
fn status_and_capability_filter() {
    assert_eq!(
        select_ids(
            "SELECT * FROM devices WHERE status = 'enabled' AND capabilities.iotEdge = true"
        ),
        ["dev-1"]
    );
}

#[test]
fn modules_source_with_dollar_identifier_value() {
    let query = parse("SELECT * FROM devices.modules WHERE moduleId = '$edgeHub'").unwrap();
    assert_eq!(query.source, Source::Modules);
    let modules = [
        json!({"deviceId": "e1", "moduleId": "$edgeHub"}),
        json!({"deviceId": "e1", "moduleId": "$edgeAgent"}),
    ];
    assert_eq!(query.run(&modules).unwrap(), vec![modules[0].clone()]);
    assert_eq!(
        parse("SELECT * FROM devices.jobs").unwrap().source,
        Source::Jobs
    );
}

#[test]
fn projection_with_alias_and_is_defined() {
    let query =
        parse("SELECT deviceId, tags.location AS loc FROM devices WHERE IS_DEFINED(tags.location)")
            .unwrap();
    assert_eq!(
        query.select,
        Select::Items(vec![
            SelectItem::Path {
                path: vec!["deviceId".into()],
                alias: None
            },
            SelectItem::Path {
                path: vec!["tags".into(), "location".into()],
                alias: Some("loc".into())
            },
        ])
    );
    assert_eq!(
        query.run(&twins()).unwrap(),
        vec![
            json!({"deviceId": "dev-1", "loc": "x"}),
            json!({"deviceId": "dev-2", "loc": "x"}),
            json!({"deviceId": "sensor-3", "loc": "y"}),
        ]
    );
}

#[test]
fn projection_omits_undefined_values() {
    let query = parse("SELECT deviceId, tags.owner FROM devices").unwrap();
    assert_eq!(query.project(&twins()[0]), json!({"deviceId": "dev-1"}));
    assert_eq!(
        query.project(&twins()[2]),
        json!({"deviceId": "sensor-3", "owner": "it's mine"})
    );
}

#[test]
fn count_with_alias() {
    let query = parse("SELECT COUNT() AS n FROM devices").unwrap();
    assert_eq!(query.run(&twins()).unwrap(), vec![json!({"n": 4})]);
    assert_eq!(query.run(&[]).unwrap(), vec![json!({"n": 0})]);
}

#[test]
fn unnamed_count_is_dollar_one() {
    let query = parse("SELECT COUNT() FROM devices WHERE status = 'enabled'").unwrap();
    assert_eq!(query.run(&twins()).unwrap(), vec![json!({"$1": 3})]);
}

#[test]
fn group_by_reported_firmware() {
    let query = parse(
        "SELECT properties.reported.fw, COUNT() AS n FROM devices GROUP BY properties.reported.fw",
    )
    .unwrap();
    assert_eq!(
        query.group_by,
        Some(vec!["properties".into(), "reported".into(), "fw".into()])
    );
    assert_eq!(
        query.run(&twins()).unwrap(),
        vec![
            json!({"fw": "1.2", "n": 2}),
            json!({"fw": "1.1", "n": 1}),
            json!({"n": 1}),
        ]
    );
}

#[test]
fn group_by_with_numeric_aggregates() {
    let query = parse(
        "SELECT tags.location AS loc, AVG(properties.reported.temp) AS avg, \
         SUM(properties.reported.temp) AS sum, MIN(properties.reported.temp) AS lo, \
         MAX(deviceId) AS last FROM devices WHERE IS_DEFINED(tags.location) \
         GROUP BY tags.location",
    )
    .unwrap();
    assert!(matches!(
        &query.select,
        Select::Items(items) if matches!(&items[1], SelectItem::Aggregate { func: Aggregate::Avg(_), .. })
    ));
    assert_eq!(
        query.run(&twins()).unwrap(),
        vec![
            json!({"loc": "x", "avg": 20.0, "sum": 40.0, "lo": 19, "last": "dev-2"}),
            json!({"loc": "y", "avg": 25.0, "sum": 25, "lo": 25, "last": "sensor-3"}),
        ]
    );
}

#[test]
fn not_is_defined() {
    assert_eq!(
        select_ids("SELECT * FROM devices WHERE NOT IS_DEFINED(tags.location)"),
        ["bare"]
    );
    assert_eq!(
        select_ids("SELECT * FROM devices WHERE NOT IS_DEFINED(tags.x)").len(),
        4
    );
}

#[test]
fn numeric_comparisons() {
    assert_eq!(
        select_ids("SELECT * FROM devices WHERE properties.reported.temp > 20.5"),
        ["dev-1", "sensor-3"]
    );
    assert_eq!(
        select_ids("SELECT * FROM devices WHERE properties.reported.temp <= 21"),
        ["dev-1", "dev-2"]
    );
    assert_eq!(
        select_ids("SELECT * FROM devices WHERE properties.reported.temp * 2 - 1 = 37"),
        ["dev-2"]
    );
    assert_eq!(
        select_ids(
            "SELECT * FROM devices WHERE -properties.reported.temp < -24 OR tags.floor % 2 = 1"
        ),
        ["dev-1", "sensor-3"]
    );
}

#[test]
fn string_functions() {
    assert_eq!(
        select_ids("SELECT * FROM devices WHERE STARTS_WITH(deviceId, 'dev')"),
        ["dev-1", "dev-2"]
    );
    assert_eq!(
        select_ids(
            "SELECT * FROM devices WHERE ENDS_WITH(deviceId, '-3') OR CONTAINS(deviceId, 'ar')"
        ),
        ["sensor-3", "bare"]
    );
    assert_eq!(
        select_ids("SELECT * FROM devices WHERE UPPER(deviceId) = 'BARE' AND LENGTH(deviceId) = 4"),
        ["bare"]
    );
    assert_eq!(
        select_ids("SELECT * FROM devices WHERE lower('DEV-1') = deviceId AND abs(-2) = 2"),
        ["dev-1"]
    );
}

#[test]
fn type_checking_functions() {
    let doc = json!({"s": "x", "n": 1.5, "b": false, "o": {}, "a": [1], "z": null});
    for (text, expected) in [
        (
            "IS_STRING(s) AND IS_NUMBER(n) AND IS_BOOL(b) AND IS_OBJECT(o)",
            true,
        ),
        (
            "IS_ARRAY(a) AND IS_NULL(z) AND IS_PRIMITIVE(z) AND NOT IS_PRIMITIVE(o)",
            true,
        ),
        (
            "IS_STRING(n) OR IS_NUMBER(s) OR IS_NULL(missing) OR IS_OBJECT(a)",
            false,
        ),
        ("IS_DEFINED(z) AND NOT IS_DEFINED(missing)", true),
    ] {
        assert_eq!(
            parse_condition(text).unwrap().matches(&doc),
            expected,
            "{text}"
        );
    }
}

#[test]
fn string_escapes_and_double_quotes() {
    assert_eq!(
        select_ids("SELECT * FROM devices WHERE tags.owner = 'it''s mine'"),
        ["sensor-3"]
    );
    assert_eq!(
        select_ids(r#"SELECT * FROM devices WHERE tags.location = "y""#),
        ["sensor-3"]
    );
    let expr = parse_condition(r#"a = "say ""hi""""#).unwrap();
    assert!(expr.matches(&json!({"a": "say \"hi\""})));
}

#[test]
fn keywords_are_case_insensitive_but_paths_are_not() {
    assert_eq!(
        select_ids("select * from DEVICES where Status = 'enabled' or tags.location = 'y'"),
        ["sensor-3"]
    );
    assert_eq!(
        select_ids("SeLeCt * FrOm Devices.Modules WhErE TRUE").len(),
        4
    );
    assert_eq!(
        select_ids("select * from devices where starts_with(deviceId, 'sens') and not false"),
        ["sensor-3"]
    );
}

#[test]
fn in_and_nin_lists() {
    assert_eq!(
        select_ids("SELECT * FROM devices WHERE deviceId IN ['dev-2', 'bare', 3]"),
        ["dev-2", "bare"]
    );
    assert_eq!(
        select_ids("SELECT * FROM devices WHERE tags.location NIN ['x']"),
        ["sensor-3"]
    );
}

#[test]
fn bracket_paths_and_array_indexes() {
    let doc = json!({"tags": {"a b": {"list": [{"v": 1}, {"v": 2}]}}});
    assert!(
        parse_condition("tags['a b'].list[1].v = 2")
            .unwrap()
            .matches(&doc)
    );
    assert_eq!(
        parse_condition("tags['a b'].list[0]").unwrap().eval(&doc),
        Some(json!({"v": 1}))
    );
}

#[test]
fn parse_condition_builds_expected_tree() {
    let expr = parse_condition("$body.temp >= -5").unwrap();
    assert_eq!(
        expr,
        Expr::Compare {
            op: CompareOp::Ge,
            lhs: Box::new(Expr::Path(vec!["$body".into(), "temp".into()])),
            rhs: Box::new(Expr::Literal(json!(-5))),
        }
    );
    let call = parse_condition("STARTSWITH(deviceId, 'x')").unwrap();
    assert!(matches!(
        call,
        Expr::Call {
            func: Function::StartsWith,
            ..
        }
    ));
}

#[test]
fn missing_paths_are_undefined() {
    let doc = json!({"a": 1, "s": "x"});
    let cond = |text: &str| parse_condition(text).unwrap();
    for text in [
        "missing = 1",
        "missing != 1",
        "missing <> 1",
        "missing < 1",
        "missing >= 1",
        "missing = missing",
        "missing = null",
        "a.b = 1",
        "missing IN [1]",
        "missing NIN [1]",
        "STARTS_WITH(missing, 'x')",
        "missing + 1 = 1",
    ] {
        assert!(!cond(text).matches(&doc), "{text}");
    }
    assert!(cond("NOT (missing = 1)").matches(&doc));
    assert!(cond("NOT missing = 1").matches(&doc));
    assert!(cond("NOT missing").matches(&doc));
    assert_eq!(cond("missing").eval(&doc), None);
    assert_eq!(cond("missing + 1").eval(&doc), None);
    assert_eq!(cond("missing = 1").eval(&doc), Some(json!(false)));
}

#[test]
fn different_types_never_compare_true() {
    let doc = json!({"n": 1, "s": "1", "b": true, "z": null, "o": {"k": 1}});
    for text in [
        "n = '1'",
        "n != '1'",
        "s = 1",
        "s > 0",
        "b = 1",
        "b > false",
        "z = 0",
        "z != 0",
        "o = 1",
        "n < 'a'",
        "z < 1",
    ] {
        assert!(!parse_condition(text).unwrap().matches(&doc), "{text}");
    }
    for text in [
        "n = 1.0",
        "s = '1'",
        "b = true",
        "z = null",
        "n != 2",
        "s < '2'",
        "b != false",
    ] {
        assert!(parse_condition(text).unwrap().matches(&doc), "{text}");
    }
}

#[test]
fn logical_operators_treat_non_booleans_as_false() {
    let doc = json!({"n": 1, "t": true});
    let cond = |text: &str| parse_condition(text).unwrap().matches(&doc);
    assert!(!cond("n AND t"));
    assert!(cond("n OR t"));
    assert!(!cond("n"));
    assert!(cond("t"));
    assert!(cond("NOT n"));
    assert!(cond("n = 1 AND (t OR missing) AND NOT NOT t"));
}

#[test]
fn operator_precedence() {
    let doc = json!({});
    let eval = |text: &str| parse_condition(text).unwrap().eval(&doc);
    assert_eq!(eval("1 + 2 * 3"), Some(json!(7)));
    assert_eq!(eval("(1 + 2) * 3"), Some(json!(9)));
    assert_eq!(eval("10 - 4 - 3"), Some(json!(3)));
    assert_eq!(eval("7 / 2"), Some(json!(3.5)));
    assert_eq!(eval("- -3"), Some(json!(3)));
    assert_eq!(eval("1 / 0"), None);
    assert!(
        parse_condition("true OR false AND false")
            .unwrap()
            .matches(&doc)
    );
    assert!(
        !parse_condition("(true OR false) AND false")
            .unwrap()
            .matches(&doc)
    );
}

#[test]
fn query_matches_without_where_is_true() {
    let query = parse("SELECT * FROM devices").unwrap();
    assert!(query.matches(&json!(null)));
    let filtered = parse("SELECT * FROM devices WHERE deviceId = 'bare'").unwrap();
    assert!(filtered.matches(&twins()[3]));
    assert!(!filtered.matches(&twins()[0]));
}

#[test]
fn hand_built_query_with_bad_select_fails_to_run() {
    let query = Query {
        select: Select::Items(vec![
            SelectItem::Path {
                path: vec!["deviceId".into()],
                alias: None,
            },
            SelectItem::Aggregate {
                func: Aggregate::Count,
                alias: None,
            },
        ]),
        source: Source::Devices,
        filter: None,
        group_by: None,
    };
    let err = query.run(&twins()).unwrap_err();
    assert!(matches!(
        err,
        iot_query::QueryError::InvalidSelect { pos: None, .. }
    ));
}
