//! Expression parsing by precedence climbing.
//!
//! Each parenthesis, `NOT`, unary minus and function call costs a handful of stack frames and
//! one nesting level; operator chains are loops, and each arithmetic operator adds one nesting
//! level because it deepens the (left-leaning) tree.

use serde_json::Value;

use super::Parser;
use crate::ast::{ArithOp, CompareOp, Expr, Function};
use crate::error::QueryError;
use crate::eval::negate;
use crate::lexer::Tok;

const OR_PREC: u8 = 1;
const AND_PREC: u8 = 2;
const NOT_PREC: u8 = 3;
const CMP_PREC: u8 = 4;
const ADD_PREC: u8 = 5;
const MUL_PREC: u8 = 6;
const UNARY_PREC: u8 = 7;

/// A binary (infix) operator.
#[derive(Clone, Copy)]
enum Infix {
    Or,
    And,
    Compare(CompareOp),
    In { negated: bool },
    Arith(ArithOp),
}

impl Infix {
    fn precedence(self) -> u8 {
        match self {
            Infix::Or => OR_PREC,
            Infix::And => AND_PREC,
            Infix::Compare(_) | Infix::In { .. } => CMP_PREC,
            Infix::Arith(ArithOp::Add | ArithOp::Sub) => ADD_PREC,
            Infix::Arith(_) => MUL_PREC,
        }
    }
}

impl Parser<'_> {
    /// The operator at the current token, if any.
    fn infix(&self) -> Option<Infix> {
        let op = match self.peek() {
            Tok::Eq => Infix::Compare(CompareOp::Eq),
            Tok::Ne => Infix::Compare(CompareOp::Ne),
            Tok::Lt => Infix::Compare(CompareOp::Lt),
            Tok::Gt => Infix::Compare(CompareOp::Gt),
            Tok::Le => Infix::Compare(CompareOp::Le),
            Tok::Ge => Infix::Compare(CompareOp::Ge),
            Tok::Plus => Infix::Arith(ArithOp::Add),
            Tok::Minus => Infix::Arith(ArithOp::Sub),
            Tok::Star => Infix::Arith(ArithOp::Mul),
            Tok::Slash => Infix::Arith(ArithOp::Div),
            Tok::Percent => Infix::Arith(ArithOp::Rem),
            Tok::Ident(_) if self.at_keyword("OR") => Infix::Or,
            Tok::Ident(_) if self.at_keyword("AND") => Infix::And,
            Tok::Ident(_) if self.at_keyword("IN") => Infix::In { negated: false },
            Tok::Ident(_) if self.at_keyword("NIN") => Infix::In { negated: true },
            _ => return None,
        };
        Some(op)
    }

    /// Fails unless an operand can start here; the message names the operator just read.
    fn expect_operand(&self) -> Result<(), QueryError> {
        if self.can_start_value() {
            return Ok(());
        }
        let previous = self
            .idx
            .checked_sub(1)
            .and_then(|i| self.toks.get(i))
            .and_then(|t| self.text.get(t.start..t.end))
            .unwrap_or("?");
        let noun = if previous.chars().all(char::is_alphabetic) {
            "a condition"
        } else {
            "a value"
        };
        Err(self.error(format!("{noun} after '{previous}'")))
    }

    /// An expression whose operators all bind at least as tightly as `min_prec` (0: any).
    ///
    /// This function, [`Parser::prefix`] and [`Parser::primary`] sit on the stack once per
    /// nesting level, so their bodies are kept small: work that is not needed on every level
    /// lives in helpers.
    pub(super) fn expr(&mut self, min_prec: u8) -> Result<Expr, QueryError> {
        // `NOT a = 1` already holds its comparison: `NOT a = 1 = 2` must not parse either.
        let mut compared = self.at_keyword("NOT");
        let mut lhs = self.prefix(min_prec)?;
        let depth_before = self.depth;
        while let Some(op) = self.infix() {
            let prec = op.precedence();
            // Comparisons do not chain: `a = b = c` stops before the second `=`.
            if prec < min_prec || (compared && prec == CMP_PREC) {
                break;
            }
            self.bump();
            lhs = self.infix_rhs(op, lhs)?;
            compared |= prec == CMP_PREC;
        }
        self.depth = depth_before;
        Ok(lhs)
    }

    /// Parses the right-hand side of `op` (already consumed) and combines it with `lhs`.
    fn infix_rhs(&mut self, op: Infix, lhs: Expr) -> Result<Expr, QueryError> {
        if let Infix::In { negated } = op {
            let list = self.literal_list()?;
            return Ok(Expr::In {
                expr: Box::new(lhs),
                list,
                negated,
            });
        }
        self.expect_operand()?;
        if let Infix::Arith(_) = op {
            // Chained arithmetic deepens the tree; the caller restores the depth.
            self.enter()?;
        }
        let rhs = self.expr(op.precedence() + 1)?;
        Ok(match op {
            Infix::Compare(op) => Expr::Compare {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            },
            Infix::Arith(op) => Expr::Arith {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            },
            _ => join(op, lhs, rhs),
        })
    }

    /// `NOT` (only where a condition may appear), unary minus, or a primary expression.
    fn prefix(&mut self, min_prec: u8) -> Result<Expr, QueryError> {
        if self.at_keyword("NOT") {
            self.not(min_prec)
        } else if self.eat(&Tok::Minus) {
            self.negation()
        } else {
            self.primary()
        }
    }

    /// `NOT condition`; the current token is `NOT`.
    fn not(&mut self, min_prec: u8) -> Result<Expr, QueryError> {
        if min_prec > NOT_PREC {
            return Err(self.error("a value"));
        }
        self.bump();
        self.expect_operand()?;
        self.enter()?;
        let inner = self.expr(NOT_PREC)?;
        self.leave();
        Ok(Expr::Not(Box::new(inner)))
    }

    /// The operand of a unary minus (already consumed); negative literals are folded.
    fn negation(&mut self) -> Result<Expr, QueryError> {
        self.expect_operand()?;
        self.enter()?;
        let inner = self.prefix(UNARY_PREC)?;
        self.leave();
        if let Expr::Literal(value) = &inner
            && let Some(negated) = negate(value)
        {
            return Ok(Expr::Literal(negated));
        }
        Ok(Expr::Neg(Box::new(inner)))
    }

    /// A literal, a parenthesized expression, a function call or a property path.
    fn primary(&mut self) -> Result<Expr, QueryError> {
        match self.peek() {
            Tok::LParen => self.parenthesized(),
            Tok::Ident(_) if matches!(self.peek_at(1), Tok::LParen) => self.call(),
            Tok::Str(_) | Tok::Num(_) | Tok::Ident(_) => self.leaf(),
            _ => Err(self.error("a value")),
        }
    }

    /// `'(' expr ')'`; the current token is `(`.
    fn parenthesized(&mut self) -> Result<Expr, QueryError> {
        self.bump();
        self.expect_operand()?;
        self.enter()?;
        let inner = self.expr(0)?;
        self.leave();
        self.expect(&Tok::RParen, "an operator or ')'")?;
        Ok(inner)
    }

    /// A string, number, `true` / `false` / `null`, or a property path.
    fn leaf(&mut self) -> Result<Expr, QueryError> {
        let literal = match self.peek() {
            Tok::Str(s) => Value::String(s.clone()),
            Tok::Num(n) => Value::Number(n.clone()),
            _ => match self.keyword_literal() {
                Some(value) => value,
                None => return Ok(Expr::Path(self.path("a value")?)),
            },
        };
        self.bump();
        Ok(Expr::Literal(literal))
    }

    /// `true`, `false` or `null` at the current token.
    fn keyword_literal(&self) -> Option<Value> {
        let Tok::Ident(word) = self.peek() else {
            return None;
        };
        [
            ("TRUE", Value::Bool(true)),
            ("FALSE", Value::Bool(false)),
            ("NULL", Value::Null),
        ]
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(word))
        .map(|(_, v)| v)
    }

    /// `name '(' [expr (',' expr)*] ')'`; the current token is the name.
    fn call(&mut self) -> Result<Expr, QueryError> {
        let pos = self.pos();
        let Tok::Ident(name) = self.bump() else {
            return Err(self.error("a function name"));
        };
        let Some(func) = Function::from_name(&name) else {
            return Err(QueryError::UnknownFunction { pos, name });
        };
        self.bump();
        self.enter()?;
        let args = self.arguments()?;
        self.leave();
        if args.len() != func.arity() {
            return Err(QueryError::WrongArity {
                pos,
                name: func.name(),
                expected: func.arity(),
                found: args.len(),
            });
        }
        Ok(Expr::Call { func, args })
    }

    /// Arguments after '(' up to and including ')'.
    fn arguments(&mut self) -> Result<Vec<Expr>, QueryError> {
        let mut args = Vec::new();
        if self.eat(&Tok::RParen) {
            return Ok(args);
        }
        loop {
            self.expect_value_start("a function argument")?;
            args.push(self.expr(0)?);
            if self.eat(&Tok::RParen) {
                return Ok(args);
            }
            self.expect(&Tok::Comma, "',' or ')'")?;
        }
    }

    /// `'[' [literal (',' literal)*] ']'` after IN / NIN.
    fn literal_list(&mut self) -> Result<Vec<Value>, QueryError> {
        self.expect(&Tok::LBracket, "'[' after IN")?;
        let mut list = Vec::new();
        if self.eat(&Tok::RBracket) {
            return Ok(list);
        }
        loop {
            list.push(self.list_value()?);
            if self.eat(&Tok::RBracket) {
                return Ok(list);
            }
            self.expect(&Tok::Comma, "',' or ']'")?;
        }
    }

    fn list_value(&mut self) -> Result<Value, QueryError> {
        let negative = self.eat(&Tok::Minus);
        let value = match self.peek() {
            Tok::Num(n) => Value::Number(n.clone()),
            Tok::Str(s) if !negative => Value::String(s.clone()),
            Tok::Ident(_) if !negative => match self.keyword_literal() {
                Some(v) => v,
                None => return Err(self.error("a literal value in the list")),
            },
            _ => return Err(self.error("a literal value in the list")),
        };
        self.bump();
        if negative {
            return negate(&value).ok_or_else(|| self.error("a negatable number"));
        }
        Ok(value)
    }
}

/// `lhs AND rhs` / `lhs OR rhs`, extending `lhs` when it already is such a list.
fn join(op: Infix, lhs: Expr, rhs: Expr) -> Expr {
    match (op, lhs) {
        (Infix::And, Expr::And(mut items)) | (Infix::Or, Expr::Or(mut items)) => {
            items.push(rhs);
            if matches!(op, Infix::And) {
                Expr::And(items)
            } else {
                Expr::Or(items)
            }
        }
        (Infix::And, lhs) => Expr::And(vec![lhs, rhs]),
        (_, lhs) => Expr::Or(vec![lhs, rhs]),
    }
}
