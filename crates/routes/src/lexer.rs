//! Turns route text into tokens the way the reference ANTLR lexer (`GrammarLexer.g4`) does:
//! at every position the longest match wins, and among equally long matches the rule defined
//! first wins. This is what makes `x-priority` one identifier, `-5` one number and `a+b` one
//! identifier (identifier characters include `-`, `+`, `*`, `.`, `'`, `!`, `|`, ...).

/// One lexical token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Select,
    From,
    Where,
    Into,
    /// A quoted string with its escapes resolved.
    Str(String),
    /// A numeric literal; `None` when the text is not a representable number (the reference
    /// then evaluates it as `undefined`).
    Num(Option<f64>),
    True,
    False,
    Null,
    Undefined,
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    And,
    Or,
    Not,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Concat,
    Coalesce,
    /// `$` followed by path characters (may contain `[`, `]`), without the `$`.
    SysProp(String),
    /// An identifier as written.
    Id(String),
    /// Path characters including brackets that do not start with `$`: no rule accepts it.
    QueryPath,
    /// A character no rule accepts.
    Unknown,
    /// A lexical error (unterminated string, bad escape) at the given byte offset.
    Error {
        pos: usize,
        message: &'static str,
    },
    Eof,
}

/// A token and the byte range of the text it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// The kinds of candidate match, in the reference's rule order (earlier wins ties).
#[derive(Debug, Clone)]
enum Kind {
    Fixed(Tok),
    Str,
    Int,
    Hex,
    Real,
    SysProp,
    Id,
    QueryPath,
    Unknown,
}

const KEYWORDS: [(&str, Tok); 4] = [
    ("SELECT", Tok::Select),
    ("FROM", Tok::From),
    ("WHERE", Tok::Where),
    ("INTO", Tok::Into),
];
const LITERALS: [(&str, Tok); 4] = [
    ("true", Tok::True),
    ("false", Tok::False),
    ("null", Tok::Null),
    ("undefined", Tok::Undefined),
];
const SINGLE_OPS: [(&str, Tok); 8] = [
    ("(", Tok::LParen),
    (")", Tok::RParen),
    (",", Tok::Comma),
    ("+", Tok::Plus),
    ("-", Tok::Minus),
    ("*", Tok::Star),
    ("/", Tok::Slash),
    ("%", Tok::Percent),
];
const LOGIC: [(&str, Tok); 3] = [("AND", Tok::And), ("OR", Tok::Or), ("NOT", Tok::Not)];
const COMPARE_OPS: [(&str, Tok); 9] = [
    ("=", Tok::Eq),
    ("!=", Tok::Ne),
    ("<>", Tok::Ne),
    ("<=", Tok::Le),
    (">=", Tok::Ge),
    (">", Tok::Gt),
    ("<", Tok::Lt),
    ("||", Tok::Concat),
    ("??", Tok::Coalesce),
];

/// Characters allowed in `$` paths (`QUERY_PATH_CHARS`).
fn is_path_char(c: char) -> bool {
    !matches!(
        c,
        '(' | ')'
            | '<'
            | '>'
            | '@'
            | ','
            | ';'
            | ':'
            | '\\'
            | '"'
            | '/'
            | '?'
            | '='
            | '{'
            | '}'
            | ' '
            | '\t'
            | '\n'
            | '\r'
    )
}

/// Characters allowed in identifiers (`ID_CHARS`): path characters except brackets.
fn is_id_char(c: char) -> bool {
    is_path_char(c) && c != '[' && c != ']'
}

/// Splits `text` into tokens, ending with [`Tok::Eof`]. Never fails: lexical errors become
/// [`Tok::Error`] / [`Tok::Unknown`] tokens the parser reports when it reaches them.
pub(crate) fn tokenize(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        pos = skip_trivia(text, pos);
        let rest = text.get(pos..).unwrap_or("");
        if rest.is_empty() {
            out.push(Token {
                tok: Tok::Eof,
                start: pos,
                end: pos,
            });
            return out;
        }
        let (len, kind) = longest_match(rest);
        let tok = make_token(rest, pos, len, kind);
        out.push(Token {
            tok,
            start: pos,
            end: pos + len,
        });
        pos += len;
    }
}

/// Skips whitespace (`[ \t\r\n]`) and complete `/* ... */` comments.
fn skip_trivia(text: &str, mut pos: usize) -> usize {
    loop {
        let rest = text.get(pos..).unwrap_or("");
        let trimmed = rest.trim_start_matches([' ', '\t', '\r', '\n']);
        pos += rest.len() - trimmed.len();
        match trimmed.strip_prefix("/*").and_then(|r| r.find("*/")) {
            Some(end) => pos += 2 + end + 2,
            None => return pos,
        }
    }
}

/// The length and kind of the token at the start of `rest` (non-empty).
fn longest_match(rest: &str) -> (usize, Kind) {
    let mut best = (0, Kind::Unknown);
    let mut consider = |len: usize, kind: &dyn Fn() -> Kind| {
        if len > best.0 {
            best = (len, kind());
        }
    };
    // '{' and '}' are implicit tokens of the condition grammar, defined before all rules.
    if rest.starts_with('{') {
        consider(1, &|| Kind::Fixed(Tok::LBrace));
    }
    if rest.starts_with('}') {
        consider(1, &|| Kind::Fixed(Tok::RBrace));
    }
    for (word, tok) in &KEYWORDS {
        consider(keyword_len(rest, word, true), &|| Kind::Fixed(tok.clone()));
    }
    consider(string_scan(rest).len, &|| Kind::Str);
    consider(int_len(rest), &|| Kind::Int);
    consider(hex_len(rest), &|| Kind::Hex);
    consider(real_len(rest), &|| Kind::Real);
    let fixed: [(&[(&str, Tok)], bool); 4] = [
        (&LITERALS, false),
        (&SINGLE_OPS, false),
        (&LOGIC, true),
        (&COMPARE_OPS, false),
    ];
    for (table, ci) in fixed {
        for (word, tok) in table {
            consider(keyword_len(rest, word, ci), &|| Kind::Fixed(tok.clone()));
        }
    }
    if let Some(after) = rest.strip_prefix('$') {
        let path = prefix_len(after, is_path_char);
        if path > 0 {
            consider(1 + path, &|| Kind::SysProp);
        }
    }
    consider(prefix_len(rest, is_id_char), &|| Kind::Id);
    consider(prefix_len(rest, is_path_char), &|| Kind::QueryPath);
    let first = rest.chars().next().map_or(1, char::len_utf8);
    consider(first, &|| Kind::Unknown);
    best
}

fn make_token(rest: &str, pos: usize, len: usize, kind: Kind) -> Tok {
    let text = rest.get(..len).unwrap_or("");
    match kind {
        Kind::Fixed(tok) => tok,
        Kind::Str => {
            let scan = string_scan(rest);
            match (scan.value, scan.error) {
                (Some(value), _) => Tok::Str(value),
                (None, Some((offset, message))) => Tok::Error {
                    pos: pos + offset,
                    message,
                },
                (None, None) => Tok::Error {
                    pos,
                    message: "unterminated string",
                },
            }
        }
        Kind::Int | Kind::Real => Tok::Num(text.parse::<f64>().ok().filter(|n| n.is_finite())),
        Kind::Hex => Tok::Num(parse_hex(text.get(2..).unwrap_or(""))),
        Kind::SysProp => Tok::SysProp(text.get(1..).unwrap_or("").to_owned()),
        Kind::Id => Tok::Id(text.to_owned()),
        Kind::QueryPath => Tok::QueryPath,
        Kind::Unknown => Tok::Unknown,
    }
}

/// Hexadecimal digits as a 64-bit two's-complement integer (like .NET `long.TryParse` with
/// `HexNumber`), converted to `f64`; `None` beyond 64 bits.
fn parse_hex(digits: &str) -> Option<f64> {
    let unsigned = u64::from_str_radix(digits, 16).ok()?;
    Some(unsigned as i64 as f64)
}

fn prefix_len(s: &str, pred: fn(char) -> bool) -> usize {
    s.find(|c: char| !pred(c)).unwrap_or(s.len())
}

/// `word.len()` when `rest` starts with `word` (ASCII case-insensitively if `ci`), else 0.
fn keyword_len(rest: &str, word: &str, ci: bool) -> usize {
    match rest.get(..word.len()) {
        Some(head) if head == word || (ci && head.eq_ignore_ascii_case(word)) => word.len(),
        _ => 0,
    }
}

fn digits_len(b: &[u8], from: usize) -> usize {
    b.get(from..)
        .map_or(0, |s| s.iter().take_while(|c| c.is_ascii_digit()).count())
}

/// `'-'? [0-9]+`
fn int_len(rest: &str) -> usize {
    let b = rest.as_bytes();
    let sign = usize::from(b.first() == Some(&b'-'));
    match digits_len(b, sign) {
        0 => 0,
        n => sign + n,
    }
}

/// `'0' [xX] [0-9a-fA-F]+`
fn hex_len(rest: &str) -> usize {
    let b = rest.as_bytes();
    if b.len() < 3 || b[0] != b'0' || !matches!(b[1], b'x' | b'X') {
        return 0;
    }
    match b[2..].iter().take_while(|c| c.is_ascii_hexdigit()).count() {
        0 => 0,
        n => 2 + n,
    }
}

/// `'-'? [0-9]* '.' [0-9]+ EXP? | '-'? [0-9]* EXP` with `EXP := [Ee] [+-]? [0-9]+`.
fn real_len(rest: &str) -> usize {
    let b = rest.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    i += digits_len(b, i);
    let with_exp = match exp_len(b, i) {
        0 => 0,
        n => i + n,
    };
    let with_dot = if b.get(i) == Some(&b'.') && digits_len(b, i + 1) > 0 {
        let end = i + 1 + digits_len(b, i + 1);
        end + exp_len(b, end)
    } else {
        0
    };
    with_exp.max(with_dot)
}

fn exp_len(b: &[u8], at: usize) -> usize {
    if !matches!(b.get(at), Some(b'e' | b'E')) {
        return 0;
    }
    let sign = usize::from(matches!(b.get(at + 1), Some(b'+' | b'-')));
    match digits_len(b, at + 1 + sign) {
        0 => 0,
        n => 1 + sign + n,
    }
}

/// The result of scanning a quoted string at the start of the text.
struct StrScan {
    /// Length of the longest `STRING` or `UNTERMINATED_STRING` match (0 if not a quote).
    len: usize,
    /// The unescaped value of a complete string.
    value: Option<String>,
    /// For an incomplete string stopped by a bad escape: its offset and a message.
    error: Option<(usize, &'static str)>,
}

/// Scans `'…'` or `"…"` with escapes `\'`, `\"`, `\\` and `\uXXXX` (UTF-16 code units;
/// surrogate pairs are combined, lone surrogates become U+FFFD).
fn string_scan(rest: &str) -> StrScan {
    let Some(quote) = rest.chars().next().filter(|c| matches!(c, '\'' | '"')) else {
        return StrScan {
            len: 0,
            value: None,
            error: None,
        };
    };
    let mut units: Vec<u16> = Vec::new();
    let mut chars = rest.char_indices().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            return StrScan {
                len: i + 1,
                value: Some(String::from_utf16_lossy(&units)),
                error: None,
            };
        }
        if c != '\\' {
            let mut buf = [0u16; 2];
            units.extend_from_slice(c.encode_utf16(&mut buf));
            continue;
        }
        match chars.next() {
            Some((_, e @ ('\'' | '"' | '\\'))) => units.push(e as u16),
            Some((u, 'u')) => match rest.get(u + 1..u + 5).filter(|h| h.len() == 4) {
                Some(hex) if hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    units.push(u16::from_str_radix(hex, 16).unwrap_or(0xFFFD));
                    for _ in 0..4 {
                        chars.next();
                    }
                }
                _ => return bad_escape(i),
            },
            _ => return bad_escape(i),
        }
    }
    StrScan {
        len: rest.len(),
        value: None,
        error: None,
    }
}

fn bad_escape(at: usize) -> StrScan {
    StrScan {
        len: at,
        value: None,
        error: Some((at, "invalid escape sequence in string")),
    }
}

#[cfg(test)]
pub(crate) fn kinds(text: &str) -> Vec<Tok> {
    tokenize(text).into_iter().map(|t| t.tok).collect()
}
