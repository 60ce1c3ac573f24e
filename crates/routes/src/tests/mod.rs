//! Unit tests.

mod body;
mod builtins;
mod conditions;
mod config;
mod fuzz;
mod lexing;
mod routes;
mod support;
