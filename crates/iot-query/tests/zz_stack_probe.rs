#![allow(clippy::unwrap_used)]
#[test]
fn probe() {
    eprintln!(
        "SIZES expr {} err {} res {} value {}",
        size_of::<iot_query::Expr>(),
        size_of::<iot_query::QueryError>(),
        size_of::<Result<iot_query::Expr, iot_query::QueryError>>(),
        size_of::<serde_json::Value>()
    );
}
