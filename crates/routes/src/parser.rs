//! Recursive-descent (precedence-climbing) parser for routes and conditions.
//!
//! Recursion is bounded by [`MAX_DEPTH`] nesting levels, which also bounds the depth of the
//! resulting tree (and hence of evaluation and drop).

use crate::ast::{BinaryOp, Expr, UnaryOp, Value, parse_body_path};
use crate::error::{MAX_DEPTH, MAX_ROUTE_LEN, ParseError};
use crate::functions::Function;
use crate::lexer::{Tok, Token, tokenize};
use crate::route::{Sink, parse_brokered_address};

const MAX_FOUND_CHARS: usize = 40;

/// The parts of a parsed route.
pub(crate) struct ParsedRoute {
    pub(crate) source: String,
    pub(crate) condition: Option<(Expr, String)>,
    pub(crate) sink: Sink,
}

/// Parses `[SELECT *] FROM source [WHERE condition] INTO sink`.
pub(crate) fn parse_route(text: &str) -> Result<ParsedRoute, ParseError> {
    Parser::new(text)?.route()
}

/// Parses a bare condition.
pub(crate) fn parse_condition(text: &str) -> Result<Expr, ParseError> {
    let mut parser = Parser::new(text)?;
    let (expr, _) = parser.expr(1)?;
    parser.expect_end("an operator or end of input")?;
    Ok(expr)
}

/// An expression and the depth of its tree.
type Node = (Expr, usize);

/// Binary operators by precedence (higher binds tighter).
enum Bin {
    Op(BinaryOp),
    And,
    Or,
}

fn binary_op(tok: &Tok) -> Option<(u8, Bin)> {
    let op = match tok {
        Tok::Coalesce => return Some((1, Bin::Op(BinaryOp::Coalesce))),
        Tok::Or => return Some((2, Bin::Or)),
        Tok::And => return Some((3, Bin::And)),
        Tok::Eq => (4, BinaryOp::Eq),
        Tok::Ne => (4, BinaryOp::Ne),
        Tok::Lt => (5, BinaryOp::Lt),
        Tok::Le => (5, BinaryOp::Le),
        Tok::Gt => (5, BinaryOp::Gt),
        Tok::Ge => (5, BinaryOp::Ge),
        Tok::Plus => (6, BinaryOp::Add),
        Tok::Minus => (6, BinaryOp::Sub),
        Tok::Concat => (6, BinaryOp::Concat),
        Tok::Star => (7, BinaryOp::Mul),
        Tok::Slash => (7, BinaryOp::Div),
        Tok::Percent => (7, BinaryOp::Mod),
        _ => return None,
    };
    Some((op.0, Bin::Op(op.1)))
}

struct Parser<'a> {
    text: &'a str,
    toks: Vec<Token>,
    idx: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Result<Self, ParseError> {
        if text.len() > MAX_ROUTE_LEN {
            return Err(ParseError::at(
                text,
                MAX_ROUTE_LEN,
                format!(
                    "route is {} bytes long; at most {MAX_ROUTE_LEN} bytes are allowed",
                    text.len()
                ),
            ));
        }
        Ok(Parser {
            text,
            toks: tokenize(text),
            idx: 0,
            depth: 0,
        })
    }

    // ----- token helpers -------------------------------------------------------------------

    fn token_at(&self, ahead: usize) -> Option<&Token> {
        self.toks.get(self.idx + ahead).or_else(|| self.toks.last())
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        self.token_at(ahead).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn peek(&self) -> &Tok {
        self.peek_at(0)
    }

    fn pos(&self) -> usize {
        self.token_at(0).map_or(self.text.len(), |t| t.start)
    }

    fn bump(&mut self) {
        if self.idx + 1 < self.toks.len() {
            self.idx += 1;
        }
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        let at = self.peek() == tok;
        if at {
            self.bump();
        }
        at
    }

    fn err_at(&self, pos: usize, message: impl Into<String>) -> ParseError {
        ParseError::at(self.text, pos, message)
    }

    /// An error at the current token: its own lexical error, or "expected X, found Y".
    fn error(&self, expected: &str) -> ParseError {
        let Some(token) = self.token_at(0) else {
            return self.err_at(self.text.len(), format!("expected {expected}"));
        };
        let written = self.text.get(token.start..token.end).unwrap_or("?");
        match &token.tok {
            Tok::Error { pos, message } => self.err_at(*pos, *message),
            Tok::Unknown => self.err_at(token.start, format!("invalid symbol '{written}'")),
            Tok::Eof => self.err_at(
                token.start,
                format!("expected {expected}, found end of input"),
            ),
            _ => {
                let mut shown: String = written.chars().take(MAX_FOUND_CHARS).collect();
                if shown.len() < written.len() {
                    shown.push_str("...");
                }
                self.err_at(token.start, format!("expected {expected}, found '{shown}'"))
            }
        }
    }

    fn expect(&mut self, tok: &Tok, expected: &str) -> Result<(), ParseError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn expect_end(&mut self, expected: &str) -> Result<(), ParseError> {
        match self.peek() {
            Tok::Eof => Ok(()),
            _ => Err(self.error(expected)),
        }
    }

    /// Runs `f` one nesting level deeper, refusing to go beyond [`MAX_DEPTH`].
    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.too_deep(self.pos()));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn too_deep(&self, pos: usize) -> ParseError {
        self.err_at(
            pos,
            format!("expression nested deeper than {MAX_DEPTH} levels"),
        )
    }

    // ----- routes ----------------------------------------------------------------------------

    fn route(&mut self) -> Result<ParsedRoute, ParseError> {
        let selected = self.eat(&Tok::Select);
        if selected {
            self.expect(&Tok::Star, "'*' after SELECT")?;
        }
        self.expect(&Tok::From, if selected { "FROM" } else { "SELECT or FROM" })?;
        let source = self.source()?;
        let condition = if self.eat(&Tok::Where) {
            let start = self.pos();
            let (expr, _) = self.expr(1)?;
            let end = self
                .toks
                .get(self.idx.saturating_sub(1))
                .map_or(start, |t| t.end);
            let text = self.text.get(start..end).unwrap_or("").to_owned();
            self.expect(&Tok::Into, "INTO")?;
            Some((expr, text))
        } else {
            self.expect(&Tok::Into, "WHERE or INTO")?;
            None
        };
        let sink = self.sink()?;
        self.expect_end("end of route")?;
        Ok(ParsedRoute {
            source,
            condition,
            sink,
        })
    }

    /// `('/' ('*' | ID))+`, returned as written without whitespace or comments.
    fn source(&mut self) -> Result<String, ParseError> {
        let mut source = String::new();
        if !matches!(self.peek(), Tok::Slash) {
            return Err(self.error("a source starting with '/'"));
        }
        while self.eat(&Tok::Slash) {
            source.push('/');
            match self.peek() {
                Tok::Star => source.push('*'),
                Tok::Id(item) => source.push_str(item),
                _ => return Err(self.error("'*' or a path segment after '/'")),
            }
            self.bump();
        }
        Ok(source)
    }

    /// `$upstream` or `BrokeredEndpoint("/modules/{module}/inputs/{input}")`.
    fn sink(&mut self) -> Result<Sink, ParseError> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::SysProp(name) => {
                if !name.eq_ignore_ascii_case("upstream") {
                    let msg = format!("unsupported system endpoint '${name}'; expected $upstream");
                    return Err(self.err_at(pos, msg));
                }
                self.bump();
                Ok(Sink::Upstream)
            }
            Tok::Id(name) if matches!(self.peek_at(1), Tok::LParen) => {
                if !name.eq_ignore_ascii_case("BrokeredEndpoint") {
                    let msg = format!(
                        "unsupported endpoint function '{name}'; expected BrokeredEndpoint"
                    );
                    return Err(self.err_at(pos, msg));
                }
                self.bump();
                self.bump();
                let address_pos = self.pos();
                let Tok::Str(address) = self.peek().clone() else {
                    return Err(self.error("a quoted endpoint address"));
                };
                self.bump();
                self.expect(&Tok::RParen, "')'")?;
                parse_brokered_address(&address).map_err(|msg| self.err_at(address_pos, msg))
            }
            _ => Err(self.error(
                "a sink ($upstream or BrokeredEndpoint(\"/modules/<module>/inputs/<input>\"))",
            )),
        }
    }

    // ----- expressions -----------------------------------------------------------------------

    /// Binary operators of precedence `min_prec` or higher, left-associative.
    fn expr(&mut self, min_prec: u8) -> Result<Node, ParseError> {
        let mut lhs = self.prefix()?;
        while let Some((prec, op)) = binary_op(self.peek()) {
            if prec < min_prec {
                break;
            }
            let op_pos = self.pos();
            self.bump();
            let rhs = self.expr(prec + 1)?;
            lhs = match op {
                Bin::And => logic(lhs, rhs, true),
                Bin::Or => logic(lhs, rhs, false),
                Bin::Op(op) => {
                    let depth = 1 + lhs.1.max(rhs.1);
                    if depth > MAX_DEPTH {
                        return Err(self.too_deep(op_pos));
                    }
                    (Expr::Binary(op, Box::new(lhs.0), Box::new(rhs.0)), depth)
                }
            };
        }
        Ok(lhs)
    }

    /// `- x` and `NOT x` bind tighter than every binary operator (as in the reference grammar).
    fn prefix(&mut self) -> Result<Node, ParseError> {
        let op = match self.peek() {
            Tok::Minus => UnaryOp::Neg,
            Tok::Not => UnaryOp::Not,
            _ => return self.primary(),
        };
        self.bump();
        let (inner, depth) = self.nested(Self::prefix)?;
        Ok((Expr::Unary(op, Box::new(inner)), depth + 1))
    }

    fn primary(&mut self) -> Result<Node, ParseError> {
        let pos = self.pos();
        let leaf = |e: Expr| Ok((e, 1));
        match self.peek().clone() {
            Tok::LParen => {
                self.bump();
                let node = self.nested(|p| p.expr(1))?;
                self.expect(&Tok::RParen, "')'")?;
                Ok(node)
            }
            Tok::Id(name) if matches!(self.peek_at(1), Tok::LParen) => self.call(&name, pos),
            tok => {
                let expr = match tok {
                    Tok::Str(s) => Expr::Literal(Value::String(s)),
                    Tok::Num(n) => Expr::Literal(n.map_or(Value::Undefined, Value::Number)),
                    Tok::True => Expr::Literal(Value::Bool(true)),
                    Tok::False => Expr::Literal(Value::Bool(false)),
                    Tok::Null => Expr::Literal(Value::Null),
                    Tok::Undefined => Expr::Literal(Value::Undefined),
                    Tok::Id(name) => Expr::AppProperty {
                        name,
                        fallback: None,
                    },
                    Tok::SysProp(name) => self.dollar_property(&name, pos, false)?,
                    Tok::LBrace => return self.escaped_property(),
                    _ => return Err(self.error("an expression")),
                };
                self.bump();
                leaf(expr)
            }
        }
    }

    /// `{$name}`: a system property or `$body` query, never an application property.
    fn escaped_property(&mut self) -> Result<Node, ParseError> {
        self.bump();
        let pos = self.pos();
        let Tok::SysProp(name) = self.peek().clone() else {
            return Err(self.error("a $property after '{'"));
        };
        let expr = self.dollar_property(&name, pos, true)?;
        self.bump();
        self.expect(&Tok::RBrace, "'}'")?;
        Ok((expr, 1))
    }

    /// `$name` (`name` given without the `$`): the application property `$name` if the message
    /// has one, else a `$body.` query or the system property `name`. Names with brackets skip
    /// the application property; outside `$body.` they are always undefined.
    fn dollar_property(&self, name: &str, pos: usize, escaped: bool) -> Result<Expr, ParseError> {
        let bracketed = name.contains(['[', ']']);
        let body_path = name
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("body."))
            .and_then(|_| name.get(5..));
        let target = match body_path {
            Some(path) => Expr::Body(parse_body_path(path).map_err(|m| self.err_at(pos, m))?),
            None if bracketed => Expr::Literal(Value::Undefined),
            None => Expr::SystemProperty(name.to_owned()),
        };
        if escaped || bracketed {
            return Ok(target);
        }
        Ok(Expr::AppProperty {
            name: format!("${name}"),
            fallback: Some(Box::new(target)),
        })
    }

    fn call(&mut self, name: &str, pos: usize) -> Result<Node, ParseError> {
        let Some(function) = Function::from_name(name) else {
            return Err(self.err_at(pos, format!("unknown function '{name}'")));
        };
        self.bump();
        self.bump();
        let mut args = Vec::new();
        let mut depth = 0;
        if !self.eat(&Tok::RParen) {
            loop {
                let (arg, d) = self.nested(|p| p.expr(1))?;
                args.push(arg);
                depth = depth.max(d);
                if self.eat(&Tok::RParen) {
                    break;
                }
                self.expect(&Tok::Comma, "',' or ')'")?;
            }
        }
        check_arity(function, args.len()).map_err(|m| self.err_at(pos, m))?;
        if depth + 1 > MAX_DEPTH {
            return Err(self.too_deep(pos));
        }
        Ok((Expr::Call(function, args), depth + 1))
    }
}

/// Joins `lhs` and `rhs` into one n-ary `AND` / `OR`, flattening chains (so they add no depth).
fn logic(lhs: Node, rhs: Node, is_and: bool) -> Node {
    match (lhs.0, is_and) {
        (Expr::And(mut items), true) | (Expr::Or(mut items), false) => {
            items.push(rhs.0);
            let depth = lhs.1.max(rhs.1 + 1);
            (
                if is_and {
                    Expr::And(items)
                } else {
                    Expr::Or(items)
                },
                depth,
            )
        }
        (other, _) => {
            let items = vec![other, rhs.0];
            let depth = 1 + lhs.1.max(rhs.1);
            (
                if is_and {
                    Expr::And(items)
                } else {
                    Expr::Or(items)
                },
                depth,
            )
        }
    }
}

fn check_arity(function: Function, found: usize) -> Result<(), String> {
    let (min, max) = function.arity();
    if found >= min && max.is_none_or(|max| found <= max) {
        return Ok(());
    }
    let expected = match max {
        Some(max) if max == min && min == 1 => "1 argument".to_owned(),
        Some(max) if max == min => format!("{min} arguments"),
        Some(max) => format!("{min} or {max} arguments"),
        None => format!("at least {min} arguments"),
    };
    Err(format!(
        "function '{}' takes {expected}, found {found}",
        function.name()
    ))
}
