//! Running a query over a set of documents: filtering, projection and aggregation.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::ast::{Aggregate, ArithOp, Query, Select, SelectItem};
use crate::error::QueryError;
use crate::eval::{arith, lookup, order};

impl Query {
    /// Whether `doc` passes the `WHERE` condition (always `true` without one).
    pub fn matches(&self, doc: &Value) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|filter| filter.matches(doc))
    }

    /// Whether this query aggregates (has an aggregate in its SELECT list or a `GROUP BY`).
    pub fn is_aggregate(&self) -> bool {
        self.group_by.is_some()
            || matches!(&self.select, Select::Items(items)
                if items.iter().any(|i| matches!(i, SelectItem::Aggregate { .. })))
    }

    /// The SELECT list applied to one document: `*` gives a clone of the document; otherwise an
    /// object mapping each path item's alias (or last path segment) to its value, leaving out
    /// undefined values. Aggregate items are ignored here (see [`Query::run`]).
    pub fn project(&self, doc: &Value) -> Value {
        let Select::Items(items) = &self.select else {
            return doc.clone();
        };
        let mut out = Map::new();
        for item in items {
            if let SelectItem::Path { path, .. } = item
                && let (Some(value), Some(name)) = (lookup(doc, path), item.output_name())
            {
                out.insert(name.to_owned(), value.clone());
            }
        }
        Value::Object(out)
    }

    /// Filters `docs` and projects each match, or, for an aggregating query, returns one object
    /// per group (a single object without `GROUP BY`, even when nothing matches) holding the
    /// group key and the aggregate values. Unnamed aggregates are named `$1`, `$2`, ... in
    /// SELECT-list order, as IoT Hub does.
    ///
    /// Fails with [`QueryError::InvalidSelect`] when the SELECT list does not fit the
    /// aggregation (only possible for a [`Query`] built by hand; [`crate::parse`] checks it).
    pub fn run(&self, docs: &[Value]) -> Result<Vec<Value>, QueryError> {
        validate_select(&self.select, self.group_by.as_deref(), None)?;
        let matching = docs.iter().filter(|doc| self.matches(doc));
        if !self.is_aggregate() {
            return Ok(matching.map(|doc| self.project(doc)).collect());
        }
        let items: &[SelectItem] = match &self.select {
            Select::Items(items) => items,
            Select::All => &[],
        };
        let Some(group_path) = self.group_by.as_deref() else {
            let all: Vec<&Value> = matching.collect();
            return Ok(vec![aggregate_row(items, None, &all)]);
        };
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut groups: Vec<(Option<&Value>, Vec<&Value>)> = Vec::new();
        for doc in matching {
            let key = lookup(doc, group_path);
            // Undefined keys get "", which no serialized JSON value equals.
            let canonical = key.map(Value::to_string).unwrap_or_default();
            let slot = *index.entry(canonical).or_insert_with(|| {
                groups.push((key, Vec::new()));
                groups.len() - 1
            });
            if let Some((_, members)) = groups.get_mut(slot) {
                members.push(doc);
            }
        }
        Ok(groups
            .into_iter()
            .map(|(key, members)| aggregate_row(items, Some((group_path, key)), &members))
            .collect())
    }
}

/// One result object of an aggregating query. `group` is the GROUP BY path and this group's key.
fn aggregate_row(
    items: &[SelectItem],
    group: Option<(&[String], Option<&Value>)>,
    docs: &[&Value],
) -> Value {
    let mut out = Map::new();
    if let Some((path, Some(key))) = group {
        let selected_name = items.iter().find_map(|item| match item {
            SelectItem::Path { path: p, .. } if p.as_slice() == path => item.output_name(),
            _ => None,
        });
        if let Some(name) = selected_name.or_else(|| path.last().map(String::as_str)) {
            out.insert(name.to_owned(), key.clone());
        }
    }
    let mut unnamed = 0usize;
    for item in items {
        let SelectItem::Aggregate { func, alias } = item else {
            continue;
        };
        let name = alias.clone().unwrap_or_else(|| {
            unnamed += 1;
            format!("${unnamed}")
        });
        if let Some(value) = aggregate(func, docs) {
            out.insert(name, value);
        }
    }
    Value::Object(out)
}

fn aggregate(func: &Aggregate, docs: &[&Value]) -> Option<Value> {
    let values = |path: &[String]| -> Vec<Value> {
        docs.iter()
            .filter_map(|doc| lookup(doc, path))
            .filter(|v| v.is_number())
            .cloned()
            .collect()
    };
    match func {
        Aggregate::Count => Some(Value::from(docs.len())),
        Aggregate::Sum(path) => sum(&values(path)),
        Aggregate::Avg(path) => {
            let numbers = values(path);
            let total = sum(&numbers)?.as_f64()?;
            if numbers.is_empty() {
                return None;
            }
            serde_json::Number::from_f64(total / numbers.len() as f64).map(Value::Number)
        }
        Aggregate::Min(path) => extreme(docs, path, Ordering::Less),
        Aggregate::Max(path) => extreme(docs, path, Ordering::Greater),
    }
}

fn sum(numbers: &[Value]) -> Option<Value> {
    numbers
        .iter()
        .try_fold(Value::from(0), |acc, v| arith(ArithOp::Add, &acc, v))
}

/// The smallest (`want = Less`) or largest number at `path`, or, without numbers, string.
fn extreme(docs: &[&Value], path: &[String], want: Ordering) -> Option<Value> {
    let present: Vec<&Value> = docs.iter().filter_map(|doc| lookup(doc, path)).collect();
    let pick = |candidates: Vec<&Value>| {
        candidates
            .into_iter()
            .reduce(|best, v| {
                if order(v, best) == Some(want) {
                    v
                } else {
                    best
                }
            })
            .cloned()
    };
    let numbers: Vec<&Value> = present.iter().copied().filter(|v| v.is_number()).collect();
    if !numbers.is_empty() {
        return pick(numbers);
    }
    pick(present.into_iter().filter(|v| v.is_string()).collect())
}

/// Checks that the SELECT list fits the aggregation: with an aggregate or `GROUP BY`, the only
/// plain path allowed is the GROUP BY path, and `*` is not allowed with `GROUP BY`. `positions`
/// holds the start of each item in the query text, when known.
pub(crate) fn validate_select(
    select: &Select,
    group_by: Option<&[String]>,
    positions: Option<&[usize]>,
) -> Result<(), QueryError> {
    let items = match select {
        Select::All if group_by.is_some() => {
            return Err(QueryError::InvalidSelect {
                pos: positions.and_then(|p| p.first().copied()),
                reason: "SELECT * cannot be combined with GROUP BY".to_owned(),
            });
        }
        Select::All => return Ok(()),
        Select::Items(items) => items,
    };
    let aggregating = group_by.is_some()
        || items
            .iter()
            .any(|i| matches!(i, SelectItem::Aggregate { .. }));
    if !aggregating {
        return Ok(());
    }
    for (n, item) in items.iter().enumerate() {
        let SelectItem::Path { path, .. } = item else {
            continue;
        };
        let reason = match group_by {
            Some(group) if group == path.as_slice() => continue,
            Some(group) => format!(
                "'{}' must be the GROUP BY path '{}' to be selected",
                path.join("."),
                group.join(".")
            ),
            None => format!(
                "'{}' cannot be selected next to an aggregate without GROUP BY",
                path.join(".")
            ),
        };
        let pos = positions.and_then(|p| p.get(n).copied());
        return Err(QueryError::InvalidSelect { pos, reason });
    }
    Ok(())
}
