//! The lexer follows the reference ANTLR lexer: longest match, then rule order.

use crate::lexer::{Tok, kinds};

fn id(s: &str) -> Tok {
    Tok::Id(s.to_owned())
}

fn sys(s: &str) -> Tok {
    Tok::SysProp(s.to_owned())
}

#[test]
fn keywords_are_case_insensitive() {
    assert_eq!(
        kinds("select Select FROM from Where into INTO and Or nOt"),
        vec![
            Tok::Select,
            Tok::Select,
            Tok::From,
            Tok::From,
            Tok::Where,
            Tok::Into,
            Tok::Into,
            Tok::And,
            Tok::Or,
            Tok::Not,
            Tok::Eof
        ]
    );
}

#[test]
fn literal_keywords_are_case_sensitive() {
    assert_eq!(
        kinds("true false null undefined TRUE Null"),
        vec![
            Tok::True,
            Tok::False,
            Tok::Null,
            Tok::Undefined,
            id("TRUE"),
            id("Null"),
            Tok::Eof
        ]
    );
}

#[test]
fn longer_identifiers_beat_keywords() {
    assert_eq!(kinds("fromage android nothing truely"), {
        let mut v: Vec<Tok> = ["fromage", "android", "nothing", "truely"]
            .into_iter()
            .map(id)
            .collect();
        v.push(Tok::Eof);
        v
    });
}

#[test]
fn identifiers_swallow_operator_characters() {
    assert_eq!(kinds("x-priority"), vec![id("x-priority"), Tok::Eof]);
    assert_eq!(kinds("a+b"), vec![id("a+b"), Tok::Eof]);
    assert_eq!(kinds("a*2"), vec![id("a*2"), Tok::Eof]);
    assert_eq!(kinds("-a"), vec![id("-a"), Tok::Eof]);
    assert_eq!(kinds("a!=b"), vec![id("a!"), Tok::Eq, id("b"), Tok::Eof]);
    assert_eq!(kinds("a - b"), vec![id("a"), Tok::Minus, id("b"), Tok::Eof]);
    assert_eq!(kinds("a -1"), vec![id("a"), Tok::Num(Some(-1.0)), Tok::Eof]);
    assert_eq!(kinds("5."), vec![id("5."), Tok::Eof]);
    assert_eq!(kinds("*"), vec![Tok::Star, Tok::Eof]);
    assert_eq!(kinds("**"), vec![id("**"), Tok::Eof]);
}

#[test]
fn numbers() {
    let n = |s: &str| match kinds(s).as_slice() {
        [Tok::Num(n), Tok::Eof] => *n,
        other => panic!("{s:?} lexed as {other:?}"),
    };
    assert_eq!(n("42"), Some(42.0));
    assert_eq!(n("-42"), Some(-42.0));
    assert_eq!(n("0x1F"), Some(31.0));
    assert_eq!(n("0XfF"), Some(255.0));
    assert_eq!(n("0xFFFFFFFFFFFFFFFF"), Some(-1.0));
    assert_eq!(n("0x10000000000000000"), None);
    assert_eq!(n("1.5"), Some(1.5));
    assert_eq!(n(".5"), Some(0.5));
    assert_eq!(n("-.5"), Some(-0.5));
    assert_eq!(n("1.5e3"), Some(1500.0));
    assert_eq!(n("2E-1"), Some(0.2));
    assert_eq!(n("-2.5e+1"), Some(-25.0));
    // REAL := [0-9]* EXP also matches a bare exponent, which is not a number.
    assert_eq!(n("e5"), None);
    assert_eq!(n("1e999"), None);
}

#[test]
fn strings_and_escapes() {
    let s = |text: &str| match kinds(text).as_slice() {
        [Tok::Str(s), Tok::Eof] => s.clone(),
        other => panic!("{text:?} lexed as {other:?}"),
    };
    assert_eq!(s("'abc'"), "abc");
    assert_eq!(s("\"abc\""), "abc");
    assert_eq!(s(r#"'it\'s'"#), "it's");
    assert_eq!(s(r#""say \"hi\"""#), "say \"hi\"");
    assert_eq!(s(r#"'a\\b'"#), "a\\b");
    assert_eq!(s(r#"'"'"#), "\"");
    assert_eq!(s(r#"'\u00e9\u00C9'"#), "éÉ");
    assert_eq!(s(r#"'\uD83D\uDE00'"#), "😀");
    assert_eq!(s(r#"'\uD83D'"#), "\u{FFFD}");
    assert_eq!(s("'a b /* c */'"), "a b /* c */");
    assert_eq!(s("''"), "");
}

#[test]
fn quote_inside_identifier_is_part_of_it() {
    assert_eq!(kinds("'abc'def"), vec![id("'abc'def"), Tok::Eof]);
    assert_eq!(kinds("don't"), vec![id("don't"), Tok::Eof]);
}

#[test]
fn unterminated_string_is_an_error_token_at_the_quote() {
    assert_eq!(
        kinds("a = 'abc"),
        vec![
            id("a"),
            Tok::Eq,
            Tok::Error {
                pos: 4,
                message: "unterminated string"
            },
            Tok::Eof
        ]
    );
}

#[test]
fn bad_escape_is_an_error_token_at_the_backslash() {
    let toks = kinds(r"'ab\x'");
    assert_eq!(
        toks[0],
        Tok::Error {
            pos: 3,
            message: "invalid escape sequence in string"
        }
    );
    assert!(matches!(kinds(r"'\u12'")[0], Tok::Error { pos: 1, .. }));
}

#[test]
fn comments_and_whitespace_are_skipped() {
    assert_eq!(
        kinds(" \t/* one */ a /**/\r\n= /* two */ 1 "),
        vec![id("a"), Tok::Eq, Tok::Num(Some(1.0)), Tok::Eof]
    );
    // Without a closing `*/` it is no comment: `/` then `*`.
    assert_eq!(
        kinds("/* x"),
        vec![Tok::Slash, Tok::Star, id("x"), Tok::Eof]
    );
}

#[test]
fn system_properties_and_paths() {
    assert_eq!(
        kinds("$body.a.b[0].c $connectionModuleId {$to}"),
        vec![
            sys("body.a.b[0].c"),
            sys("connectionModuleId"),
            Tok::LBrace,
            sys("to"),
            Tok::RBrace,
            Tok::Eof
        ]
    );
    assert_eq!(kinds("$"), vec![id("$"), Tok::Eof]);
    assert_eq!(kinds("a[0]"), vec![Tok::QueryPath, Tok::Eof]);
}

#[test]
fn operators() {
    assert_eq!(
        kinds("= != <> < <= > >= || ?? ( ) , + - * / % ?"),
        vec![
            Tok::Eq,
            Tok::Ne,
            Tok::Ne,
            Tok::Lt,
            Tok::Le,
            Tok::Gt,
            Tok::Ge,
            Tok::Concat,
            Tok::Coalesce,
            Tok::LParen,
            Tok::RParen,
            Tok::Comma,
            Tok::Plus,
            Tok::Minus,
            Tok::Star,
            Tok::Slash,
            Tok::Percent,
            Tok::Unknown,
            Tok::Eof
        ]
    );
    assert_eq!(kinds("@")[0], Tok::Unknown);
    assert_eq!(kinds("é")[0], id("é"));
}
