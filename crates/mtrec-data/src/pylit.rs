//! Fast, allocation-light parser for the lines of the Amazon 2014
//! `meta_<Category>.json` files.
//!
//! Despite the `.json` extension, those files are *not* JSON: every line is a
//! Python dict literal (the original DIN/DIEN preprocessing scripts read them
//! with `eval`), e.g.
//!
//! ```text
//! {'asin': '0000031852', 'title': 'Girls Ballet Tutu', 'price': 3.17,
//!  'salesRank': {'Toys & Games': 211836}, 'categories': [['Clothing', "Girls' Tutus"]]}
//! ```
//!
//! Strings use single *or* double quotes (whichever `repr` picked), carry
//! Python escapes (`\'`, `\xNN`, `\uNNNN`, ...), and constants are spelled
//! `True`/`False`/`None`, so a strict JSON parser rejects most lines. This
//! module implements just enough of the Python literal grammar to read them
//! (strict-JSON lines are accepted too).
//!
//! Only `asin` and `categories` are materialised. Every other top-level value
//! is skipped without allocating, while still being validated (balanced
//! brackets, terminated strings, well-formed escapes, numbers and keywords).
//! Strings without escapes are copied straight out of the line. The parser
//! never panics: malformed input of any kind yields a [`PyLitError`].
//!
//! Escape handling follows Python 3 `str` literals: `\\ \' \" \a \b \f \n \r
//! \t \v`, octal `\ooo`, `\xNN` (code point U+00NN), `\uNNNN`, `\UNNNNNNNN`,
//! backslash-newline continuation; unknown escapes (including `\N{...}` and
//! JSON's `\/`) are kept literally, backslash included. Because Rust strings
//! cannot hold lone surrogates, a `\uD8xx\uDCxx` pair is combined into one
//! code point (as JSON does) and a lone surrogate becomes U+FFFD.

use std::borrow::Cow;
use std::fmt;

/// Maximum container nesting depth (the top-level dict counts as depth 1).
const MAX_DEPTH: usize = 64;

/// What we need from one meta line.
#[derive(Debug, Clone, PartialEq)]
pub struct MetaRecord {
    pub asin: String,
    pub categories: Vec<Vec<String>>,
}

/// A parse failure: byte offset in the line and a short human message; `field` names the top-level key being parsed when known (e.g. "categories").
#[derive(Debug, Clone, PartialEq)]
pub struct PyLitError {
    pub offset: usize,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for PyLitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}", self.offset)?;
        if let Some(field) = &self.field {
            write!(f, " in field '{field}'")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for PyLitError {}

/// Parse one line. Missing 'asin' -> Err with field Some("asin") and message "missing field"; missing 'categories' -> Ok with empty categories. 'categories' must be a list of lists of strings (a tuple counts as list), else Err naming field "categories". Leading/trailing whitespace and a trailing '\r' are fine. Anything after the closing '}' other than whitespace is an error.
pub fn parse_meta_line(line: &str) -> Result<MetaRecord, PyLitError> {
    Parser::new(line).meta()
}

type PResult<T> = Result<T, PyLitError>;

#[inline]
fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

#[inline]
fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Byte classes for string scanning: bit 0 = `'`, bit 1 = `"`, bit 2 = a
/// byte that always interrupts a string body (`\\`, `\n`, `\r`).
const STOP: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'\'' as usize] = 1;
    t[b'"' as usize] = 2;
    t[b'\\' as usize] = 4;
    t[b'\n' as usize] = 4;
    t[b'\r' as usize] = 4;
    t
};

/// Index of the first byte in `bytes` that ends a plain run of string
/// content quoted with `q`: the closing quote, a backslash or a line break.
#[inline]
fn scan_string(bytes: &[u8], q: u8) -> Option<usize> {
    let mask = if q == b'\'' { 1 | 4 } else { 2 | 4 };
    // Skip 8-byte blocks that contain no stop byte, then finish byte-wise.
    let mut skipped = 0;
    for block in bytes.chunks_exact(8) {
        let hit = block.iter().fold(0u8, |acc, &c| acc | STOP[usize::from(c)]);
        if hit & mask != 0 {
            break;
        }
        skipped += 8;
    }
    let rest = bytes.get(skipped..).unwrap_or(&[]);
    rest.iter()
        .position(|&c| STOP[usize::from(c)] & mask != 0)
        .map(|n| n + skipped)
}

#[inline]
fn hex_val(c: u8) -> Option<u32> {
    match c {
        b'0'..=b'9' => Some(u32::from(c - b'0')),
        b'a'..=b'f' => Some(u32::from(c - b'a') + 10),
        b'A'..=b'F' => Some(u32::from(c - b'A') + 10),
        _ => None,
    }
}

/// Which top-level key is being parsed.
enum Key {
    Asin,
    Categories,
    Other,
}

/// Generic value tree, only built for the (small) `categories` value so that
/// Python's parenthesis rules (`(x)` is `x`, `(x,)` is a tuple) are exact.
struct Node {
    off: usize,
    kind: Kind,
}

enum Kind {
    Str(String),
    Seq(Vec<Node>),
    Other(&'static str),
}

impl Kind {
    fn describe(&self) -> &'static str {
        match self {
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Other(d) => d,
        }
    }
}

struct Parser<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
    field: Option<Cow<'a, str>>,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser {
            src,
            b: src.as_bytes(),
            pos: 0,
            field: None,
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    #[inline]
    fn peek_at(&self, i: usize) -> Option<u8> {
        self.b.get(i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.pos) {
            if is_ws(c) {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn err_at<T>(&self, offset: usize, message: impl Into<String>) -> PResult<T> {
        Err(PyLitError {
            offset,
            field: self.field.as_ref().map(|f| f.to_string()),
            message: message.into(),
        })
    }

    fn err<T>(&self, message: impl Into<String>) -> PResult<T> {
        self.err_at(self.pos, message)
    }

    /// Error for "found something other than `expected` at the cursor".
    #[cold]
    #[inline(never)]
    fn unexpected<T>(&self, expected: &str) -> PResult<T> {
        let found = self.src.get(self.pos..).and_then(|s| s.chars().next());
        match found {
            None => self.err(format!("unexpected end of line, expected {expected}")),
            Some(c) => self.err(format!("expected {expected}, found {c:?}")),
        }
    }

    #[inline]
    fn slice(&self, start: usize, end: usize) -> PResult<&'a str> {
        match self.src.get(start..end) {
            Some(s) => Ok(s),
            None => self.err_at(start, "string slice not on a UTF-8 boundary"),
        }
    }

    /// Opens a container at the cursor (`[`, `(` or `{`), enforcing the depth limit.
    #[inline]
    fn enter(&mut self, depth: usize) -> PResult<usize> {
        if depth >= MAX_DEPTH {
            return self.err(format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        self.pos += 1;
        Ok(depth + 1)
    }

    /// Is the cursor at a string literal (optionally `u`/`U`-prefixed)?
    #[inline]
    fn at_string_start(&self) -> bool {
        match self.peek() {
            Some(b'\'' | b'"') => true,
            Some(b'u' | b'U') => matches!(self.peek_at(self.pos + 1), Some(b'\'' | b'"')),
            _ => false,
        }
    }

    /// Consumes an optional `u` prefix and the opening quote; returns the quote.
    #[inline]
    fn open_quote(&mut self) -> PResult<u8> {
        if matches!(self.peek(), Some(b'u' | b'U')) {
            self.pos += 1;
        }
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => {
                self.pos += 1;
                Ok(q)
            }
            _ => self.unexpected("a string"),
        }
    }

    // ----------------------------------------------------------------- top level

    fn meta(mut self) -> PResult<MetaRecord> {
        let mut asin: Option<String> = None;
        let mut categories = Vec::new();
        self.ws();
        if self.peek() != Some(b'{') {
            return self.unexpected("'{'");
        }
        let depth = self.enter(0)?;
        loop {
            self.field = None;
            self.ws();
            match self.peek() {
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                None => return self.unexpected("a key or '}'"),
                _ => {}
            }
            let key = if self.at_string_start() {
                Some(self.string()?)
            } else {
                // Non-string key (int, tuple, ...): validate and ignore.
                self.skip_value(depth)?;
                None
            };
            self.ws();
            if self.peek() != Some(b':') {
                return self.unexpected("':'");
            }
            self.pos += 1;
            let which = match key.as_deref() {
                Some("asin") => Key::Asin,
                Some("categories") => Key::Categories,
                _ => Key::Other,
            };
            self.field = key;
            match which {
                Key::Asin => {
                    self.ws();
                    if !self.at_string_start() {
                        return self.unexpected("a string");
                    }
                    asin = Some(self.string()?.into_owned());
                }
                Key::Categories => categories = self.categories(depth)?,
                Key::Other => self.skip_value(depth)?,
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return self.unexpected("',' or '}'"),
            }
        }
        self.field = None;
        self.ws();
        if self.pos < self.b.len() {
            return self.err("unexpected characters after closing '}'");
        }
        match asin {
            Some(asin) => Ok(MetaRecord { asin, categories }),
            None => Err(PyLitError {
                offset: self.b.len(),
                field: Some("asin".to_string()),
                message: "missing field".to_string(),
            }),
        }
    }

    // ------------------------------------------------------------------- strings

    /// Parses a string literal at the cursor. Borrows from the line when the
    /// literal has no escapes, decodes into a fresh `String` otherwise.
    fn string(&mut self) -> PResult<Cow<'a, str>> {
        let q = self.open_quote()?;
        let start = self.pos;
        let rest = self.b.get(start..).unwrap_or(&[]);
        if let Some(n) = scan_string(rest, q) {
            if rest.get(n) == Some(&q) {
                let s = self.slice(start, start + n)?;
                self.pos = start + n + 1;
                return Ok(Cow::Borrowed(s));
            }
        }
        let mut out = String::with_capacity(rest.len().min(64));
        self.string_body(q, Some(&mut out))?;
        Ok(Cow::Owned(out))
    }

    /// Skips a string literal at the cursor, validating escapes.
    fn skip_string(&mut self) -> PResult<()> {
        let q = self.open_quote()?;
        self.string_body(q, None)
    }

    /// Scans a string body (cursor just after the opening quote) up to and
    /// including the closing quote `q`, decoding into `out` when given.
    fn string_body(&mut self, q: u8, mut out: Option<&mut String>) -> PResult<()> {
        loop {
            let chunk = self.pos;
            let rest = self.b.get(chunk..).unwrap_or(&[]);
            let Some(n) = scan_string(rest, q) else {
                self.pos = self.b.len();
                return self.err("unterminated string");
            };
            let stop = chunk + n;
            if let Some(o) = out.as_deref_mut() {
                o.push_str(self.slice(chunk, stop)?);
            }
            match rest.get(n) {
                Some(&c) if c == q => {
                    self.pos = stop + 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos = stop + 1;
                    self.escape(out.as_deref_mut())?;
                }
                _ => {
                    self.pos = stop;
                    return self.err("unterminated string (line break inside string)");
                }
            }
        }
    }

    /// Handles one escape sequence; the cursor is just after the backslash.
    fn escape(&mut self, out: Option<&mut String>) -> PResult<()> {
        let bs = self.pos - 1;
        let Some(c) = self.peek() else {
            return self.err("unterminated string");
        };
        self.pos += 1;
        let ch = match c {
            b'\n' => return Ok(()),
            b'\r' => {
                if self.peek() == Some(b'\n') {
                    self.pos += 1;
                }
                return Ok(());
            }
            b'\\' => '\\',
            b'\'' => '\'',
            b'"' => '"',
            b'a' => '\x07',
            b'b' => '\x08',
            b'f' => '\x0c',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'v' => '\x0b',
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            self.pos += 1;
                        }
                        _ => break,
                    }
                }
                char::from_u32(v).unwrap_or('\u{FFFD}')
            }
            b'x' => {
                let v = self.hex_digits(2, bs, "truncated \\xXX escape")?;
                char::from_u32(v).unwrap_or('\u{FFFD}')
            }
            b'u' => {
                let v = self.hex_digits(4, bs, "truncated \\uXXXX escape")?;
                self.utf16_unit(v)
            }
            b'U' => {
                let v = self.hex_digits(8, bs, "truncated \\UXXXXXXXX escape")?;
                if v > 0x10_FFFF {
                    return self.err_at(bs, "illegal Unicode character in \\U escape");
                }
                char::from_u32(v).unwrap_or('\u{FFFD}')
            }
            _ => {
                // Unknown escape: Python keeps the backslash and the following
                // character; re-scan that character as ordinary text.
                self.pos -= 1;
                '\\'
            }
        };
        if let Some(o) = out {
            o.push(ch);
        }
        Ok(())
    }

    /// Reads exactly `n` hex digits at the cursor.
    fn hex_digits(&mut self, n: usize, bs: usize, msg: &str) -> PResult<u32> {
        let mut v: u32 = 0;
        for _ in 0..n {
            match self.peek().and_then(hex_val) {
                Some(d) => {
                    v = (v << 4) | d;
                    self.pos += 1;
                }
                None => return self.err_at(bs, msg),
            }
        }
        Ok(v)
    }

    /// Turns a `\uXXXX` value into a char, pairing UTF-16 surrogates when a
    /// low-surrogate `\uXXXX` follows; lone surrogates become U+FFFD.
    fn utf16_unit(&mut self, v: u32) -> char {
        if (0xD800..=0xDBFF).contains(&v)
            && self.peek() == Some(b'\\')
            && self.peek_at(self.pos + 1) == Some(b'u')
        {
            let save = self.pos;
            self.pos += 2;
            let mut lo: u32 = 0;
            let mut ok = true;
            for _ in 0..4 {
                match self.peek().and_then(hex_val) {
                    Some(d) => {
                        lo = (lo << 4) | d;
                        self.pos += 1;
                    }
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok && (0xDC00..=0xDFFF).contains(&lo) {
                let cp = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
                return char::from_u32(cp).unwrap_or('\u{FFFD}');
            }
            self.pos = save;
        }
        char::from_u32(v).unwrap_or('\u{FFFD}')
    }

    // ------------------------------------------------------------------ skipping

    /// Skips any value, validating its syntax, without allocating.
    fn skip_value(&mut self, depth: usize) -> PResult<()> {
        self.ws();
        if self.at_string_start() {
            return self.skip_string();
        }
        match self.peek() {
            Some(b'[') => self.skip_seq(b']', depth),
            Some(b'(') => self.skip_seq(b')', depth),
            Some(b'{') => self.skip_dict(depth),
            Some(b'-' | b'+' | b'.' | b'0'..=b'9') => self.skip_number(),
            Some(c) if c.is_ascii_alphabetic() => self.skip_keyword(),
            _ => self.unexpected("a value"),
        }
    }

    fn skip_seq(&mut self, close: u8, depth: usize) -> PResult<()> {
        let d = self.enter(depth)?;
        loop {
            self.ws();
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok(());
            }
            self.skip_value(d)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(c) if c == close => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return self.unexpected(&format!("'{}' or ','", char::from(close))),
            }
        }
    }

    fn skip_dict(&mut self, depth: usize) -> PResult<()> {
        let d = self.enter(depth)?;
        loop {
            self.ws();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(());
            }
            self.skip_value(d)?;
            self.ws();
            if self.peek() != Some(b':') {
                return self.unexpected("':'");
            }
            self.pos += 1;
            self.skip_value(d)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return self.unexpected("'}' or ','"),
            }
        }
    }

    #[inline]
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `[+-]? (digits ('.' digits?)? | '.' digits) ([eE] [+-]? digits)? [lL]?`
    fn skip_number(&mut self) -> PResult<()> {
        let start = self.pos;
        if matches!(self.peek(), Some(b'-' | b'+')) {
            self.pos += 1;
        }
        let int_digits = self.digits();
        let mut is_float = false;
        let mut frac_digits = 0;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            is_float = true;
            frac_digits = self.digits();
        }
        if int_digits == 0 && frac_digits == 0 {
            return self.err_at(start, "invalid number");
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'-' | b'+')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return self.err_at(start, "invalid number (empty exponent)");
            }
            is_float = true;
        }
        if !is_float && matches!(self.peek(), Some(b'L' | b'l')) {
            self.pos += 1; // Python 2 long literal
        }
        if self.peek().is_some_and(|c| is_ident(c) || c == b'.') {
            return self.err_at(start, "invalid number");
        }
        Ok(())
    }

    fn skip_keyword(&mut self) -> PResult<()> {
        const KEYWORDS: [&[u8]; 6] = [b"True", b"False", b"None", b"true", b"false", b"null"];
        let rest = self.b.get(self.pos..).unwrap_or(&[]);
        for kw in KEYWORDS {
            if rest.starts_with(kw) && !rest.get(kw.len()).is_some_and(|&c| is_ident(c)) {
                self.pos += kw.len();
                return Ok(());
            }
        }
        let end = rest
            .iter()
            .position(|&c| !is_ident(c))
            .unwrap_or(rest.len());
        let word = self.src.get(self.pos..self.pos + end).unwrap_or("?");
        self.err(format!("unknown name {word:?}"))
    }

    // ---------------------------------------------------------------- categories

    fn categories(&mut self, depth: usize) -> PResult<Vec<Vec<String>>> {
        let start = self.pos;
        if let Some(cats) = self.categories_fast() {
            return Ok(cats);
        }
        // Tuples, parentheses, wrong types or syntax errors: take the general
        // path, which also produces the precise error.
        self.pos = start;
        let root = self.node(depth)?;
        let outer = match root.kind {
            Kind::Seq(items) => items,
            k => {
                return self.err_at(
                    root.off,
                    format!(
                        "expected a list of lists of strings, found {}",
                        k.describe()
                    ),
                )
            }
        };
        let mut cats = Vec::with_capacity(outer.len());
        for item in outer {
            let inner = match item.kind {
                Kind::Seq(items) => items,
                k => {
                    return self.err_at(
                        item.off,
                        format!("expected a list of strings, found {}", k.describe()),
                    )
                }
            };
            let mut path = Vec::with_capacity(inner.len());
            for s in inner {
                match s.kind {
                    Kind::Str(v) => path.push(v),
                    k => {
                        return self
                            .err_at(s.off, format!("expected a string, found {}", k.describe()))
                    }
                }
            }
            cats.push(path);
        }
        Ok(cats)
    }

    /// Fast path for the common `[['a', 'b'], ['c']]` shape: decodes straight
    /// into the result. Returns `None` (cursor unspecified) on anything else.
    fn categories_fast(&mut self) -> Option<Vec<Vec<String>>> {
        self.ws();
        if self.peek() != Some(b'[') {
            return None;
        }
        self.pos += 1;
        let mut cats = Vec::new();
        loop {
            self.ws();
            match self.peek() {
                Some(b']') => {
                    self.pos += 1;
                    return Some(cats);
                }
                Some(b'[') => self.pos += 1,
                _ => return None,
            }
            let mut path = Vec::new();
            loop {
                self.ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    break;
                }
                if !self.at_string_start() {
                    return None;
                }
                path.push(self.string().ok()?.into_owned());
                self.ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
            cats.push(path);
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Some(cats);
                }
                _ => return None,
            }
        }
    }

    /// Parses a value into a `Node` (strings and sequences kept, the rest skipped).
    fn node(&mut self, depth: usize) -> PResult<Node> {
        self.ws();
        let off = self.pos;
        if self.at_string_start() {
            let s = self.string()?.into_owned();
            return Ok(Node {
                off,
                kind: Kind::Str(s),
            });
        }
        let kind = match self.peek() {
            Some(b'[') => {
                let d = self.enter(depth)?;
                Kind::Seq(self.node_items(b']', d, Vec::new())?)
            }
            Some(b'(') => {
                let d = self.enter(depth)?;
                self.ws();
                if self.peek() == Some(b')') {
                    self.pos += 1;
                    Kind::Seq(Vec::new())
                } else {
                    let first = self.node(d)?;
                    self.ws();
                    match self.peek() {
                        // `(x)` is just `x`, not a tuple.
                        Some(b')') => {
                            self.pos += 1;
                            return Ok(first);
                        }
                        Some(b',') => {
                            self.pos += 1;
                            Kind::Seq(self.node_items(b')', d, vec![first])?)
                        }
                        _ => return self.unexpected("')' or ','"),
                    }
                }
            }
            Some(b'{') => {
                self.skip_value(depth)?;
                Kind::Other("a dict")
            }
            Some(b'-' | b'+' | b'.' | b'0'..=b'9') => {
                self.skip_value(depth)?;
                Kind::Other("a number")
            }
            _ => {
                self.skip_value(depth)?;
                Kind::Other("a constant")
            }
        };
        Ok(Node { off, kind })
    }

    /// Parses sequence items up to `close` (cursor after the opener or after a comma).
    fn node_items(&mut self, close: u8, depth: usize, mut items: Vec<Node>) -> PResult<Vec<Node>> {
        loop {
            self.ws();
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok(items);
            }
            items.push(self.node(depth)?);
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(c) if c == close => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => return self.unexpected(&format!("'{}' or ','", char::from(close))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{'asin': '0000031852', 'title': 'Girls Ballet Tutu Zebra Hot Pink', 'price': 3.17, 'imUrl': 'http://ecx.images-amazon.com/images/I/51fAmVkTbyL._SY300_.jpg', 'related': {'also_bought': ['B00JHONN1S', 'B002BZX8Z6'], 'bought_together': ['B002BZX8Z6']}, 'salesRank': {'Toys & Games': 211836}, 'brand': 'Coxlists', 'categories': [['Sports & Outdoors', 'Other Sports', 'Dance'], ['Clothing', "Girls' Tutus"]]}"#;

    fn cats(v: &[&[&str]]) -> Vec<Vec<String>> {
        v.iter()
            .map(|p| p.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    fn ok(line: &str) -> MetaRecord {
        match parse_meta_line(line) {
            Ok(r) => r,
            Err(e) => panic!("expected Ok for {line:?}, got {e}"),
        }
    }

    fn bad(line: &str) -> PyLitError {
        match parse_meta_line(line) {
            Ok(r) => panic!("expected Err for {line:?}, got {r:?}"),
            Err(e) => e,
        }
    }

    fn one_cat(line: &str) -> String {
        let r = ok(line);
        assert_eq!(r.categories.len(), 1, "{line}");
        assert_eq!(r.categories[0].len(), 1, "{line}");
        r.categories[0][0].clone()
    }

    #[test]
    fn example_line() {
        let r = ok(EXAMPLE);
        assert_eq!(r.asin, "0000031852");
        assert_eq!(
            r.categories,
            cats(&[
                &["Sports & Outdoors", "Other Sports", "Dance"],
                &["Clothing", "Girls' Tutus"],
            ])
        );
    }

    #[test]
    fn surrounding_whitespace_and_cr() {
        let line = format!("  \t{EXAMPLE} \t\r");
        assert_eq!(ok(&line), ok(EXAMPLE));
        let line = format!("{EXAMPLE}\r\n");
        assert_eq!(ok(&line), ok(EXAMPLE));
        let r = ok("{ 'asin' : 'A1' , 'categories' : [ [ 'x' , 'y' ] ] }");
        assert_eq!(r.categories, cats(&[&["x", "y"]]));
    }

    #[test]
    fn double_quoted_with_single_quote() {
        let r = ok(r#"{"asin": "B1", "categories": [["Men's", "Kids' \"Stuff\""]]}"#);
        assert_eq!(r.asin, "B1");
        assert_eq!(r.categories, cats(&[&["Men's", "Kids' \"Stuff\""]]));
        assert_eq!(
            one_cat(r#"{'asin': 'a', 'categories': [["it's"]]}"#),
            "it's"
        );
    }

    #[test]
    fn escaped_quotes_and_backslashes() {
        assert_eq!(
            one_cat(r#"{'asin': 'a', 'categories': [['Girl\'s']]}"#),
            "Girl's"
        );
        assert_eq!(
            one_cat(r#"{'asin': 'a', 'categories': [["say \"hi\""]]}"#),
            "say \"hi\""
        );
        assert_eq!(
            one_cat(r#"{'asin': 'a', 'categories': [['a\\b']]}"#),
            "a\\b"
        );
        assert_eq!(one_cat(r#"{'asin': 'a', 'categories': [['a\\']]}"#), "a\\");
        assert_eq!(one_cat(r#"{'asin': 'a', 'categories': [['\"']]}"#), "\"");
        // skipped fields with escaped quotes
        let r = ok(r#"{'title': 'it\'s a \'test\' \\', 'asin': 'x\'y', 'categories': []}"#);
        assert_eq!(r.asin, "x'y");
    }

    #[test]
    fn hex_unicode_and_control_escapes() {
        assert_eq!(
            one_cat(r#"{'asin': 'a', 'categories': [['Caf\xe9']]}"#),
            "Café"
        );
        assert_eq!(
            one_cat(r#"{'asin': 'a', 'categories': [['\u00e9t\u00E9']]}"#),
            "été"
        );
        assert_eq!(
            one_cat(r#"{'asin': 'a', 'categories': [['\U0001F600!']]}"#),
            "😀!"
        );
        assert_eq!(
            one_cat(r#"{'asin': 'a', 'categories': [['a\nb\tc\rd']]}"#),
            "a\nb\tc\rd"
        );
        assert_eq!(
            one_cat(r#"{'asin': 'a', 'categories': [['\a\b\f\v\0\101\7']]}"#),
            "\x07\x08\x0c\x0b\0A\x07"
        );
        // JSON surrogate pair, lone surrogate
        assert_eq!(
            one_cat(r#"{"asin": "a", "categories": [["\ud83d\ude00"]]}"#),
            "😀"
        );
        assert_eq!(
            one_cat(r#"{"asin": "a", "categories": [["\ud83dx"]]}"#),
            "\u{FFFD}x"
        );
        assert_eq!(
            one_cat(r#"{"asin": "a", "categories": [["\ud83d\u0041"]]}"#),
            "\u{FFFD}A"
        );
        // unknown escapes kept literally, as Python does
        assert_eq!(
            one_cat(r#"{'asin': 'a', 'categories': [['\d\/\N{X}\é']]}"#),
            r"\d\/\N{X}\é"
        );
        // raw non-ASCII text with and without escapes
        assert_eq!(
            one_cat("{'asin': 'a', 'categories': [['Ünïcødé 日本']]}"),
            "Ünïcødé 日本"
        );
        assert_eq!(
            one_cat("{'asin': 'a', 'categories': [['日\\'本']]}"),
            "日'本"
        );
        // u-prefixed (Python 2 repr) strings
        let r = ok("{u'asin': u'Z', u'categories': [[U\"x\"]], u'title': u'\\xe9'}");
        assert_eq!(r.asin, "Z");
        assert_eq!(r.categories, cats(&[&["x"]]));
    }

    #[test]
    fn bad_escapes_are_errors() {
        for line in [
            r#"{'asin': 'a', 'categories': [['\x4']]}"#,
            r#"{'asin': 'a', 'categories': [['\xzz']]}"#,
            r#"{'asin': 'a', 'categories': [['\u12']]}"#,
            r#"{'asin': 'a', 'categories': [['\U0011FFFF']]}"#,
            r#"{'asin': 'a', 'title': '\x4', 'categories': []}"#,
            r#"{'asin': 'a', 'title': '\u00g0'}"#,
            r#"{'asin': 'a', 'title': 'abc\'}"#,
        ] {
            bad(line);
        }
        let e = bad(r#"{'asin': 'a', 'title': 'bad \x4'}"#);
        assert_eq!(e.field.as_deref(), Some("title"));
        assert_eq!(e.offset, 28);
    }

    #[test]
    fn strict_json_line() {
        let line = r#"{"asin": "B00X", "price": -2.5e-3, "inStock": true, "gift": false, "brand": null, "related": {"also_bought": ["A", "B"]}, "salesRank": {"Books": 12}, "categories": [["Books", "Fiction"], ["Kindle"]]}"#;
        let r = ok(line);
        assert_eq!(r.asin, "B00X");
        assert_eq!(r.categories, cats(&[&["Books", "Fiction"], &["Kindle"]]));
    }

    #[test]
    fn python_values_are_skipped() {
        let r = ok("{'asin': 'a', 'v': [True, False, None, 1, -2, +3, 1.5, .5, 5., 1e-3, -2.5E+10, 123L, (), (1,), (1), {}, [], ''], 'categories': [['c']]}");
        assert_eq!(r.categories, cats(&[&["c"]]));
        for v in [
            "Tru", "Truex", "none", "nul", "1x", "1.2.3", "--1", "-", ".", "1e", "1e+", "1.5L",
            "[1 2]", "[1,,2]", "(,)", "{1}", "{1:}", "{:1}", "@", "[1)", "(1]", "{'a': 1]",
        ] {
            let line = format!("{{'asin': 'a', 'v': {v}}}");
            let e = bad(&line);
            assert_eq!(e.field.as_deref(), Some("v"), "{line}: {e}");
        }
    }

    #[test]
    fn missing_categories() {
        let r = ok("{'asin': 'A', 'title': 'x'}");
        assert_eq!(
            r,
            MetaRecord {
                asin: "A".into(),
                categories: vec![]
            }
        );
        assert_eq!(ok("{'asin': 'A'}").categories, Vec::<Vec<String>>::new());
    }

    #[test]
    fn missing_asin() {
        for line in ["{'title': 'x', 'categories': [['a']]}", "{}", "{ }"] {
            let e = bad(line);
            assert_eq!(e.field.as_deref(), Some("asin"));
            assert_eq!(e.message, "missing field");
        }
    }

    #[test]
    fn asin_must_be_string() {
        let e = bad("{'asin': 123, 'categories': []}");
        assert_eq!(e.field.as_deref(), Some("asin"));
        assert_eq!(e.offset, 9);
    }

    #[test]
    fn tuples_count_as_lists() {
        let r = ok("{'asin': 'a', 'categories': (('x', 'y'), ('z',))}");
        assert_eq!(r.categories, cats(&[&["x", "y"], &["z"]]));
        let r = ok("{'asin': 'a', 'categories': [('x',), ['y'], ()]}");
        assert_eq!(r.categories, cats(&[&["x"], &["y"], &[]]));
        let r = ok("{'asin': 'a', 'categories': (['x', ('y')],)}");
        assert_eq!(r.categories, cats(&[&["x", "y"]]));
        // `(x)` is not a tuple: these are lists of strings, not lists of lists
        assert_eq!(
            bad("{'asin': 'a', 'categories': [('x')]}").field.as_deref(),
            Some("categories")
        );
        assert_eq!(
            bad("{'asin': 'a', 'categories': (['x'])}").field.as_deref(),
            Some("categories")
        );
        // but a parenthesised list of lists is fine
        let r = ok("{'asin': 'a', 'categories': ([['x']])}");
        assert_eq!(r.categories, cats(&[&["x"]]));
    }

    #[test]
    fn trailing_commas() {
        let r = ok(
            "{'asin': 'a', 'categories': [['x', 'y',], ['z'],], 'r': {'k': [1,], 't': (1, 2,),},}",
        );
        assert_eq!(r.categories, cats(&[&["x", "y"], &["z"]]));
        bad("{'asin': 'a',,}");
        bad("{,'asin': 'a'}");
        bad("{'asin': 'a', 'categories': [,]}");
    }

    #[test]
    fn truncated_prefixes_fail() {
        assert!(parse_meta_line(EXAMPLE).is_ok());
        for i in 0..EXAMPLE.len() {
            let prefix = &EXAMPLE[..i];
            assert!(
                parse_meta_line(prefix).is_err(),
                "prefix {i} parsed: {prefix:?}"
            );
        }
        let tricky = r#"{u'asin': u'\u00e9\'x', 'p': -1.5e-3, 'n': None, 'b': True, 't': (1, (2,)), 'd': {1: 'x', (2, 3): "q\"y"}, 'categories': [['日本', 'Caf\xe9 \U0001F600'], ("a\\",)]}"#;
        assert!(parse_meta_line(tricky).is_ok());
        for (i, _) in tricky.char_indices() {
            assert!(parse_meta_line(&tricky[..i]).is_err(), "prefix {i} parsed");
        }
    }

    #[test]
    fn garbage_after_closing_brace() {
        for tail in ["x", "}", ",", "{}", " 1", "\r\nx", " {'asin': 'b'}"] {
            let line = format!("{EXAMPLE}{tail}");
            let e = bad(&line);
            assert_eq!(e.field, None, "{line}");
            assert!(e.offset >= EXAMPLE.len(), "{e}");
        }
        bad("x{'asin': 'a'}");
        bad("");
        bad("   ");
        bad("['asin', 'a']");
    }

    #[test]
    fn categories_of_wrong_type() {
        for v in [
            "'Books'",
            "['Books', 'Fiction']",
            "[['Books', 1]]",
            "[['Books', None]]",
            "[['Books', ['nested']]]",
            "{'Books': 1}",
            "[{'Books': 1}]",
            "None",
            "42",
            "[[1.5]]",
            "[['a'], 'b']",
        ] {
            let line = format!("{{'asin': 'a', 'categories': {v}}}");
            let e = bad(&line);
            assert_eq!(e.field.as_deref(), Some("categories"), "{line}: {e}");
        }
        // offset points at the offending element
        let e = bad("{'asin': 'a', 'categories': [['ok', 7]]}");
        assert_eq!(e.offset, 36);
        assert!(e.message.contains("expected a string"), "{e}");
        // syntax errors inside categories also name the field
        let e = bad("{'asin': 'a', 'categories': [['x' 'y']]}");
        assert_eq!(e.field.as_deref(), Some("categories"));
    }

    #[test]
    fn deep_nesting() {
        let nested = |n: usize| format!("{{'asin': 'a', 'x': {}{}}}", "[".repeat(n), "]".repeat(n));
        ok(&nested(10));
        ok(&nested(MAX_DEPTH - 1)); // top-level dict + 63 lists = 64 levels
        let e = bad(&nested(MAX_DEPTH));
        assert_eq!(e.field.as_deref(), Some("x"));
        assert!(e.message.contains("nesting"), "{e}");
        bad(&nested(100_000)); // must not overflow the stack
        let dicts = format!(
            "{{'asin': 'a', 'x': {}{}}}",
            "{1: ".repeat(200),
            "}".repeat(200)
        );
        bad(&dicts);
        let tuples = format!(
            "{{'asin': 'a', 'x': {}1{}}}",
            "(".repeat(200),
            ")".repeat(200)
        );
        bad(&tuples);
        let cat = format!(
            "{{'asin': 'a', 'categories': {}{}}}",
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(bad(&cat).field.as_deref(), Some("categories"));
        let cat = format!(
            "{{'asin': 'a', 'categories': [[{}'x'{}]]}}",
            "(".repeat(100),
            ")".repeat(100)
        );
        assert_eq!(bad(&cat).field.as_deref(), Some("categories"));
        let cat = format!(
            "{{'asin': 'a', 'categories': [[{}'x'{}]]}}",
            "(".repeat(10),
            ")".repeat(10)
        );
        assert_eq!(one_cat(&cat), "x");
    }

    #[test]
    fn empty_categories() {
        assert_eq!(
            ok("{'asin': 'a', 'categories': []}").categories,
            Vec::<Vec<String>>::new()
        );
        assert_eq!(
            ok("{'asin': 'a', 'categories': ()}").categories,
            Vec::<Vec<String>>::new()
        );
        assert_eq!(
            ok("{'asin': 'a', 'categories': [[]]}").categories,
            vec![Vec::<String>::new()]
        );
        assert_eq!(
            ok("{'asin': 'a', 'categories': [['']]}").categories,
            cats(&[&[""]])
        );
    }

    #[test]
    fn keys_in_any_order() {
        let a = ok("{'categories': [['x']], 'title': 't', 'asin': 'Q'}");
        let b = ok("{'title': 't', 'asin': 'Q', 'categories': [['x']]}");
        let c = ok("{'asin': 'Q', 'categories': [['x']], 'title': 't'}");
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.asin, "Q");
        // duplicate keys: last one wins, like a Python dict
        let d = ok("{'asin': 'A', 'categories': [['x']], 'asin': 'B', 'categories': [['y']]}");
        assert_eq!(d.asin, "B");
        assert_eq!(d.categories, cats(&[&["y"]]));
        // key spelled with escapes
        assert_eq!(ok(r"{'a\x73in': 'E'}").asin, "E");
        // key names are matched exactly
        assert_eq!(bad("{'ASIN': 'a'}").message, "missing field");
    }

    #[test]
    fn non_string_keys_are_skipped() {
        let r = ok("{'asin': 'a', 'salesRank': {1: 2, (1, 'x'): 'y', None: 3, 2.5: True, -1: [1]}, 7: 'seven', (1,): {}, 'categories': [['c']]}");
        assert_eq!(r.categories, cats(&[&["c"]]));
        let r = ok("{1: 'x', 'asin': 'a'}");
        assert_eq!(r.asin, "a");
        bad("{'asin': 'a', 'd': {1 2}}");
        bad("{'asin': 'a', 'd': {1: 2 3: 4}}");
        bad("{'asin': 'a', 1 'x'}");
    }

    #[test]
    fn unterminated_and_multiline_strings() {
        bad("{'asin': 'a");
        bad("{'asin': \"a'}");
        bad("{'asin': 'a\nb'}");
        bad("{'asin': 'a', 'title': 'x\ry'}");
        // backslash-newline is a continuation inside a Python string
        assert_eq!(ok("{'asin': 'a\\\nb'}").asin, "ab");
    }

    #[test]
    fn error_display_and_fields() {
        let e = PyLitError {
            offset: 57,
            field: Some("categories".into()),
            message: "expected ']' or ','".into(),
        };
        assert_eq!(
            e.to_string(),
            "at byte 57 in field 'categories': expected ']' or ','"
        );
        let e = PyLitError {
            offset: 3,
            field: None,
            message: "boom".into(),
        };
        assert_eq!(e.to_string(), "at byte 3: boom");
        let e = bad("{'asin': 'a', 'categories': [['x'}");
        assert_eq!(e.field.as_deref(), Some("categories"));
        assert_eq!(e.offset, 33);
        assert!(
            e.to_string()
                .starts_with("at byte 33 in field 'categories': expected ']' or ','"),
            "{e}"
        );
        let e = bad("{'asin': 'a', 'related': {'also_bought': ['x' 'y']}}");
        assert_eq!(e.field.as_deref(), Some("related"));
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert!(boxed.to_string().contains("related"));
    }

    #[test]
    fn borrowed_fast_path_matches_decoded() {
        // same content through the borrowed and the escape-decoding paths
        let plain = ok("{'asin': 'abc', 'categories': [['Toys & Games']]}");
        let esc = ok(r"{'asin': 'a\x62c', 'categories': [['Toys \x26 Games']]}");
        assert_eq!(plain, esc);
    }

    #[test]
    fn string_scan_block_boundaries() {
        for len in 0..40 {
            let body = "abcdefghij".repeat(4)[..len].to_string();
            assert_eq!(
                one_cat(&format!("{{'asin': 'a', 'categories': [['{body}']]}}")),
                body
            );
            assert_eq!(
                one_cat(&format!("{{'asin': 'a', 'categories': [[\"{body}'\"]]}}")),
                format!("{body}'")
            );
            for at in 0..=len {
                let (l, r) = body.split_at(at);
                let line =
                    format!("{{'asin': 'a', 'x': '{l}\\'{r}', 'categories': [['{l}\\t{r}']]}}");
                assert_eq!(one_cat(&line), format!("{l}\t{r}"));
                bad(&format!("{{'asin': 'a', 'x': '{l}\n{r}'}}"));
                bad(&format!("{{'asin': 'a', 'x': '{l}"));
            }
        }
    }

    /// Deterministic fuzzing: mutated and random lines must never panic.
    #[test]
    fn fuzz_never_panics() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let alphabet: Vec<char> = "{}[](),:'\"\\ \r\nxuU0123456789.eE-+TrueFalsNn日é\u{7f}\0"
            .chars()
            .collect();
        let base: Vec<char> = EXAMPLE.chars().collect();
        let mut oks = 0;
        for _ in 0..20_000 {
            let mut v = base.clone();
            for _ in 0..1 + rnd(4) {
                let i = rnd(v.len() + 1);
                match rnd(3) {
                    0 if i < v.len() => {
                        v.remove(i);
                    }
                    1 if i < v.len() => v[i] = alphabet[rnd(alphabet.len())],
                    _ => v.insert(i, alphabet[rnd(alphabet.len())]),
                }
            }
            let s: String = v.into_iter().collect();
            if parse_meta_line(&s).is_ok() {
                oks += 1;
            }
        }
        assert!(oks > 0);
        for _ in 0..20_000 {
            let len = rnd(40);
            let mut s = String::from("{");
            for _ in 0..len {
                s.push(alphabet[rnd(alphabet.len())]);
            }
            let _ = parse_meta_line(&s);
        }
    }
}
