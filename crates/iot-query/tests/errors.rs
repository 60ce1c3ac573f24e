#![allow(clippy::unwrap_used)]
//! Malformed queries and the length / depth limits.

use iot_query::{MAX_DEPTH, MAX_QUERY_LEN, QueryError, parse, parse_condition};

fn error(query: &str) -> QueryError {
    parse(query).unwrap_err()
}

fn message(query: &str) -> String {
    error(query).to_string()
}

#[test]
fn missing_select_list() {
    assert_eq!(
        error("SELECT FROM devices"),
        QueryError::Syntax {
            pos: 7,
            expected: "'*', a property path or an aggregate after SELECT".into(),
            found: "'FROM'".into(),
        }
    );
    assert!(message("SELECT FROM devices").starts_with("at 7: expected"));
}

#[test]
fn unknown_source() {
    assert_eq!(
        error("SELECT * FROM nothing"),
        QueryError::UnknownSource {
            pos: 14,
            name: "nothing".into()
        }
    );
    assert_eq!(
        error("SELECT * FROM devices.twins"),
        QueryError::UnknownSource {
            pos: 14,
            name: "devices.twins".into()
        }
    );
    assert!(message("SELECT * FROM nothing").starts_with("at 14: unknown source 'nothing'"));
}

#[test]
fn where_without_condition() {
    assert_eq!(
        message("SELECT * FROM devices WHERE"),
        "at 27: expected a condition after WHERE, found end of query"
    );
}

#[test]
fn unterminated_string() {
    assert_eq!(
        error("SELECT * FROM devices WHERE a = 'abc"),
        QueryError::UnterminatedString { pos: 32 }
    );
    assert_eq!(
        message("SELECT * FROM devices WHERE a = \"abc"),
        "at 32: unterminated string literal"
    );
}

#[test]
fn missing_value_after_operator() {
    assert_eq!(
        message("SELECT * FROM devices WHERE a = "),
        "at 32: expected a value after '=', found end of query"
    );
    assert_eq!(
        message("SELECT * FROM devices WHERE a >= AND b = 1"),
        "at 33: expected a value after '>=', found 'AND'"
    );
    assert!(message("SELECT * FROM devices WHERE a = 1 AND").starts_with("at 37: expected"));
}

#[test]
fn trailing_garbage() {
    assert_eq!(
        message("SELECT * FROM devices WHERE a = 1 b"),
        "at 34: expected AND, OR, GROUP BY or end of query, found 'b'"
    );
    assert_eq!(
        message("SELECT * FROM devices extra"),
        "at 22: expected WHERE, GROUP BY or end of query, found 'extra'"
    );
    assert!(
        message("SELECT * FROM devices GROUP BY a )").starts_with("at 33: expected end of query")
    );
    assert!(
        parse_condition("a = 1 )")
            .unwrap_err()
            .to_string()
            .starts_with("at 6:")
    );
    for (chained, pos) in [("a = b = c", 6), ("NOT a = 1 = 2", 10), ("a < b > c", 6)] {
        let err = parse_condition(chained).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("at {pos}: expected AND, OR or end of query")),
            "{err}"
        );
    }
    assert!(
        parse_condition("a = NOT b")
            .unwrap_err()
            .to_string()
            .starts_with("at 4:")
    );
    assert!(parse_condition("(NOT a) = false").is_ok());
}

#[test]
fn other_syntax_errors_name_their_position() {
    for (text, pos) in [
        ("", 0),
        ("SELECT", 6),
        ("SELECT *", 8),
        ("SELECT a,", 9),
        ("SELECT a AS FROM devices", 12),
        ("SELECT * FROM", 13),
        ("SELECT * FROM devices WHERE (a = 1", 34),
        ("SELECT * FROM devices WHERE a. = 1", 31),
        ("SELECT * FROM devices WHERE a = #", 32),
        ("SELECT * FROM devices WHERE a IN 'x'", 33),
        ("SELECT * FROM devices WHERE a IN ['x' 'y']", 38),
        ("SELECT * FROM devices WHERE NOSUCH(a)", 28),
        ("SELECT * FROM devices WHERE LOWER(a, b)", 28),
        ("SELECT * FROM devices WHERE a = 1e999", 32),
        ("SELECT * FROM devices GROUP a", 28),
        ("SELECT COUNT(x) FROM devices", 13),
        ("SELECT BOGUS() FROM devices", 7),
    ] {
        let err = error(text).to_string();
        assert!(
            err.starts_with(&format!("at {pos}: ")),
            "{text:?} gave {err:?}"
        );
    }
}

#[test]
fn select_list_must_fit_aggregation() {
    assert_eq!(
        message("SELECT deviceId, COUNT() FROM devices"),
        "at 7: invalid SELECT list: 'deviceId' cannot be selected next to an aggregate without GROUP BY"
    );
    assert!(message("SELECT status, COUNT() FROM devices GROUP BY tags.x").starts_with("at 7:"));
    assert!(message("SELECT * FROM devices GROUP BY status").starts_with("at 7:"));
    assert!(parse("SELECT status, COUNT() FROM devices GROUP BY status").is_ok());
}

#[test]
fn wrong_arity_is_typed() {
    assert_eq!(
        parse_condition("STARTS_WITH(a)").unwrap_err(),
        QueryError::WrongArity {
            pos: 0,
            name: "STARTS_WITH",
            expected: 2,
            found: 1
        }
    );
}

#[test]
fn deep_parentheses_are_a_depth_error() {
    let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(matches!(
        parse_condition(&deep),
        Err(QueryError::TooDeep { max: MAX_DEPTH, .. })
    ));
    let query = format!("SELECT * FROM devices WHERE {deep} = 1");
    assert!(matches!(parse(&query), Err(QueryError::TooDeep { .. })));
}

#[test]
fn depth_limit_boundary() {
    let ok = format!("{}1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert!(parse_condition(&ok).is_ok());
    let too_deep = format!(
        "{}1{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    assert!(matches!(
        parse_condition(&too_deep),
        Err(QueryError::TooDeep { .. })
    ));
}

#[test]
fn deep_nesting_without_parentheses_is_a_depth_error() {
    for deep in [
        "NOT ".repeat(2_000) + "true",
        "-".repeat(5_000) + "1",
        "- ".repeat(3_000) + "1",
        format!("a{}", " + a".repeat(1_000)),
        format!("a{}", " * 2".repeat(1_000)),
        format!("{}1", "ABS(".repeat(1_000)),
    ] {
        assert!(
            matches!(parse_condition(&deep), Err(QueryError::TooDeep { .. })),
            "{}",
            &deep[..20]
        );
    }
}

#[test]
fn long_flat_conditions_are_fine() {
    let ors = (0..300)
        .map(|i| format!("deviceId = 'd{i}'"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let expr = parse_condition(&ors).unwrap();
    assert!(expr.matches(&serde_json::json!({"deviceId": "d299"})));
    assert!(!expr.matches(&serde_json::json!({"deviceId": "d300"})));
}

#[test]
fn nine_kilobyte_query_is_a_length_error() {
    let long = format!(
        "SELECT * FROM devices WHERE deviceId = '{}'",
        "x".repeat(9 * 1024)
    );
    assert_eq!(
        parse(&long),
        Err(QueryError::TooLong {
            len: long.len(),
            max: MAX_QUERY_LEN
        })
    );
    assert!(matches!(
        parse_condition(&"a = 1 OR ".repeat(1_100)),
        Err(QueryError::TooLong { .. })
    ));
    let at_limit = format!("a = '{}'", "x".repeat(MAX_QUERY_LEN - 6));
    assert_eq!(at_limit.len(), MAX_QUERY_LEN);
    assert!(parse_condition(&at_limit).is_ok());
}

#[test]
fn deepest_accepted_inputs_fit_in_a_small_stack() {
    let shapes: Vec<String> = [("(", ")"), ("ABS(", ")"), ("NOT (", ")"), ("-(", ")")]
        .iter()
        .map(|(open, close)| {
            let levels = MAX_DEPTH / open.matches(['(', '-', 'N']).count();
            format!("{}1{} = 1", open.repeat(levels), close.repeat(levels))
        })
        .collect();
    // Well under the 2 MiB default of std and tokio threads, even in debug builds.
    let worker = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || {
            for text in &shapes {
                let expr = parse_condition(text).unwrap();
                let _ = expr.eval(&serde_json::json!({}));
                let query = parse(&format!("SELECT * FROM devices WHERE {text}")).unwrap();
                let _ = query.run(&[serde_json::json!({"a": 1})]).unwrap();
            }
        })
        .unwrap();
    worker.join().unwrap();
}
