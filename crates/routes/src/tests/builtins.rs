//! Every built-in function, its arity checks and its undefined results.

use super::support::{condition_error, eval, num, string};
use crate::{Function, Value};

#[test]
fn math_functions() {
    assert_eq!(eval("abs(-2.5)"), num(2.5));
    assert_eq!(eval("exp(0)"), num(1.0));
    assert_eq!(eval("power(2, 10)"), num(1024.0));
    assert_eq!(eval("square(-3)"), num(9.0));
    assert_eq!(eval("ceiling(1.2)"), num(2.0));
    assert_eq!(eval("ceiling(-1.2)"), num(-1.0));
    assert_eq!(eval("floor(1.8)"), num(1.0));
    assert_eq!(eval("floor(-1.2)"), num(-2.0));
    assert_eq!(eval("sign(-4)"), num(-1.0));
    assert_eq!(eval("sign(0)"), num(0.0));
    assert_eq!(eval("sign(7)"), num(1.0));
    assert_eq!(eval("sqrt(16)"), num(4.0));
    assert_eq!(eval("sqrt(-1)"), Value::Undefined);
    for f in ["abs", "exp", "square", "ceiling", "floor", "sign", "sqrt"] {
        assert_eq!(eval(&format!("{f}('1')")), Value::Undefined, "{f}");
        assert_eq!(eval(&format!("{f}(missing)")), Value::Undefined, "{f}");
    }
    assert_eq!(eval("power('2', 2)"), Value::Undefined);
}

#[test]
fn type_functions() {
    assert_eq!(eval("as_number('42')"), num(42.0));
    assert_eq!(eval("as_number(' -1.5e1 ')"), num(-15.0));
    assert_eq!(eval("as_number(7)"), num(7.0));
    assert_eq!(eval("as_number('abc')"), Value::Undefined);
    assert_eq!(eval("as_number('inf')"), Value::Undefined);
    assert_eq!(eval("as_number(true)"), Value::Undefined);
    assert_eq!(eval("as_number('30') > 20"), Value::Bool(true));
    assert_eq!(eval("is_bool(false)"), Value::Bool(true));
    assert_eq!(eval("is_bool('true')"), Value::Bool(false));
    assert_eq!(eval("is_defined(1)"), Value::Bool(true));
    assert_eq!(eval("is_defined(null)"), Value::Bool(true));
    assert_eq!(eval("is_defined(missing)"), Value::Bool(false));
    assert_eq!(eval("is_null(null)"), Value::Bool(true));
    assert_eq!(eval("is_null(missing)"), Value::Bool(false));
    assert_eq!(eval("is_null('')"), Value::Bool(false));
    assert_eq!(eval("is_number(1.5)"), Value::Bool(true));
    assert_eq!(eval("is_number('1')"), Value::Bool(false));
    assert_eq!(eval("is_number(1 / 0)"), Value::Bool(false));
    assert_eq!(eval("is_string('')"), Value::Bool(true));
    assert_eq!(eval("is_string(1)"), Value::Bool(false));
}

#[test]
fn string_functions() {
    assert_eq!(eval("concat('a', 'b')"), string("ab"));
    assert_eq!(eval("concat('a', 'b', 'c', 'd')"), string("abcd"));
    assert_eq!(eval("concat('a', 1)"), Value::Undefined);
    assert_eq!(eval("length('héllo')"), num(5.0));
    assert_eq!(eval("length(5)"), Value::Undefined);
    assert_eq!(eval("lower('AbC')"), string("abc"));
    assert_eq!(eval("upper('AbC')"), string("ABC"));
    assert_eq!(eval("index_of('hello', 'll')"), num(2.0));
    assert_eq!(eval("index_of('héllo', 'l')"), num(2.0));
    assert_eq!(eval("index_of('hello', 'z')"), num(-1.0));
    assert_eq!(eval("starts_with('hello', 'he')"), Value::Bool(true));
    assert_eq!(eval("starts_with('hello', 'He')"), Value::Bool(false));
    assert_eq!(eval("ends_with('hello', 'lo')"), Value::Bool(true));
    assert_eq!(eval("contains('hello', 'ell')"), Value::Bool(true));
    assert_eq!(eval("contains('hello', 'xyz')"), Value::Bool(false));
    assert_eq!(eval("contains(missing, 'x')"), Value::Undefined);
    assert_eq!(eval("starts_with(1, 'x')"), Value::Undefined);
}

#[test]
fn substring_bounds() {
    assert_eq!(eval("substring('hello', 1)"), string("ello"));
    assert_eq!(eval("substring('hello', 5)"), string(""));
    assert_eq!(eval("substring('hello', 6)"), Value::Undefined);
    assert_eq!(eval("substring('hello', -1)"), Value::Undefined);
    assert_eq!(eval("substring('hello', 1, 3)"), string("ell"));
    assert_eq!(eval("substring('hello', 0, 5)"), string("hello"));
    assert_eq!(eval("substring('hello', 1, 5)"), Value::Undefined);
    assert_eq!(eval("substring('hello', 5, 0)"), Value::Undefined);
    assert_eq!(eval("substring('héllo', 1, 2)"), string("él"));
    assert_eq!(eval("substring('hello', 1.9)"), string("ello"));
    assert_eq!(eval("substring('hello', '1')"), Value::Undefined);
}

#[test]
fn function_names_are_case_insensitive() {
    assert_eq!(eval("IS_DEFINED(1)"), Value::Bool(true));
    assert_eq!(eval("Upper('a')"), string("A"));
    assert_eq!(eval("STARTS_WITH('ab', 'a')"), Value::Bool(true));
    assert_eq!(Function::from_name("Index_Of"), Some(Function::IndexOf));
    assert_eq!(Function::IndexOf.name(), "index_of");
}

#[test]
fn arity_is_checked_at_parse_time() {
    assert_eq!(
        condition_error("abs()"),
        "column 1: function 'abs' takes 1 argument, found 0"
    );
    assert_eq!(
        condition_error("x = power(1)"),
        "column 5: function 'power' takes 2 arguments, found 1"
    );
    assert_eq!(
        condition_error("substring('a')"),
        "column 1: function 'substring' takes 2 or 3 arguments, found 1"
    );
    assert_eq!(
        condition_error("concat('a')"),
        "column 1: function 'concat' takes at least 2 arguments, found 1"
    );
    assert_eq!(
        condition_error("abs(1,)"),
        "column 7: expected an expression, found ')'"
    );
    assert_eq!(
        condition_error("abs(1 2)"),
        "column 7: expected ',' or ')', found '2'"
    );
}

#[test]
fn unknown_function_is_a_parse_error_naming_it() {
    assert_eq!(
        condition_error("a = 1 AND frobnicate(a)"),
        "column 11: unknown function 'frobnicate'"
    );
    assert_eq!(
        condition_error("twin_change_includes(properties.desired)"),
        "column 1: unknown function 'twin_change_includes'"
    );
}

#[test]
fn nested_calls() {
    assert_eq!(
        eval("upper(concat(lower('A'), substring('xbc', 1)))"),
        string("ABC")
    );
    assert_eq!(eval("length(concat('ab', 'cd')) * 2"), num(8.0));
}
