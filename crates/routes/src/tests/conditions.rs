//! Operators, precedence, literals, undefined semantics and property lookup.

use super::support::{Msg, condition_error, eval, eval_on, num, string};
use crate::{BinaryOp, Expr, Value, parse_condition};

#[test]
fn precedence_and_or() {
    assert_eq!(eval("true OR false AND false"), Value::Bool(true));
    assert_eq!(eval("(true OR false) AND false"), Value::Bool(false));
    assert_eq!(eval("false AND true OR true"), Value::Bool(true));
    assert_eq!(eval("true or FALSE = FALSE"), Value::Bool(true));
}

#[test]
fn not_binds_tighter_than_binary_operators() {
    // (NOT false) AND false
    assert_eq!(eval("NOT false AND false"), Value::Bool(false));
    // (NOT 1) = 1: NOT of a number is undefined, so the comparison is too.
    assert_eq!(eval("NOT 1 = 1"), Value::Undefined);
    assert_eq!(eval("NOT (1 = 1)"), Value::Bool(false));
    assert_eq!(eval("NOT NOT true"), Value::Bool(true));
    assert_eq!(eval("not(1 = 2)"), Value::Bool(true));
}

#[test]
fn arithmetic() {
    assert_eq!(eval("1 + 2 * 3"), num(7.0));
    assert_eq!(eval("(1 + 2) * 3"), num(9.0));
    assert_eq!(eval("10 - 4 - 3"), num(3.0));
    assert_eq!(eval("8 / 2 / 2"), num(2.0));
    assert_eq!(eval("7 % 4"), num(3.0));
    assert_eq!(eval("- 2 * 3"), num(-6.0));
    assert_eq!(eval("- (2 + 3)"), num(-5.0));
    assert_eq!(eval("1 + 2 * 3 = 7"), Value::Bool(true));
    assert_eq!(eval("1 / 0"), num(f64::INFINITY));
    assert_eq!(eval("0 / 0"), Value::Undefined);
    assert_eq!(eval("'a' + 1"), Value::Undefined);
    assert_eq!(eval("- 'a'"), Value::Undefined);
    assert_eq!(eval("null + 1"), Value::Undefined);
    assert_eq!(eval("true * 2"), Value::Undefined);
}

#[test]
fn concatenation() {
    assert_eq!(eval("'a' || 'b' || 'c'"), string("abc"));
    assert_eq!(eval("'a' || 1"), Value::Undefined);
    // `||` shares the precedence of `+`, above comparisons.
    assert_eq!(eval("'a' || 'b' = 'ab'"), Value::Bool(true));
}

#[test]
fn comparisons() {
    assert_eq!(eval("1 < 2"), Value::Bool(true));
    assert_eq!(eval("2 <= 2"), Value::Bool(true));
    assert_eq!(eval("2 > 2"), Value::Bool(false));
    assert_eq!(eval("3 >= 2"), Value::Bool(true));
    assert_eq!(eval("1 = 1.0"), Value::Bool(true));
    assert_eq!(eval("1 != 1"), Value::Bool(false));
    assert_eq!(eval("1 <> 2"), Value::Bool(true));
    assert_eq!(eval("'abc' < 'abd'"), Value::Bool(true));
    assert_eq!(
        eval("'B' < 'a'"),
        Value::Bool(true),
        "ordinal, not case-folded"
    );
    assert_eq!(eval("'a' = 'A'"), Value::Bool(false));
    assert_eq!(eval("true > false"), Value::Bool(true));
    assert_eq!(eval("true = true"), Value::Bool(true));
    assert_eq!(eval("null = null"), Value::Bool(true));
    assert_eq!(eval("null < null"), Value::Bool(false));
    assert_eq!(eval("null >= null"), Value::Bool(true));
    assert_eq!(eval("1 < 2 = true"), Value::Bool(true));
}

#[test]
fn comparisons_across_types_are_undefined() {
    assert_eq!(eval("'1' = 1"), Value::Undefined);
    assert_eq!(eval("'1' != 1"), Value::Undefined);
    assert_eq!(eval("null = 0"), Value::Undefined);
    assert_eq!(eval("true = 'true'"), Value::Undefined);
    assert_eq!(eval("'b' > 1"), Value::Undefined);
}

#[test]
fn comparisons_with_undefined_are_undefined_not_errors() {
    let msg = Msg::device();
    for cond in [
        "missing = 1",
        "missing != 1",
        "missing < 1",
        "missing >= 'a'",
        "missing = missing",
        "undefined = undefined",
        "NOT (missing = 1)",
        "missing + 1 > 0",
    ] {
        assert_eq!(eval_on(cond, &msg), Value::Undefined, "{cond}");
    }
}

#[test]
fn three_valued_logic() {
    assert_eq!(eval("undefined AND false"), Value::Bool(false));
    assert_eq!(eval("false AND undefined"), Value::Bool(false));
    assert_eq!(eval("undefined AND true"), Value::Undefined);
    assert_eq!(eval("undefined OR true"), Value::Bool(true));
    assert_eq!(eval("true OR undefined"), Value::Bool(true));
    assert_eq!(eval("undefined OR false"), Value::Undefined);
    assert_eq!(eval("NOT undefined"), Value::Undefined);
    assert_eq!(eval("NOT null"), Value::Undefined);
    assert_eq!(eval("null AND true"), Value::Undefined);
    assert_eq!(eval("1 OR false"), Value::Undefined);
    assert_eq!(eval("true AND true AND true"), Value::Bool(true));
    assert_eq!(eval("false OR false OR false"), Value::Bool(false));
}

#[test]
fn coalesce() {
    assert_eq!(eval("undefined ?? 1"), num(1.0));
    assert_eq!(eval("null ?? 'x'"), string("x"));
    assert_eq!(eval("0 ?? 1"), num(0.0));
    assert_eq!(eval("false ?? true"), Value::Bool(false));
    assert_eq!(eval("missing ?? missing2 ?? 'last'"), string("last"));
    // `??` binds loosest: 2 ?? (1 = 1)
    assert_eq!(eval("2 ?? 1 = 1"), num(2.0));
    assert_eq!(eval("missing ?? 1 = 1"), Value::Bool(true));
    assert_eq!(eval("(missing ?? 1) = 1"), Value::Bool(true));
}

#[test]
fn and_or_chains_are_flattened() {
    let expr = parse_condition("a = 1 AND b = 2 AND c = 3 OR d = 4").unwrap();
    let Expr::Or(items) = expr else {
        panic!("expected OR at the top: {expr:?}")
    };
    assert_eq!(items.len(), 2);
    assert!(matches!(&items[0], Expr::And(inner) if inner.len() == 3));
    let expr = parse_condition("a OR (b OR c)").unwrap();
    assert!(matches!(expr, Expr::Or(items) if items.len() == 2));
    let expr = parse_condition("(a OR b) AND c").unwrap();
    assert!(matches!(expr, Expr::And(items) if matches!(&items[0], Expr::Or(_))));
}

#[test]
fn subtraction_is_left_associative() {
    let expr = parse_condition("10 - 4 - 3").unwrap();
    let Expr::Binary(BinaryOp::Sub, lhs, _) = expr else {
        panic!("{expr:?}")
    };
    assert!(matches!(*lhs, Expr::Binary(BinaryOp::Sub, ..)));
}

#[test]
fn literals() {
    assert_eq!(eval("0x1F = 31"), Value::Bool(true));
    assert_eq!(eval("0x1f"), num(31.0));
    assert_eq!(eval("1.5e3"), num(1500.0));
    assert_eq!(eval(".5"), num(0.5));
    assert_eq!(eval("-3 < 0"), Value::Bool(true));
    assert_eq!(eval("-2.5"), num(-2.5));
    assert_eq!(eval("e5"), Value::Undefined);
    assert_eq!(eval("IS_DEFINED(e5)"), Value::Bool(false));
    assert_eq!(eval("true"), Value::Bool(true));
    assert_eq!(eval("null"), Value::Null);
    assert_eq!(eval("undefined"), Value::Undefined);
}

#[test]
fn string_literals_with_escapes() {
    assert_eq!(eval(r#"'it\'s' = "it's""#), Value::Bool(true));
    assert_eq!(eval(r#""\"q\"" = '"q"'"#), Value::Bool(true));
    assert_eq!(eval(r"'\u00e9' = 'é'"), Value::Bool(true));
    assert_eq!(eval(r"'\uD83D\uDE00' = '😀'"), Value::Bool(true));
    assert_eq!(eval(r"length('a\\b')"), num(3.0));
}

#[test]
fn bare_identifiers_are_application_properties() {
    let msg = Msg::device().app("level", "high").sys("messageId", "m1");
    assert_eq!(eval_on("level", &msg), string("high"));
    assert_eq!(eval_on("LEVEL = 'high'", &msg), Value::Bool(true));
    assert_eq!(eval_on("messageId", &msg), Value::Undefined);
    let msg = Msg::device().app("x-priority", "1");
    assert_eq!(eval_on("x-priority = '1'", &msg), Value::Bool(true));
}

#[test]
fn dollar_names_prefer_application_properties_over_system_ones() {
    let msg = Msg::device().sys("messageId", "sys-id");
    assert_eq!(eval_on("$messageId", &msg), string("sys-id"));
    assert_eq!(eval_on("$MESSAGEID", &msg), string("sys-id"));
    let msg = msg.app("$messageId", "app-id");
    assert_eq!(eval_on("$messageId", &msg), string("app-id"));
    assert_eq!(eval_on("{$messageId}", &msg), string("sys-id"));
    assert_eq!(eval_on("{$nothing}", &msg), Value::Undefined);
    assert_eq!(eval_on("$nothing", &msg), Value::Undefined);
}

#[test]
fn escaped_system_property_ignores_application_properties() {
    let msg = Msg::device().app("$to", "app");
    assert_eq!(eval_on("{$to}", &msg), Value::Undefined);
    assert_eq!(eval_on("$to", &msg), string("app"));
    assert_eq!(
        eval_on("IS_DEFINED({$connectionDeviceId})", &msg),
        Value::Bool(true)
    );
}

#[test]
fn null_application_property() {
    let msg = Msg::device().app_null("flag");
    assert_eq!(eval_on("flag", &msg), Value::Null);
    assert_eq!(eval_on("IS_NULL(flag)", &msg), Value::Bool(true));
    assert_eq!(eval_on("IS_DEFINED(flag)", &msg), Value::Bool(true));
    assert_eq!(eval_on("flag ?? 'dflt'", &msg), string("dflt"));
}

#[test]
fn bracketed_non_body_names_are_undefined() {
    let msg = Msg::device().app("$a[0]", "x").sys("a[0]", "y");
    assert_eq!(eval_on("$a[0]", &msg), Value::Undefined);
    assert_eq!(eval_on("{$a[0]}", &msg), Value::Undefined);
}

#[test]
fn parse_errors_in_conditions() {
    assert_eq!(
        condition_error("a = "),
        "column 5: expected an expression, found end of input"
    );
    assert_eq!(
        condition_error("(a = 1"),
        "column 7: expected ')', found end of input"
    );
    assert_eq!(
        condition_error("a = 1)"),
        "column 6: expected an operator or end of input, found ')'"
    );
    assert_eq!(condition_error("a = 'x"), "column 5: unterminated string");
    assert_eq!(condition_error("a = @"), "column 5: invalid symbol '@'");
    assert_eq!(
        condition_error("a[0] = 1"),
        "column 1: expected an expression, found 'a[0]'"
    );
    assert_eq!(
        condition_error("{$a"),
        "column 4: expected '}', found end of input"
    );
    assert_eq!(
        condition_error("{a}"),
        "column 2: expected a $property after '{', found 'a'"
    );
    assert_eq!(
        condition_error(""),
        "column 1: expected an expression, found end of input"
    );
    assert_eq!(
        condition_error("é = @"),
        "column 5: invalid symbol '@'",
        "columns count chars"
    );
}

#[test]
fn comments_inside_conditions() {
    assert_eq!(eval("1 /* one */ + /* two */ 2"), num(3.0));
}
