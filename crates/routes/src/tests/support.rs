//! Helpers to build messages and evaluate conditions in tests.

use std::collections::BTreeMap;

use crate::{Message, Source, Value, parse_condition};

/// An owned message that lends out a [`Message`] view.
#[derive(Debug, Clone, Default)]
pub(crate) struct Msg {
    module: Option<(String, Option<String>)>,
    twin: bool,
    system: BTreeMap<String, String>,
    app: BTreeMap<String, Option<String>>,
    body: Vec<u8>,
}

impl Msg {
    /// Telemetry from a leaf device.
    pub(crate) fn device() -> Self {
        Msg::default().sys("connectionDeviceId", "leaf1")
    }

    /// A message from `module`, on `output` if given.
    pub(crate) fn module(module: &str, output: Option<&str>) -> Self {
        let mut msg = Msg::default()
            .sys("connectionDeviceId", "edge1")
            .sys("connectionModuleId", module);
        if let Some(output) = output {
            msg = msg.sys("outputName", output);
        }
        msg.module = Some((module.to_owned(), output.map(str::to_owned)));
        msg
    }

    /// A twin change notification.
    pub(crate) fn twin() -> Self {
        Msg {
            twin: true,
            ..Msg::default()
        }
    }

    pub(crate) fn sys(mut self, name: &str, value: &str) -> Self {
        self.system.insert(name.to_owned(), value.to_owned());
        self
    }

    pub(crate) fn app(mut self, name: &str, value: &str) -> Self {
        self.app.insert(name.to_owned(), Some(value.to_owned()));
        self
    }

    pub(crate) fn app_null(mut self, name: &str) -> Self {
        self.app.insert(name.to_owned(), None);
        self
    }

    pub(crate) fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }

    /// A UTF-8 JSON body with the matching content type and encoding.
    pub(crate) fn json(self, body: &str) -> Self {
        self.sys("contentType", "application/json")
            .sys("contentEncoding", "utf-8")
            .body(body.as_bytes())
    }

    pub(crate) fn view(&self) -> Message<'_> {
        let source = match (&self.module, self.twin) {
            (_, true) => Source::TwinChangeNotifications,
            (Some((module, output)), _) => Source::Module {
                module,
                output: output.as_deref(),
            },
            (None, _) => Source::Device,
        };
        Message {
            source,
            system: &self.system,
            app: &self.app,
            body: &self.body,
        }
    }
}

/// Parses `condition` (panicking on errors) and evaluates it against `msg`.
pub(crate) fn eval_on(condition: &str, msg: &Msg) -> Value {
    match parse_condition(condition) {
        Ok(expr) => expr.evaluate(&msg.view()),
        Err(e) => panic!("{condition:?} did not parse: {e}"),
    }
}

/// Evaluates a condition that does not depend on the message.
pub(crate) fn eval(condition: &str) -> Value {
    eval_on(condition, &Msg::device())
}

pub(crate) fn num(n: f64) -> Value {
    Value::Number(n)
}

pub(crate) fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

/// The error message of a condition that must not parse, as `column N: message`.
pub(crate) fn condition_error(condition: &str) -> String {
    match parse_condition(condition) {
        Ok(expr) => panic!("{condition:?} parsed as {expr:?}"),
        Err(e) => e.to_string(),
    }
}
