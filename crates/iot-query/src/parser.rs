//! Recursive-descent parser for the query structure; expressions are in [`expr`]. Recursion is
//! bounded by [`MAX_DEPTH`], which also bounds the depth of the resulting tree (and hence of
//! evaluation and drop).

mod expr;

use crate::ast::{Aggregate, Expr, Query, Select, SelectItem, Source};
use crate::error::{MAX_DEPTH, QueryError};
use crate::lexer::{Tok, Token, check_limits, tokenize};
use crate::run::validate_select;

/// Words that cannot start a property path (they may still follow a `.`).
const RESERVED: [&str; 14] = [
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "AS", "GROUP", "BY", "IN", "NIN", "TRUE",
    "FALSE", "NULL",
];

const MAX_FOUND_CHARS: usize = 40;

/// Parses a full query.
pub(crate) fn parse_query(text: &str) -> Result<Query, QueryError> {
    Parser::new(text)?.query()
}

/// Parses a bare condition (route conditions).
pub(crate) fn parse_expr(text: &str) -> Result<Expr, QueryError> {
    let mut parser = Parser::new(text)?;
    parser.expect_value_start("a condition")?;
    let expr = parser.expr(0)?;
    if !matches!(parser.peek(), Tok::Eof) {
        return Err(parser.error("AND, OR or end of query"));
    }
    Ok(expr)
}

fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(word))
}

struct Parser<'a> {
    text: &'a str,
    toks: Vec<Token>,
    idx: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Result<Self, QueryError> {
        check_limits(text)?;
        Ok(Parser {
            text,
            toks: tokenize(text)?,
            idx: 0,
            depth: 0,
        })
    }

    // ----- token helpers -------------------------------------------------------------------

    fn peek_at(&self, ahead: usize) -> &Tok {
        self.toks
            .get(self.idx + ahead)
            .or_else(|| self.toks.last())
            .map_or(&Tok::Eof, |t| &t.tok)
    }

    fn peek(&self) -> &Tok {
        self.peek_at(0)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.idx).map_or(self.text.len(), |t| t.start)
    }

    fn bump(&mut self) -> Tok {
        let tok = self.peek().clone();
        if self.idx < self.toks.len() {
            self.idx += 1;
        }
        tok
    }

    fn at_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(w) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        let at = self.at_keyword(kw);
        if at {
            self.bump();
        }
        at
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        let at = self.peek() == tok;
        if at {
            self.bump();
        }
        at
    }

    /// A syntax error at the current token.
    fn error(&self, expected: impl Into<String>) -> QueryError {
        let found = match self.toks.get(self.idx) {
            None | Some(Token { tok: Tok::Eof, .. }) => "end of query".to_owned(),
            Some(t) => {
                let written = self.text.get(t.start..t.end).unwrap_or("?");
                let mut shown: String = written.chars().take(MAX_FOUND_CHARS).collect();
                if shown.len() < written.len() {
                    shown.push_str("...");
                }
                format!("'{shown}'")
            }
        };
        QueryError::Syntax {
            pos: self.pos(),
            expected: expected.into(),
            found,
        }
    }

    fn expect(&mut self, tok: &Tok, expected: &str) -> Result<(), QueryError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn expect_keyword(&mut self, kw: &str, expected: &str) -> Result<(), QueryError> {
        if self.eat_keyword(kw) {
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    /// Whether the current token can begin an expression.
    fn can_start_value(&self) -> bool {
        match self.peek() {
            Tok::Str(_) | Tok::Num(_) | Tok::LParen | Tok::Minus => true,
            Tok::Ident(w) => {
                !is_reserved(w)
                    || ["NOT", "TRUE", "FALSE", "NULL"]
                        .iter()
                        .any(|k| k.eq_ignore_ascii_case(w))
            }
            _ => false,
        }
    }

    /// Fails with "expected {what}" unless the current token can begin an expression.
    fn expect_value_start(&self, what: &str) -> Result<(), QueryError> {
        if self.can_start_value() {
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    /// Enters one nesting level, failing past [`MAX_DEPTH`].
    fn enter(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(QueryError::TooDeep {
                pos: self.pos(),
                max: MAX_DEPTH,
            });
        }
        Ok(())
    }

    /// Leaves a nesting level entered with [`Parser::enter`].
    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    // ----- query structure -----------------------------------------------------------------

    fn query(&mut self) -> Result<Query, QueryError> {
        self.expect_keyword("SELECT", "SELECT")?;
        let (select, positions) = self.select_list()?;
        self.expect_keyword("FROM", "',' or FROM after the SELECT list")?;
        let source = self.source()?;
        let filter = if self.eat_keyword("WHERE") {
            self.expect_value_start("a condition after WHERE")?;
            Some(self.expr(0)?)
        } else {
            None
        };
        let group_by = if self.eat_keyword("GROUP") {
            self.expect_keyword("BY", "BY after GROUP")?;
            Some(self.path("a property path after GROUP BY")?)
        } else {
            None
        };
        if !matches!(self.peek(), Tok::Eof) {
            let expected = match (&filter, &group_by) {
                (None, None) => "WHERE, GROUP BY or end of query",
                (Some(_), None) => "AND, OR, GROUP BY or end of query",
                _ => "end of query",
            };
            return Err(self.error(expected));
        }
        validate_select(&select, group_by.as_deref(), Some(&positions))?;
        Ok(Query {
            select,
            source,
            filter,
            group_by,
        })
    }

    /// The SELECT list, with the start position of each item (for error messages).
    fn select_list(&mut self) -> Result<(Select, Vec<usize>), QueryError> {
        let star = self.pos();
        if self.eat(&Tok::Star) {
            return Ok((Select::All, vec![star]));
        }
        let mut items = Vec::new();
        let mut positions = Vec::new();
        let mut context = "'*', a property path or an aggregate after SELECT";
        loop {
            positions.push(self.pos());
            items.push(self.select_item(context)?);
            if !self.eat(&Tok::Comma) {
                return Ok((Select::Items(items), positions));
            }
            context = "a property path or an aggregate after ','";
        }
    }

    fn select_item(&mut self, context: &str) -> Result<SelectItem, QueryError> {
        let is_call = matches!(self.peek_at(1), Tok::LParen);
        let item = match self.peek() {
            Tok::Ident(name) if is_call => {
                let name = name.clone();
                let func = self.aggregate(&name)?;
                SelectItem::Aggregate { func, alias: None }
            }
            Tok::Ident(name) if !is_reserved(name) => SelectItem::Path {
                path: self.path(context)?,
                alias: None,
            },
            _ => return Err(self.error(context)),
        };
        if !self.eat_keyword("AS") {
            return Ok(item);
        }
        let alias = match self.peek() {
            Tok::Ident(name) if !is_reserved(name) => name.clone(),
            _ => return Err(self.error("a name after AS")),
        };
        self.bump();
        Ok(match item {
            SelectItem::Path { path, .. } => SelectItem::Path {
                path,
                alias: Some(alias),
            },
            SelectItem::Aggregate { func, .. } => SelectItem::Aggregate {
                func,
                alias: Some(alias),
            },
        })
    }

    /// `COUNT()` or `AVG|SUM|MIN|MAX(path)`; the current token is the name.
    fn aggregate(&mut self, name: &str) -> Result<Aggregate, QueryError> {
        let pos = self.pos();
        let upper = name.to_ascii_uppercase();
        let wrap: fn(Vec<String>) -> Aggregate = match upper.as_str() {
            "COUNT" => {
                self.bump();
                self.bump();
                self.expect(&Tok::RParen, "')' after COUNT(")?;
                return Ok(Aggregate::Count);
            }
            "AVG" => Aggregate::Avg,
            "SUM" => Aggregate::Sum,
            "MIN" => Aggregate::Min,
            "MAX" => Aggregate::Max,
            _ => {
                return Err(QueryError::UnknownFunction {
                    pos,
                    name: name.to_owned(),
                });
            }
        };
        self.bump();
        self.bump();
        let path = self.path(&format!("a property path inside {upper}("))?;
        self.expect(&Tok::RParen, "')'")?;
        Ok(wrap(path))
    }

    fn source(&mut self) -> Result<Source, QueryError> {
        let pos = self.pos();
        let name = match self.peek() {
            Tok::Ident(name) if !is_reserved(name) => name.clone(),
            _ => return Err(self.error("devices, devices.modules or devices.jobs after FROM")),
        };
        self.bump();
        let unknown = |name: String| QueryError::UnknownSource { pos, name };
        if !name.eq_ignore_ascii_case("devices") {
            return Err(unknown(name));
        }
        if !self.eat(&Tok::Dot) {
            return Ok(Source::Devices);
        }
        let sub = match self.bump() {
            Tok::Ident(sub) => sub,
            _ => return Err(unknown(format!("{name}."))),
        };
        if sub.eq_ignore_ascii_case("modules") {
            Ok(Source::Modules)
        } else if sub.eq_ignore_ascii_case("jobs") {
            Ok(Source::Jobs)
        } else {
            Err(unknown(format!("{name}.{sub}")))
        }
    }

    /// `ident ('.' ident | '[' string-or-index ']')*`.
    fn path(&mut self, context: &str) -> Result<Vec<String>, QueryError> {
        let mut segments = match self.peek() {
            Tok::Ident(name) if !is_reserved(name) => vec![name.clone()],
            _ => return Err(self.error(context)),
        };
        self.bump();
        loop {
            if self.eat(&Tok::Dot) {
                let Tok::Ident(name) = self.peek() else {
                    return Err(self.error("a property name after '.'"));
                };
                segments.push(name.clone());
                self.bump();
            } else if self.eat(&Tok::LBracket) {
                segments.push(self.bracket_segment()?);
            } else {
                return Ok(segments);
            }
        }
    }

    fn bracket_segment(&mut self) -> Result<String, QueryError> {
        let segment = match self.peek() {
            Tok::Str(s) => s.clone(),
            Tok::Num(n) if n.is_u64() => n.to_string(),
            _ => return Err(self.error("a quoted property name or an index after '['")),
        };
        self.bump();
        self.expect(&Tok::RBracket, "']'")?;
        Ok(segment)
    }
}
