#![allow(clippy::unwrap_used)]
//! Property tests for the route language: no text or message makes parsing or evaluation
//! panic, conditions agree with a small reference model of the three-valued logic, source
//! matching is a case-insensitive path prefix, and `$edgeHub` desired properties never panic.

use std::collections::BTreeMap;

use proptest::prelude::*;
use routes::{
    MAX_ROUTE_LEN, Message, Sink, Source, parse_condition, parse_edgehub_desired, parse_route,
    select, source_matches,
};
use serde_json::{Value as Json, json};

// ---- generated messages ------------------------------------------------------------------------

const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

#[derive(Debug, Clone)]
struct OwnedMsg {
    module: Option<(String, Option<String>)>,
    system: BTreeMap<String, String>,
    app: BTreeMap<String, Option<String>>,
    body: Vec<u8>,
}

impl OwnedMsg {
    fn view(&self) -> Message<'_> {
        let source = match &self.module {
            None => Source::Device,
            Some((module, output)) => Source::Module {
                module,
                output: output.as_deref(),
            },
        };
        Message {
            source,
            system: &self.system,
            app: &self.app,
            body: &self.body,
        }
    }
}

fn app_props() -> impl Strategy<Value = BTreeMap<String, Option<String>>> {
    prop::collection::btree_map(
        prop::sample::select(NAMES.to_vec()).prop_map(str::to_owned),
        prop::option::of("[xy]{0,2}"),
        0..3,
    )
}

fn json_body() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(json!({})),
        (-5i64..5).prop_map(|n| json!({ "n": n })),
        "[xy]{0,2}".prop_map(|s| json!({ "n": s })),
        Just(json!({ "n": null })),
        Just(json!({ "n": [1, 2] })),
    ]
}

/// Messages with properties from [`NAMES`] and a JSON body whose `n` routes may query.
fn modelled_msg() -> impl Strategy<Value = (OwnedMsg, Json)> {
    (app_props(), json_body()).prop_map(|(app, body)| {
        let system = BTreeMap::from([
            ("contentType".to_owned(), "application/json".to_owned()),
            ("contentEncoding".to_owned(), "utf-8".to_owned()),
            ("connectionDeviceId".to_owned(), "leaf1".to_owned()),
        ]);
        let msg = OwnedMsg {
            module: None,
            system,
            app,
            body: serde_json::to_vec(&body).unwrap(),
        };
        (msg, body)
    })
}

/// Anything at all: random sources, properties and (often not JSON) bodies.
fn arbitrary_msg() -> impl Strategy<Value = OwnedMsg> {
    let module = prop::option::of(("[a-z/*]{0,6}", prop::option::of("[a-z/ *]{0,6}")));
    let system = prop::collection::btree_map(
        prop_oneof![
            Just("contentType".to_owned()),
            Just("contentEncoding".to_owned()),
            Just("CONTENTTYPE".to_owned()),
            "[a-zA-Z$]{1,8}"
        ],
        prop_oneof![
            Just("application/json".to_owned()),
            Just("utf-8".to_owned()),
            Just("UTF-16".to_owned()),
            Just("utf-32".to_owned()),
            any::<String>()
        ],
        0..5,
    );
    let app =
        prop::collection::btree_map("[a-zA-Z$]{1,6}", prop::option::of(any::<String>()), 0..5);
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        any::<String>().prop_map(String::into_bytes),
        Just(br#"{"a":{"b":[{"c":1.5e308}]},"n":-0}"#.to_vec()),
        Just("\u{feff}{\"a\":\"\u{e9}\"}".as_bytes().to_vec()),
    ];
    (module, system, app, body).prop_map(|(module, system, app, body)| OwnedMsg {
        module,
        system,
        app,
        body,
    })
}

// ---- a reference model of a subset of conditions -----------------------------------------------

/// Three-valued results: `None` is anything that is not a boolean (undefined, null, ...).
type Tri = Option<bool>;

#[derive(Debug, Clone)]
enum Cond {
    Literal(bool),
    Equals(&'static str, String),
    Defined(&'static str),
    BodyGreater(i64),
    Not(Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
}

impl Cond {
    fn text(&self) -> String {
        match self {
            Cond::Literal(b) => b.to_string(),
            Cond::Equals(name, value) => format!("{name} = '{value}'"),
            Cond::Defined(name) => format!("IS_DEFINED({name})"),
            Cond::BodyGreater(k) => format!("$body.n > {k}"),
            Cond::Not(c) => format!("NOT ({})", c.text()),
            Cond::And(a, b) => format!("({}) AND ({})", a.text(), b.text()),
            Cond::Or(a, b) => format!("({}) OR ({})", a.text(), b.text()),
        }
    }

    fn eval(&self, app: &BTreeMap<String, Option<String>>, body: &Json) -> Tri {
        match self {
            Cond::Literal(b) => Some(*b),
            // A string compared with null or undefined is undefined.
            Cond::Equals(name, value) => match app.get(*name) {
                Some(Some(s)) => Some(s == value),
                _ => None,
            },
            Cond::Defined(name) => Some(app.contains_key(*name)),
            Cond::BodyGreater(k) => body["n"].as_f64().map(|n| n > *k as f64),
            Cond::Not(c) => c.eval(app, body).map(|b| !b),
            Cond::And(a, b) => match (a.eval(app, body), b.eval(app, body)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Cond::Or(a, b) => match (a.eval(app, body), b.eval(app, body)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
        }
    }
}

fn cond() -> impl Strategy<Value = Cond> {
    let name = prop::sample::select(NAMES.to_vec());
    let leaf = prop_oneof![
        any::<bool>().prop_map(Cond::Literal),
        (name.clone(), "[xy]{0,2}").prop_map(|(n, v)| Cond::Equals(n, v)),
        name.prop_map(Cond::Defined),
        (-5i64..5).prop_map(Cond::BodyGreater),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|c| Cond::Not(Box::new(c))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Cond::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Cond::Or(Box::new(a), Box::new(b))),
        ]
    })
}

/// Fragments that get random texts past the lexer and deep into the parser.
fn route_like() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("FROM ".to_owned()),
        Just("SELECT * ".to_owned()),
        Just("/messages/* ".to_owned()),
        Just("/messages/modules/m/outputs/o ".to_owned()),
        Just("WHERE ".to_owned()),
        Just("INTO ".to_owned()),
        Just("$upstream ".to_owned()),
        Just("BrokeredEndpoint(\"/modules/m/inputs/i\") ".to_owned()),
        Just("NOT ".to_owned()),
        Just("AND ".to_owned()),
        Just("OR ".to_owned()),
        Just("?? ".to_owned()),
        Just("|| ".to_owned()),
        Just("$body.a[0].b ".to_owned()),
        Just("{$to} ".to_owned()),
        Just("/* ".to_owned()),
        Just("*/ ".to_owned()),
        Just("'\\u00e9\\'' ".to_owned()),
        Just("\"\\\\\" ".to_owned()),
        prop::sample::select(vec![
            "abs",
            "power",
            "substring",
            "concat",
            "index_of",
            "as_number",
            "is_defined",
            "length"
        ])
        .prop_map(|f| format!("{f}(")),
        "[(),*/%+<>=!-]{1,2}".prop_map(|s| s + " "),
        "[a-z$][a-z0-9_.-]{0,5}".prop_map(|s| s + " "),
        "-?(0x[0-9a-fA-F]{1,18}|[0-9]{1,20}(\\.[0-9]{1,3})?(e-?[0-9]{1,4})?)".prop_map(|s| s + " "),
    ];
    prop::collection::vec(fragment, 0..40).prop_map(|parts| parts.concat())
}

// ---- properties --------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        for result in [
            parse_route("r", &text).map(|_| ()),
            parse_condition(&text).map(|_| ()),
        ] {
            if let Err(e) = result {
                // The column points into the text or just past its end.
                prop_assert!(e.column >= 1 && e.column <= text.chars().count() + 1, "{e}");
            }
        }
    }

    #[test]
    fn route_like_text_parses_and_evaluates_without_panic(
        text in route_like(),
        msgs in prop::collection::vec(arbitrary_msg(), 1..4),
    ) {
        let parsed = [
            parse_route("r", &text).ok(),
            parse_route("w", &format!("FROM /messages/* WHERE {text} INTO $upstream")).ok(),
        ];
        let routes: Vec<_> = parsed.into_iter().flatten().collect();
        for msg in &msgs {
            let view = msg.view();
            for route in &routes {
                let _ = route.matches(&view);
            }
            let chosen = select(&routes, &view);
            prop_assert!(chosen.len() <= routes.len());
        }
    }

    #[test]
    fn conditions_agree_with_the_three_valued_model(c in cond(), (msg, body) in modelled_msg()) {
        let text = c.text();
        let route = parse_route("r", &format!("FROM /messages WHERE {text} INTO $upstream")).unwrap();
        let negated = parse_route("n", &format!("FROM /messages WHERE NOT ({text}) INTO $upstream")).unwrap();
        let expected = c.eval(&msg.app, &body);
        let view = msg.view();
        prop_assert_eq!(route.matches(&view), expected == Some(true), "{}", text);
        prop_assert_eq!(negated.matches(&view), expected == Some(false), "NOT ({})", text);
        // Never both: an undefined condition matches neither way.
        prop_assert!(!(route.matches(&view) && negated.matches(&view)));
    }

    #[test]
    fn a_condition_never_matches_a_message_from_another_source(c in cond(), (msg, _) in modelled_msg()) {
        let route = parse_route("r", &format!("FROM /messages/modules/m1/* WHERE {} INTO $upstream", c.text())).unwrap();
        prop_assert!(!route.matches(&msg.view()));
    }

    #[test]
    fn source_matching_is_a_case_insensitive_segment_prefix(
        route_segs in prop::collection::vec("[a-cA-C]{1,2}", 0..4),
        msg_segs in prop::collection::vec("[a-cA-C]{1,2}", 0..4),
        star in any::<bool>(),
    ) {
        let route = format!("/{}{}", route_segs.join("/"), if star { "/*" } else { "" });
        let message = format!("/{}", msg_segs.join("/"));
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
        let (r, m) = (lower(&route_segs), lower(&msg_segs));
        // Whole segments: `/a` is a prefix of `/a/b`; `/a/b` is not of `/a/bc` unless the
        // last route segment is followed by `*` only... which is trimmed to the same path.
        let expected = m.len() >= r.len() && m[..r.len()] == r[..];
        prop_assert_eq!(source_matches(&route, &message), expected, "{} vs {}", route, message);
        prop_assert!(source_matches("/*", &message));
        prop_assert!(source_matches(&message, &message));
    }

    #[test]
    fn brokered_endpoints_round_trip(module in "[a-zA-Z0-9_-]{1,12}", input in "[a-zA-Z0-9_-]{1,12}") {
        let route = parse_route(
            "r",
            &format!("FROM /messages/* INTO BrokeredEndpoint(\"/modules/{module}/inputs/{input}\")"),
        )
        .unwrap();
        prop_assert_eq!(route.sink, Sink::ModuleInput { module, input });
    }

    #[test]
    fn edgehub_desired_never_panics(desired in json_value()) {
        let _ = parse_edgehub_desired(&desired);
        let wrapped = json!({ "schemaVersion": "1.1", "routes": desired.clone(),
            "storeAndForwardConfiguration": { "timeToLiveSecs": desired } });
        let _ = parse_edgehub_desired(&wrapped);
    }

    #[test]
    fn edgehub_routes_come_back_sorted_by_name(
        names in prop::collection::btree_set("[a-z][a-z0-9_-]{0,8}", 0..6),
        priorities in prop::collection::vec(0u64..10, 6),
    ) {
        let routes: serde_json::Map<String, Json> = names
            .iter()
            .zip(&priorities)
            .map(|(n, p)| {
                (n.clone(), json!({ "route": "FROM /messages/* INTO $upstream", "priority": p }))
            })
            .collect();
        let config = parse_edgehub_desired(&json!({ "schemaVersion": "1.1", "routes": routes })).unwrap();
        let got: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        let want: Vec<&str> = names.iter().map(String::as_str).collect();
        prop_assert_eq!(got, want);
        for (route, p) in config.routes.iter().zip(&priorities) {
            prop_assert_eq!(u64::from(route.priority), *p);
        }
    }
}

fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<f64>().prop_map(Json::from),
        any::<String>().prop_map(Json::String),
        Just(json!("1.1")),
        Just(json!("FROM /messages/* INTO $upstream")),
    ];
    leaf.prop_recursive(3, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("schemaVersion".to_owned()),
                    Just("routes".to_owned()),
                    Just("route".to_owned()),
                    Just("priority".to_owned()),
                    Just("timeToLiveSecs".to_owned()),
                    "[a-z .$#]{0,6}"
                ],
                inner,
                0..4
            )
            .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn over_long_routes_are_refused_not_parsed() {
    let text = format!(
        "FROM /messages/* WHERE {} INTO $upstream",
        "a = 'x' OR ".repeat(MAX_ROUTE_LEN / 8)
    );
    assert!(parse_route("r", &text).is_err());
    let deep = format!("{}true{}", "NOT (".repeat(10_000), ")".repeat(10_000));
    assert!(parse_condition(&deep).is_err());
}
