//! Turns query text into tokens (iterative, no recursion).

use serde_json::Number;

use crate::error::{MAX_DEPTH, MAX_QUERY_LEN, QueryError};

/// One lexical token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// An identifier or keyword, as written.
    Ident(String),
    /// A quoted string with its escapes resolved.
    Str(String),
    /// A numeric literal.
    Num(Number),
    Star,
    Comma,
    Dot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Plus,
    Minus,
    Slash,
    Percent,
    Eof,
}

/// A token and the byte range of the text it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Refuses text that nests too deeply or is too long, before any recursive work.
///
/// Nesting is checked first (over at most `MAX_QUERY_LEN + 1` bytes) so that a long run of
/// opening parentheses is reported as what it is. Quotes toggle a "inside a string" state, which
/// also handles doubled-quote escapes correctly.
pub(crate) fn check_limits(text: &str) -> Result<(), QueryError> {
    let bytes = text.as_bytes();
    let scanned = &bytes[..bytes.len().min(MAX_QUERY_LEN + 1)];
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    for (pos, &b) in scanned.iter().enumerate() {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(b),
            (None, b'(' | b'[') => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(QueryError::TooDeep {
                        pos,
                        max: MAX_DEPTH,
                    });
                }
            }
            (None, b')' | b']') => depth = depth.saturating_sub(1),
            (None, _) => {}
        }
    }
    if text.len() > MAX_QUERY_LEN {
        return Err(QueryError::TooLong {
            len: text.len(),
            max: MAX_QUERY_LEN,
        });
    }
    Ok(())
}

/// Splits `text` into tokens, ending with [`Tok::Eof`].
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, QueryError> {
    let mut lexer = Lexer { text, pos: 0 };
    let mut out = Vec::new();
    loop {
        lexer.skip_whitespace();
        let start = lexer.pos;
        let Some(c) = lexer.peek() else {
            out.push(Token {
                tok: Tok::Eof,
                start,
                end: start,
            });
            return Ok(out);
        };
        let tok = lexer.next_token(c)?;
        out.push(Token {
            tok,
            start,
            end: lexer.pos,
        });
    }
}

fn is_ident_start(c: char) -> bool {
    c == '$' || c == '_' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '$' || c == '_' || c.is_alphanumeric()
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        self.text.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn next_token(&mut self, c: char) -> Result<Tok, QueryError> {
        let start = self.pos;
        if is_ident_start(c) {
            return Ok(self.ident());
        }
        if c.is_ascii_digit() {
            return self.number();
        }
        if c == '\'' || c == '"' {
            return self.string(c);
        }
        self.bump();
        let tok = match c {
            '*' => Tok::Star,
            ',' => Tok::Comma,
            '.' => Tok::Dot,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            '+' => Tok::Plus,
            '-' => Tok::Minus,
            '/' => Tok::Slash,
            '%' => Tok::Percent,
            '=' => Tok::Eq,
            '!' if self.eat('=') => Tok::Ne,
            '<' if self.eat('=') => Tok::Le,
            '<' if self.eat('>') => Tok::Ne,
            '<' => Tok::Lt,
            '>' if self.eat('=') => Tok::Ge,
            '>' => Tok::Gt,
            _ => return Err(QueryError::UnexpectedChar { pos: start, ch: c }),
        };
        Ok(tok)
    }

    /// An identifier: `$`, `_` or a letter, then letters, digits, `_`, `$`, and `-` when a
    /// letter, digit, `_` or `$` follows it (so `a - 1` and `a- 1` are subtractions).
    fn ident(&mut self) -> Tok {
        let start = self.pos;
        self.bump();
        loop {
            match self.peek() {
                Some(c) if is_ident_continue(c) => self.bump(),
                Some('-') if self.peek_second().is_some_and(is_ident_continue) => self.bump(),
                _ => break,
            }
        }
        Tok::Ident(self.text[start..self.pos].to_owned())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
    }

    /// `digits [. digits] [(e|E) [+|-] digits]`.
    fn number(&mut self) -> Result<Tok, QueryError> {
        let start = self.pos;
        self.digits();
        let mut integral = true;
        if self.peek() == Some('.') && self.peek_second().is_some_and(|c| c.is_ascii_digit()) {
            integral = false;
            self.bump();
            self.digits();
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let after = self.rest().get(1..).unwrap_or("");
            let after = after.strip_prefix(['+', '-']).unwrap_or(after);
            if after.starts_with(|c: char| c.is_ascii_digit()) {
                integral = false;
                self.bump();
                if matches!(self.peek(), Some('+' | '-')) {
                    self.bump();
                }
                self.digits();
            }
        }
        let text = &self.text[start..self.pos];
        parse_number(text, integral)
            .map(Tok::Num)
            .ok_or_else(|| QueryError::InvalidNumber {
                pos: start,
                text: text.to_owned(),
            })
    }

    /// A string in `quote`s; a doubled quote stands for one quote character.
    fn string(&mut self, quote: char) -> Result<Tok, QueryError> {
        let start = self.pos;
        self.bump();
        let mut value = String::new();
        loop {
            match self.peek() {
                None => return Err(QueryError::UnterminatedString { pos: start }),
                Some(c) if c == quote => {
                    self.bump();
                    if self.eat(quote) {
                        value.push(quote);
                    } else {
                        return Ok(Tok::Str(value));
                    }
                }
                Some(c) => {
                    value.push(c);
                    self.bump();
                }
            }
        }
    }
}

fn parse_number(text: &str, integral: bool) -> Option<Number> {
    if integral {
        if let Ok(i) = text.parse::<i64>() {
            return Some(Number::from(i));
        }
        if let Ok(u) = text.parse::<u64>() {
            return Some(Number::from(u));
        }
    }
    text.parse::<f64>().ok().and_then(Number::from_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        tokenize(text)
            .expect("lexes")
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    #[test]
    fn lexes_operators_and_identifiers() {
        assert_eq!(
            toks("a.$b <> 'it''s' >= -1.5e2"),
            vec![
                Tok::Ident("a".into()),
                Tok::Dot,
                Tok::Ident("$b".into()),
                Tok::Ne,
                Tok::Str("it's".into()),
                Tok::Ge,
                Tok::Minus,
                Tok::Num(Number::from_f64(150.0).expect("finite")),
                Tok::Eof,
            ]
        );
    }

    #[test]
    fn hyphen_joins_identifiers_only_when_followed_by_one() {
        assert_eq!(toks("my-tag")[0], Tok::Ident("my-tag".into()));
        assert_eq!(
            toks("a- 1"),
            vec![
                Tok::Ident("a".into()),
                Tok::Minus,
                Tok::Num(1.into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn number_followed_by_dot_ident_is_not_a_fraction() {
        assert_eq!(
            toks("1.x"),
            vec![
                Tok::Num(1.into()),
                Tok::Dot,
                Tok::Ident("x".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            tokenize("a = 'x"),
            Err(QueryError::UnterminatedString { pos: 4 })
        );
        assert_eq!(
            tokenize("a # b"),
            Err(QueryError::UnexpectedChar { pos: 2, ch: '#' })
        );
        assert!(matches!(
            tokenize("1e999"),
            Err(QueryError::InvalidNumber { pos: 0, .. })
        ));
    }

    #[test]
    fn limits_check_depth_before_length() {
        let deep = "(".repeat(10_000);
        assert_eq!(
            check_limits(&deep),
            Err(QueryError::TooDeep {
                pos: MAX_DEPTH,
                max: MAX_DEPTH
            })
        );
        assert!(check_limits(&"'((((' ".repeat(100)).is_ok());
        assert!(matches!(
            check_limits(&"a".repeat(MAX_QUERY_LEN + 1)),
            Err(QueryError::TooLong { .. })
        ));
    }
}
