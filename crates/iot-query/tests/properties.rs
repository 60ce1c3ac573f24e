#![allow(clippy::unwrap_used)]
//! Property tests: no input makes the parser panic, and simple equality filters agree with a
//! direct lookup.

use iot_query::{parse, parse_condition};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Fragments that make random inputs look like queries, so the parser gets past the lexer.
fn query_like() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("SELECT ".to_owned()),
        Just("FROM devices ".to_owned()),
        Just("WHERE ".to_owned()),
        Just("GROUP BY ".to_owned()),
        Just("COUNT() ".to_owned()),
        Just("AS ".to_owned()),
        Just("NOT ".to_owned()),
        Just("AND ".to_owned()),
        Just("IN [".to_owned()),
        Just("IS_DEFINED(".to_owned()),
        Just("'x''y' ".to_owned()),
        Just("\"q\" ".to_owned()),
        "[(),.*=<>!%+\\-/\\[\\]']".prop_map(|s| s.to_owned()),
        "[a-z$_][a-z0-9_-]{0,6}".prop_map(|s| s + " "),
        "[0-9]{1,4}(\\.[0-9]{1,3})?(e[0-9]{1,3})?".prop_map(|s| s + " "),
    ];
    prop::collection::vec(fragment, 0..40).prop_map(|parts| parts.concat())
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("c".to_owned())
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-5i64..5).prop_map(Value::from),
        "[xyz']{0,3}".prop_map(Value::String),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    let inner = prop::collection::btree_map(key(), scalar(), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()));
    let member = prop_oneof![scalar(), inner];
    prop::collection::btree_map(key(), member, 0..3)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = parse(&text);
        let _ = parse_condition(&text);
    }

    #[test]
    fn parse_never_panics_on_query_like_text(text in query_like()) {
        if let Ok(query) = parse(&text) {
            let _ = query.run(&[json!({"a": 1}), json!(null)]);
        }
        if let Ok(expr) = parse_condition(&text) {
            let _ = expr.eval(&json!({"a": {"b": "x"}}));
        }
    }

    #[test]
    fn equality_filter_agrees_with_lookup(
        doc in document(),
        outer in key(),
        inner in key(),
        wanted in "[xyz']{0,3}",
    ) {
        let text = format!("{outer}.{inner} = {}", quote(&wanted));
        let expr = parse_condition(&text).unwrap();
        let direct = doc.get(&outer).and_then(|v| v.get(&inner)) == Some(&Value::String(wanted.clone()));
        prop_assert_eq!(expr.matches(&doc), direct);
        prop_assert_eq!(expr.eval(&doc), Some(Value::Bool(direct)));

        let negated = parse_condition(&format!("NOT ({text})")).unwrap();
        prop_assert_eq!(negated.matches(&doc), !direct);

        let query = parse(&format!("SELECT * FROM devices WHERE {text}")).unwrap();
        let expected: Vec<Value> = if direct { vec![doc.clone()] } else { Vec::new() };
        prop_assert_eq!(query.run(std::slice::from_ref(&doc)).unwrap(), expected);
    }

    #[test]
    fn is_defined_agrees_with_lookup(doc in document(), outer in key(), inner in key()) {
        let expr = parse_condition(&format!("IS_DEFINED({outer}.{inner})")).unwrap();
        let direct = doc.get(&outer).and_then(|v| v.get(&inner)).is_some();
        prop_assert_eq!(expr.matches(&doc), direct);
    }
}
