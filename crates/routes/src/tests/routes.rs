//! Whole routes: seed routes, sources, sinks, errors, limits and `select`.

use super::support::Msg;
use crate::{
    DEFAULT_PRIORITY, MAX_DEPTH, MAX_ROUTE_LEN, Route, Sink, parse_route, select, source_matches,
};

const SEED_UPSTREAM: &str = "FROM /messages/* INTO $upstream";
const SEED_TO_AI: &str = r#"FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO BrokeredEndpoint("/modules/ai_insights/inputs/input1")"#;
const SEED_AI_UP: &str = "FROM /messages/modules/ai_insights/outputs/output1 INTO $upstream";

fn route(text: &str) -> Route {
    match parse_route("r", text) {
        Ok(route) => route,
        Err(e) => panic!("{text:?} did not parse: {e}"),
    }
}

fn error(text: &str) -> String {
    match parse_route("r", text) {
        Ok(route) => panic!("{text:?} parsed as {route:?}"),
        Err(e) => e.to_string(),
    }
}

fn module_input(module: &str, input: &str) -> Sink {
    Sink::ModuleInput {
        module: module.to_owned(),
        input: input.to_owned(),
    }
}

fn seed_routes() -> Vec<Route> {
    vec![
        parse_route("upstream", SEED_UPSTREAM).unwrap(),
        parse_route("toAi", SEED_TO_AI).unwrap(),
        parse_route("aiUp", SEED_AI_UP).unwrap(),
    ]
}

fn names<'r>(routes: &[&'r Route]) -> Vec<&'r str> {
    routes.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn seed_routes_parse() {
    let [up, to_ai, ai_up] = <[Route; 3]>::try_from(seed_routes()).unwrap();
    assert_eq!(up.source, "/messages/*");
    assert_eq!(up.sink, Sink::Upstream);
    assert!(up.condition.is_none());
    assert_eq!(up.priority, DEFAULT_PRIORITY);
    assert_eq!(up.ttl_secs, None);
    assert_eq!(to_ai.sink, module_input("ai_insights", "input1"));
    assert_eq!(
        to_ai.condition_text.as_deref(),
        Some("NOT IS_DEFINED($connectionModuleId)")
    );
    assert_eq!(
        ai_up.source,
        "/messages/modules/ai_insights/outputs/output1"
    );
    assert_eq!(ai_up.text, SEED_AI_UP);
}

#[test]
fn seed_routes_on_a_device_message() {
    let routes = seed_routes();
    let msg = Msg::device();
    assert_eq!(names(&select(&routes, &msg.view())), ["toAi", "upstream"]);
}

#[test]
fn seed_routes_on_the_ai_module_output() {
    let routes = seed_routes();
    let msg = Msg::module("ai_insights", Some("output1"));
    assert_eq!(names(&select(&routes, &msg.view())), ["aiUp", "upstream"]);
    let other_output = Msg::module("ai_insights", Some("output2"));
    assert_eq!(names(&select(&routes, &other_output.view())), ["upstream"]);
    let other_module = Msg::module("sensor", Some("output1"));
    assert_eq!(names(&select(&routes, &other_module.view())), ["upstream"]);
}

#[test]
fn source_matching_table() {
    let device = "/messages";
    let m_out = "/messages/modules/m/outputs/o";
    let m_no_out = "/messages/modules/m";
    let m10 = "/messages/modules/m10/outputs/o";
    let twin = "/twinChangeNotifications";
    #[rustfmt::skip]
    let table: &[(&str, [bool; 5])] = &[
        //  route source                     device m_out  m_no_out m10   twin
        ("/*",                              [true,  true,  true,  true,  true]),
        ("/messages/*",                     [true,  true,  true,  true,  false]),
        ("/messages",                       [true,  true,  true,  true,  false]),
        ("/messages/modules/*",             [false, true,  true,  true,  false]),
        ("/messages/modules",               [false, true,  true,  true,  false]),
        ("/messages/modules/m/*",           [false, true,  true,  false, false]),
        ("/messages/modules/m",             [false, true,  true,  false, false]),
        ("/messages/modules/m/outputs/*",   [false, true,  false, false, false]),
        ("/messages/modules/m/outputs/o",   [false, true,  false, false, false]),
        ("/messages/modules/m/outputs/o2",  [false, false, false, false, false]),
        ("/MESSAGES/Modules/M/outputs/O",   [false, true,  false, false, false]),
        ("/twinChangeNotifications",        [false, false, false, false, true]),
    ];
    for (source, expected) in table {
        for (msg, want) in [device, m_out, m_no_out, m10, twin].iter().zip(expected) {
            assert_eq!(source_matches(source, msg), *want, "{source} vs {msg}");
        }
    }
}

#[test]
fn source_paths_of_messages() {
    assert_eq!(Msg::device().view().source.path(), "/messages");
    assert_eq!(
        Msg::module("m", None).view().source.path(),
        "/messages/modules/m"
    );
    assert_eq!(
        Msg::module("m", Some("o")).view().source.path(),
        "/messages/modules/m/outputs/o"
    );
    assert_eq!(
        Msg::module("m", Some("")).view().source.path(),
        "/messages/modules/m"
    );
    assert_eq!(Msg::twin().view().source.path(), "/twinChangeNotifications");
}

#[test]
fn route_source_matching_uses_the_written_source() {
    let r = route("FROM /messages/modules/m/* INTO $upstream");
    assert!(r.matches(&Msg::module("m", Some("o")).view()));
    assert!(r.matches(&Msg::module("M", None).view()));
    assert!(!r.matches(&Msg::module("m2", Some("o")).view()));
    assert!(!r.matches(&Msg::device().view()));
    assert!(r.matches_source("/messages/modules/m/outputs/x"));
    // Whitespace and comments between path items are dropped.
    assert_eq!(
        route("FROM / messages /* c */ / * INTO $upstream").source,
        "/messages/*"
    );
}

#[test]
fn select_star_prefix() {
    let r = route("SELECT * FROM /messages/* WHERE a = 'b' INTO $upstream");
    assert_eq!(r.source, "/messages/*");
    assert!(r.matches(&Msg::device().app("a", "b").view()));
    assert!(!r.matches(&Msg::device().app("a", "c").view()));
    assert_eq!(
        error("SELECT FROM /messages INTO $upstream"),
        "column 8: expected '*' after SELECT, found 'FROM'"
    );
}

#[test]
fn keywords_in_routes_are_case_insensitive() {
    let r = route("select * from /messages/* where true into $UPSTREAM");
    assert_eq!(r.sink, Sink::Upstream);
    let r = route(r#"from /* into brokeredendpoint('/MODULES/m/INPUTS/i/')"#);
    assert_eq!(r.sink, module_input("m", "i"));
}

#[test]
fn condition_must_be_boolean_true() {
    let r = route("FROM /* WHERE $body.level INTO $upstream");
    assert!(r.matches(&Msg::device().json(r#"{"level": true}"#).view()));
    for body in [
        r#"{"level": false}"#,
        r#"{"level": null}"#,
        r#"{"level": 1}"#,
        "{}",
    ] {
        assert!(!r.matches(&Msg::device().json(body).view()), "{body}");
    }
    let r = route("FROM /* WHERE 'true' INTO $upstream");
    assert!(!r.matches(&Msg::device().view()));
}

#[test]
fn brokered_endpoint_addresses() {
    let sink = |address: &str| route(&format!("FROM /* INTO BrokeredEndpoint(\"{address}\")")).sink;
    assert_eq!(sink("/modules/m/inputs/i"), module_input("m", "i"));
    assert_eq!(sink("modules/m/inputs/i"), module_input("m", "i"));
    assert_eq!(sink(" /modules/m/inputs/i/ "), module_input("m", "i"));
    assert_eq!(
        route("FROM /* INTO BrokeredEndpoint('/modules/alert\"Logic/inputs/in')").sink,
        module_input("alert\"Logic", "in")
    );
    for bad in [
        "/modules/m/inputs",
        "/modules/m/inputs/i/x",
        "/a/b/c/d",
        "/modules//inputs/i",
        "",
    ] {
        let text = format!("FROM /* INTO BrokeredEndpoint(\"{bad}\")");
        let err = error(&text);
        assert!(
            err.starts_with("column 31: invalid endpoint address"),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn parse_error_columns() {
    // Missing INTO.
    assert_eq!(
        error("FROM /messages/* $upstream"),
        "column 18: expected WHERE or INTO, found '$upstream'"
    );
    assert_eq!(
        error("FROM /messages/* WHERE a = 1 $upstream"),
        "column 30: expected INTO, found '$upstream'"
    );
    // Bad sinks.
    assert_eq!(
        error("FROM /messages INTO upstream"),
        "column 21: expected a sink ($upstream or BrokeredEndpoint(\"/modules/<module>/inputs/<input>\")), found 'upstream'"
    );
    assert_eq!(
        error("FROM /messages INTO $downstream"),
        "column 21: unsupported system endpoint '$downstream'; expected $upstream"
    );
    assert_eq!(
        error("FROM /messages INTO Endpoint(\"/modules/m/inputs/i\")"),
        "column 21: unsupported endpoint function 'Endpoint'; expected BrokeredEndpoint"
    );
    assert_eq!(
        error("FROM /messages INTO BrokeredEndpoint(/modules/m/inputs/i)"),
        "column 38: expected a quoted endpoint address, found '/'"
    );
    // Unknown function.
    assert_eq!(
        error("FROM /messages WHERE nope(1) INTO $upstream"),
        "column 22: unknown function 'nope'"
    );
    // Unterminated string.
    assert_eq!(
        error("FROM /messages WHERE a = 'b INTO $upstream"),
        "column 26: unterminated string"
    );
    assert_eq!(
        error("FROM /messages INTO BrokeredEndpoint(\"/modules/m/inputs/i)"),
        "column 38: unterminated string"
    );
    // Other structure errors.
    assert_eq!(
        error(""),
        "column 1: expected SELECT or FROM, found end of input"
    );
    assert_eq!(
        error("FROM INTO $upstream"),
        "column 6: expected a source starting with '/', found 'INTO'"
    );
    assert_eq!(
        error("FROM / INTO $upstream"),
        "column 8: expected '*' or a path segment after '/', found 'INTO'"
    );
    assert_eq!(
        error("FROM /m INTO $upstream extra"),
        "column 24: expected end of route, found 'extra'"
    );
    assert_eq!(
        error("FROM /m WHERE INTO $upstream"),
        "column 15: expected an expression, found 'INTO'"
    );
}

#[test]
fn invalid_routes_from_the_reference_tests() {
    for text in [
        r#"FORM /messages/modules/adapter INTO brokeredEndpoint("/modules/alertLogic/inputs/in")"#,
        r#"SELECT FROM /messages/modules/adapter INTO brokeredEndpoint("/modules/alertLogic/inputs/in")"#,
        r#"FROM INTO brokeredEndpoint("/modules/alertLogic/inputs/in")"#,
        r#"FROM /* INTO brokeredEndpoint("/modules/alertLogic/inputs/in')"#,
        r#"FROM /* INTO brokeredEndpoint('/modules/alertLogic/inputs/in")"#,
        r#"FROM /* INTO brokeredEndpoint(""/modules/alertLogic/inputs/in"")"#,
        r#"FROM /* INTO brokeredEndpoint(''/modules/alertLogic/inputs/in'')"#,
        r#"FROM /messages WHERE temp == 100 INTO brokeredEndpoint("/modules/alertLogic/inputs/in")"#,
        r#"FROM /messages WHERE INTO brokeredEndpoint("/modules/alertLogic/inputs/in")"#,
        r#"FROM /messages WHERE temp = 'high' INTO"#,
        r#"FROM /messages INTO brokeredEndpoint("/modules/alertLogic/inputs/in""#,
        r#"FROM /messages INTO brokeredEndpoint("/modules/alertLogic/inputs/in)"#,
        r#"FROM /messages INTO brokeredEndpoint "/modules/alertLogic/inputs/in")"#,
        r#"FROM /messages INTO brokeredEndpoint(/modules/alertLogic/inputs/in")"#,
        r#"FROM /messages INTO "/modules/alertLogic/inputs/in""#,
        r#"FROM /messages INTO /modules/alertLogic/inputs/in"#,
        r#"FROM /messages INTO upstream"#,
    ] {
        assert!(parse_route("r", text).is_err(), "{text}");
    }
}

#[test]
fn valid_routes_from_the_reference_tests() {
    let r = route(
        r#"   FROM /messages/modules/adapter WHERE messageType = "alert" AND alert = "imp" INTO brokeredEndpoint("/modules/b/inputs/d")   "#,
    );
    assert_eq!(r.source, "/messages/modules/adapter");
    assert_eq!(
        r.condition_text.as_deref(),
        Some(r#"messageType = "alert" AND alert = "imp""#)
    );
    let r = route(
        r#"FROM /messages/modules/alertLogic/outputs/commands WHERE messageType = "alert" AND ( temp > 100 OR humidity = 50 OR place = "basement") INTO brokeredEndpoint("/modules/adapter/inputs/write")"#,
    );
    assert_eq!(r.sink, module_input("adapter", "write"));
    let msg = Msg::module("alertLogic", Some("commands"))
        .app("messageType", "alert")
        .app("place", "basement");
    assert!(r.matches(&msg.view()));
    assert!(!r.matches(&msg.clone().app("messageType", "info").view()));
}

#[test]
fn application_properties_are_strings() {
    let r = route("FROM /* WHERE temp > 100 INTO $upstream");
    assert!(!r.matches(&Msg::device().app("temp", "150").view()));
    let r = route("FROM /* WHERE as_number(temp) > 100 INTO $upstream");
    assert!(r.matches(&Msg::device().app("temp", "150").view()));
}

#[test]
fn select_orders_by_priority_then_name() {
    let mut routes = Vec::new();
    for (name, priority) in [
        ("zeta", 1),
        ("alpha", DEFAULT_PRIORITY),
        ("beta", 0),
        ("gamma", 1),
    ] {
        let mut r = route("FROM /messages/* INTO $upstream");
        r.name = name.to_owned();
        r.priority = priority;
        routes.push(r);
    }
    let mut never = route("FROM /messages/* WHERE false INTO $upstream");
    never.name = "never".to_owned();
    never.priority = 0;
    routes.push(never);
    let msg = Msg::device();
    assert_eq!(
        names(&select(&routes, &msg.view())),
        ["beta", "gamma", "zeta", "alpha"]
    );
    assert!(select(&routes, &Msg::twin().view()).is_empty());
}

#[test]
fn nesting_limits() {
    let deep = format!(
        "FROM /* WHERE {}true{} INTO $upstream",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    assert!(error(&deep).contains("nested deeper than 64 levels"));
    let ok = format!(
        "FROM /* WHERE {}true{} INTO $upstream",
        "(".repeat(MAX_DEPTH - 1),
        ")".repeat(MAX_DEPTH - 1)
    );
    assert!(route(&ok).matches(&Msg::device().view()));
    let nots = format!(
        "FROM /* WHERE {}true INTO $upstream",
        "NOT ".repeat(MAX_DEPTH + 1)
    );
    assert!(error(&nots).contains("nested deeper"));
    let sum = format!("FROM /* WHERE 0{} = 100 INTO $upstream", " + 1".repeat(100));
    assert!(error(&sum).contains("nested deeper"));
    let sum = format!("FROM /* WHERE 0{} = 50 INTO $upstream", " + 1".repeat(50));
    assert!(route(&sum).matches(&Msg::device().view()));
    // AND / OR chains are flat and may be long.
    let chain = format!(
        "FROM /* WHERE true{} INTO $upstream",
        " AND true".repeat(1000)
    );
    assert!(route(&chain).matches(&Msg::device().view()));
    let long = format!(
        "FROM /* WHERE '{}' = '' INTO $upstream",
        "x".repeat(MAX_ROUTE_LEN)
    );
    assert!(error(&long).contains("at most 16384 bytes"));
}

#[test]
fn comment_quirk_of_the_reference_lexer() {
    // `/*` starts a comment whenever a `*/` follows, even in a source such as `/messages/*`.
    let r = route("FROM /messages /* any */ WHERE true INTO $upstream");
    assert_eq!(r.source, "/messages");
    // As in the reference, the comment swallows `* WHERE a = 1 /* why` and the condition.
    let r = route("FROM /messages/* WHERE a = 1 /* why */ INTO $upstream");
    assert_eq!(r.source, "/messages");
    assert!(r.condition.is_none());
    // Without a closing `*/` there is no comment.
    assert!(
        route("FROM /messages/* WHERE a = 1 INTO $upstream")
            .condition
            .is_some()
    );
}
