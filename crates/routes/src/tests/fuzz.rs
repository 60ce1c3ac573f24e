//! The parser and evaluator never panic, whatever the input (a small deterministic fuzz).

use super::support::Msg;
use crate::{parse_condition, parse_route};

const VALID: &[&str] = &[
    "FROM /messages/* INTO $upstream",
    r#"FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO BrokeredEndpoint("/modules/ai_insights/inputs/input1")"#,
    "FROM /messages/modules/ai_insights/outputs/output1 INTO $upstream",
    r#"SELECT * FROM /messages/modules/m/* WHERE $body.a.b[0].c = 'x\u00e9\'' AND (temp > 0x1F OR -1.5e3 <= as_number(t)) ?? {$to} INTO brokeredEndpoint('/modules/m/inputs/i')"#,
    "FROM /messages WHERE substring(concat(lower(a), upper(\"b\")), 1, 2) || 'c' <> undefined /* c */ INTO $UPSTREAM",
];

const VOCABULARY: &[&str] = &[
    "FROM",
    "SELECT",
    "*",
    "WHERE",
    "INTO",
    "/",
    "/messages",
    "$upstream",
    "BrokeredEndpoint",
    "(",
    ")",
    "'",
    "\"",
    "\\",
    "\\u",
    "{",
    "}",
    "$body.",
    "$body.a[0]",
    "[",
    "]",
    "AND",
    "OR",
    "NOT",
    "-",
    "+",
    "||",
    "??",
    "=",
    "<>",
    "!=",
    "<",
    ">=",
    "0x",
    "1e",
    ".",
    "1.5",
    "-2",
    "true",
    "null",
    "undefined",
    "abs",
    "concat",
    ",",
    "/*",
    "*/",
    " ",
    "\n",
    "é",
    "😀",
    "\u{0}",
    "@",
    "?",
];

/// A tiny deterministic generator (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Parses `text` as a route and as a condition, evaluating whatever parses.
fn exercise(text: &str, msgs: &[Msg]) {
    if let Ok(route) = parse_route("fuzz", text) {
        for msg in msgs {
            let _ = route.matches(&msg.view());
        }
    }
    if let Ok(expr) = parse_condition(text) {
        for msg in msgs {
            let _ = expr.evaluate(&msg.view());
        }
    }
}

fn messages() -> Vec<Msg> {
    vec![
        Msg::device().json(r#"{"a": {"b": [{"c": "x"}]}, "temp": 3}"#),
        Msg::module("m", Some("o")).app("a", "A").app_null("t"),
        Msg::twin().body(&[0xff, 0xfe]),
    ]
}

#[test]
fn every_prefix_and_suffix_of_valid_routes() {
    let msgs = messages();
    for text in VALID {
        assert!(parse_route("v", text).is_ok(), "{text}");
        for (i, _) in text.char_indices() {
            exercise(&text[..i], &msgs);
            exercise(&text[i..], &msgs);
        }
    }
}

#[test]
fn random_bytes() {
    let msgs = messages();
    let mut rng = Lcg(0x5eed);
    for _ in 0..3000 {
        let len = rng.below(64);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        exercise(&String::from_utf8_lossy(&bytes), &msgs);
    }
}

#[test]
fn random_token_soup() {
    let msgs = messages();
    let mut rng = Lcg(42);
    for _ in 0..5000 {
        let mut text = String::new();
        for _ in 0..rng.below(24) {
            text.push_str(VOCABULARY[rng.below(VOCABULARY.len())]);
            if rng.below(2) == 0 {
                text.push(' ');
            }
        }
        exercise(&text, &msgs);
    }
}

#[test]
fn mutated_valid_routes() {
    let msgs = messages();
    let mut rng = Lcg(7);
    for _ in 0..3000 {
        let mut chars: Vec<char> = VALID[rng.below(VALID.len())].chars().collect();
        for _ in 0..=rng.below(4) {
            let at = rng.below(chars.len());
            match rng.below(3) {
                0 => {
                    chars.remove(at);
                }
                1 => chars.insert(
                    at,
                    ['(', ')', '\'', '"', '\\', '$', '[', ']', '*', '/'][rng.below(10)],
                ),
                _ => {
                    let other = rng.below(chars.len());
                    chars.swap(at, other);
                }
            }
        }
        exercise(&chars.into_iter().collect::<String>(), &msgs);
    }
}
