//! A validating JSON scanner that finds where values are without building them.
//!
//! Events are mostly nested objects (`context`, `properties`, `traits`) that
//! Keystone stores as JSON text and reads a handful of fields from. Parsing
//! them into a tree and printing the tree back costs more than the rest of
//! ingest; this scanner checks the text against RFC 8259 once and hands out
//! slices of it instead:
//!
//! * [`object`] — the members of an object, each value as its raw text;
//! * [`value`] — check that a text is one JSON value;
//! * [`Kind::of`], [`string`], [`number`] — read one raw value;
//! * [`compact`] — the text without the whitespace between tokens (what is
//!   stored).
//!
//! Everything that is not valid JSON is refused with the byte offset:
//! unterminated or unescaped-control-character strings, bad escapes, lone
//! UTF-16 surrogates, numbers outside the JSON grammar, trailing commas,
//! trailing text, and nesting deeper than [`MAX_DEPTH`].

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// Nesting at this depth is refused (serde_json's default limit: 127 levels
/// pass, 128 do not).
pub const MAX_DEPTH: usize = 128;

/// Why a text is not valid JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset in the text given to the function that failed.
    pub offset: usize,
    pub message: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

impl std::error::Error for JsonError {}

/// The type of a JSON value, told by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    /// The kind of a valid raw value (as handed out by this module).
    pub fn of(raw: &str) -> Self {
        match raw.as_bytes().first() {
            Some(b'{') => Self::Object,
            Some(b'[') => Self::Array,
            Some(b'"') => Self::String,
            Some(b't' | b'f') => Self::Bool,
            Some(b'n') | None => Self::Null,
            Some(_) => Self::Number,
        }
    }

    /// For messages: "a string", "an object", …
    pub fn describe(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool => "a boolean",
            Self::Number => "a number",
            Self::String => "a string",
            Self::Array => "an array",
            Self::Object => "an object",
        }
    }
}

/// How a raw value is written, which decides how it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// No whitespace between tokens, keys plain and unique: store as is.
    Compact,
    /// Whitespace between tokens: store [`compact`]ed.
    Spaced,
    /// Some object in it has an escaped key (`"caf\u00e9"`) or the same key
    /// twice: store it re-printed from a map (keys decoded, the last of a
    /// duplicate kept), so that JSON functions and text searches see what
    /// the promoted columns saw.
    Irregular,
}

/// The members of a JSON object: keys decoded, values as raw text.
#[derive(Debug, Clone, Default)]
pub struct Members<'a> {
    members: Vec<(Cow<'a, str>, &'a str, Form)>,
}

impl<'a> Members<'a> {
    /// The raw value of `key`; with duplicate keys the last one wins (as
    /// most JSON readers do).
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.member(key).map(|(raw, _)| raw)
    }

    /// The raw value of `key` and how it is written.
    pub fn member(&self, key: &str) -> Option<(&'a str, Form)> {
        self.members
            .iter()
            .rev()
            .find(|(k, ..)| k == key)
            .map(|(_, v, form)| (*v, *form))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &'a str)> {
        self.members.iter().map(|(k, v, _)| (k.as_ref(), *v))
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// Check that `text` is exactly one JSON value (whitespace around allowed)
/// and return it without the surrounding whitespace.
pub fn value(text: &str) -> Result<&str, JsonError> {
    let mut s = Scanner::new(text);
    s.skip_ws();
    let start = s.i;
    s.value(0)?;
    let end = s.i;
    s.end()?;
    Ok(&text[start..end])
}

/// The members of the object `text`, which must be exactly one valid JSON
/// object (every nested value is validated too).
pub fn object(text: &str) -> Result<Members<'_>, JsonError> {
    let mut s = Scanner::new(text);
    s.skip_ws();
    if s.peek() != Some(b'{') {
        return Err(s.error(if s.peek().is_none() {
            "expected a JSON object, found nothing"
        } else {
            "expected a JSON object"
        }));
    }
    let mut members = Vec::new();
    s.object(1, |key, value, form| {
        members.push((string(&text[key]), &text[value], form));
    })?;
    s.end()?;
    Ok(Members { members })
}

/// How the valid raw value `raw` is written (see [`Form`]).
pub fn form(raw: &str) -> Form {
    let mut s = Scanner::new(raw);
    s.skip_ws();
    s.form_of(|s| s.value(0)).unwrap_or(Form::Irregular)
}

/// The text of a valid raw string value (quotes included), unescaped.
/// Borrowed when it has no escapes.
pub fn string(raw: &str) -> Cow<'_, str> {
    let inner = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let hi = hex4(&mut chars);
                let code = if (0xD800..0xDC00).contains(&hi) {
                    // Validated: a low surrogate escape follows.
                    chars.next();
                    chars.next();
                    let lo = hex4(&mut chars);
                    0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF)
                } else {
                    hi
                };
                out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Cow::Owned(out)
}

fn hex4(chars: &mut std::str::Chars<'_>) -> u32 {
    (0..4).fold(0, |acc, _| {
        acc * 16 + chars.next().and_then(|c| c.to_digit(16)).unwrap_or(0)
    })
}

/// A valid raw number value, as the JSON number it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i64),
    UInt(u64),
    Float(f64),
}

impl Number {
    pub fn as_f64(self) -> f64 {
        match self {
            Self::Int(v) => v as f64,
            Self::UInt(v) => v as f64,
            Self::Float(v) => v,
        }
    }

    /// Whether the number was written as an integer that fits 64 bits.
    pub fn is_integer(self) -> bool {
        !matches!(self, Self::Float(_))
    }
}

impl fmt::Display for Number {
    /// Integers as written; other numbers in their shortest round-trip form
    /// with a fraction or exponent (`1.5`, `100.0`, `1e+300`), as serde_json
    /// prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Int(v) => write!(f, "{v}"),
            Self::UInt(v) => write!(f, "{v}"),
            Self::Float(v) if !v.is_finite() => f.write_str("null"),
            Self::Float(v) => {
                let mut s = format!("{v:e}");
                // `{:e}` gives `1.5e0`, `1e2`, `1.25e-7`: choose the plain
                // form for moderate exponents, like JavaScript and serde_json.
                let exp: i32 = s
                    .split_once('e')
                    .and_then(|(_, e)| e.parse().ok())
                    .unwrap_or(0);
                if (-5..16).contains(&exp) {
                    s = format!("{v}");
                    if !s.contains('.') {
                        s.push_str(".0");
                    }
                } else if exp >= 0 {
                    s = s.replacen('e', "e+", 1);
                }
                f.write_str(&s)
            }
        }
    }
}

/// A valid raw number value. Integers that fit 64 bits stay integers; the
/// rest become `f64` (rounded; out-of-range values are infinite).
pub fn number(raw: &str) -> Number {
    let integral = !raw.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'));
    // `-0` is the float negative zero, as serde_json reads it.
    if integral && !raw.starts_with("-0") {
        if let Ok(v) = raw.parse::<i64>() {
            return Number::Int(v);
        }
        if let Ok(v) = raw.parse::<u64>() {
            return Number::UInt(v);
        }
    }
    Number::Float(raw.parse::<f64>().unwrap_or(f64::NAN))
}

/// `raw` (valid JSON) without whitespace between tokens; borrowed when it
/// has none.
pub fn compact(raw: &str) -> Cow<'_, str> {
    // Copy the runs between whitespace bytes outside strings; a cut only
    // falls on an ASCII byte, so every run is whole UTF-8.
    let b = raw.as_bytes();
    let mut out: Option<String> = None;
    let mut run = 0;
    let mut in_string = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else if c == b'"' {
            in_string = true;
        } else if is_ws(c) {
            out.get_or_insert_with(|| String::with_capacity(raw.len()))
                .push_str(&raw[run..i]);
            run = i + 1;
        }
        i += 1;
    }
    match out {
        None => Cow::Borrowed(raw),
        Some(mut out) => {
            out.push_str(&raw[run..]);
            Cow::Owned(out)
        }
    }
}

/// Whether any byte of `word` ends or escapes a string, or is a control
/// character (bit tricks from "Bit Twiddling Hacks": a byte is zero iff
/// `(v - 0x01) & !v & 0x80` has its top bit; below `n` iff
/// `(v - n) & !v & 0x80` does, for `n` ≤ 128).
fn has_special_byte(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let quote = zero_in(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_in(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    (quote | backslash | control) != 0
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// How many runs of whitespace were skipped so far.
    ws: usize,
    /// How many objects with an escaped or a repeated key were seen so far.
    irregular: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            b: text.as_bytes(),
            i: 0,
            ws: 0,
            irregular: 0,
        }
    }

    fn error(&self, message: &'static str) -> JsonError {
        JsonError {
            offset: self.i,
            message,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        let start = self.i;
        while self.i < self.b.len() && is_ws(self.b[self.i]) {
            self.i += 1;
        }
        if self.i != start {
            self.ws += 1;
        }
    }

    fn expect(&mut self, c: u8, message: &'static str) -> Result<(), JsonError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.error(message))
        }
    }

    /// Only whitespace may follow.
    fn end(&mut self) -> Result<(), JsonError> {
        self.skip_ws();
        if self.i == self.b.len() {
            Ok(())
        } else {
            Err(self.error("unexpected text after the value"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), JsonError> {
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{') => self.object(depth + 1, |_, _, _| {}),
            Some(b'[') => self.array(depth + 1),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), JsonError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.error("expected a value"))
        }
    }

    /// Run `scan` and tell how the text it scanned is written.
    fn form_of(
        &mut self,
        scan: impl FnOnce(&mut Self) -> Result<(), JsonError>,
    ) -> Result<Form, JsonError> {
        let (ws, irregular) = (self.ws, self.irregular);
        scan(self)?;
        Ok(if self.irregular != irregular {
            Form::Irregular
        } else if self.ws != ws {
            Form::Spaced
        } else {
            Form::Compact
        })
    }

    /// An object starting at the current `{`; `member` sees each member's
    /// key span (quotes included), value span, and how the value is written.
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(Range<usize>, Range<usize>, Form),
    ) -> Result<(), JsonError> {
        if depth >= MAX_DEPTH {
            return Err(self.error("nested too deep"));
        }
        self.i += 1;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        // The keys seen, to notice an escaped or repeated one (a few on the
        // stack; a large object spills to the heap). A 64-bit filter of
        // (length, last byte) skips the comparisons for most keys.
        let mut seen = [(0usize, 0usize); 16];
        let mut more: Vec<(usize, usize)> = Vec::new();
        let mut count = 0;
        let mut filter = 0u64;
        let mut irregular = false;
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a key"));
            }
            let key_start = self.i;
            let escaped = self.string()?;
            let key = key_start..self.i;
            if !irregular {
                let b = self.b;
                let name = &b[key.start + 1..key.end - 1];
                let bit = 1u64
                    << ((name.len() as u64 * 7 + u64::from(name.last().copied().unwrap_or(0)))
                        % 64);
                let same = |&(a, z): &(usize, usize)| &b[a..z] == name;
                irregular = escaped
                    || (filter & bit != 0
                        && (seen[..count.min(16)].iter().any(same) || more.iter().any(same)));
                filter |= bit;
                let span = (key.start + 1, key.end - 1);
                if count < 16 {
                    seen[count] = span;
                } else {
                    more.push(span);
                }
                count += 1;
                if irregular {
                    self.irregular += 1;
                }
            }
            self.skip_ws();
            self.expect(b':', "expected `:`")?;
            self.skip_ws();
            let value_start = self.i;
            let form = self.form_of(|s| s.value(depth))?;
            member(key, value_start..self.i, form);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), JsonError> {
        if depth >= MAX_DEPTH {
            return Err(self.error("nested too deep"));
        }
        self.i += 1;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.value(depth)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.skip_ws();
                }
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    /// A string starting at the current `"`.
    /// A string starting at the current `"`; tells whether it has escapes.
    fn string(&mut self) -> Result<bool, JsonError> {
        let start = self.i;
        let mut escaped = false;
        self.i += 1;
        loop {
            // The common case: plain text up to the closing quote, eight
            // bytes at a time while none of them is special.
            while let Some(word) = self.b.get(self.i..self.i + 8)
                && let Ok(word) = <[u8; 8]>::try_from(word)
                && !has_special_byte(u64::from_le_bytes(word))
            {
                self.i += 8;
            }
            while let Some(&c) = self.b.get(self.i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            match self.peek() {
                None => {
                    self.i = start;
                    return Err(self.error("unterminated string"));
                }
                Some(b'"') => {
                    self.i += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                Some(_) => return Err(self.error("control character in a string")),
            }
        }
    }

    fn escape(&mut self) -> Result<(), JsonError> {
        let at = self.i;
        self.i += 1;
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.i += 1;
                Ok(())
            }
            Some(b'u') => {
                self.i += 1;
                let code = self.hex4(at)?;
                if (0xDC00..0xE000).contains(&code) {
                    self.i = at;
                    return Err(self.error("lone UTF-16 surrogate in a string"));
                }
                if (0xD800..0xDC00).contains(&code) {
                    let low_ok = self.b[self.i..].starts_with(b"\\u") && {
                        self.i += 2;
                        (0xDC00..0xE000).contains(&self.hex4(at)?)
                    };
                    if !low_ok {
                        self.i = at;
                        return Err(self.error("lone UTF-16 surrogate in a string"));
                    }
                }
                Ok(())
            }
            _ => {
                self.i = at;
                Err(self.error("invalid escape in a string"))
            }
        }
    }

    fn hex4(&mut self, at: usize) -> Result<u32, JsonError> {
        let digits = self.b.get(self.i..self.i + 4);
        let code = digits.and_then(|d| {
            d.iter().try_fold(0u32, |acc, &c| {
                (c as char).to_digit(16).map(|v| acc * 16 + v)
            })
        });
        match code {
            Some(code) => {
                self.i += 4;
                Ok(code)
            }
            None => {
                self.i = at;
                Err(self.error("invalid \\u escape in a string"))
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<(), JsonError> {
        let start = self.i;
        let bad = |s: &mut Self| {
            s.i = start;
            Err(s.error("invalid number"))
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return bad(self),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return bad(self);
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return bad(self);
            }
        }
        // `01`, `1a`: a number must end at a delimiter.
        if matches!(
            self.peek(),
            Some(b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'.')
        ) {
            return bad(self);
        }
        // Like serde_json, refuse what no f64 holds (`1e400`): readers of the
        // stored text would fail on it. Only an exponent or > 300 digits can.
        let text = &self.b[start..self.i];
        if (text.len() > 300 || text.iter().any(|c| matches!(c, b'e' | b'E')))
            && !std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse::<f64>().ok())
                .is_some_and(f64::is_finite)
        {
            self.i = start;
            return Err(self.error("number out of range"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case serde_json accepts this scanner accepts, and the reverse.
    #[test]
    fn agrees_with_serde_json_on_validity() {
        let cases = [
            r#"{}"#,
            r#"  {"a": 1} "#,
            r#"{"a":[1,2,{"b":null}],"c":"x\"y","d":-0.5e-3,"e":true,"f":false}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":-}"#,
            r#"{"a":1e}"#,
            r#"{"a":1E+2}"#,
            r#"{"a":tru}"#,
            r#"{"a":nulll}"#,
            r#"{"a":"\q"}"#,
            r#"{"a":"\u00e9\ud83d\ude00"}"#,
            r#"{"a":"\ud83d"}"#,
            r#"{"a":"\ude00"}"#,
            r#"{"a":"\u12"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":[1,2]"#,
            r#"{"a":"unterminated}"#,
            r#"{"a":1} x"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[]}"#,
            r#"{1:2}"#,
            r#"{"a":1}{"#,
        ];
        for case in cases {
            let ours = object(case).is_ok();
            let theirs = serde_json::from_str::<serde_json::Value>(case)
                .map(|v| v.is_object())
                .unwrap_or(false);
            assert_eq!(ours, theirs, "{case}: ours {:?}", object(case).err());
        }
    }

    /// Random edits of real messages: valid exactly when serde_json says so.
    #[test]
    fn mutated_messages_agree_with_serde_json() {
        let seeds = [
            r#"{"type":"track","event":"Order Completed","userId":"u1","properties":{"revenue":42.5,"items":[{"id":"p\u00e9","qty":2}],"ok":true,"none":null},"context":{"ip":"1.2.3.4","traits":{"email":"a@b.co"}}}"#,
            r#"{ "type" : "page", "anonymousId" : "a-1", "properties" : { "url" : "https://x/y?q=\"z\"", "n" : -0.5e-3 } }"#,
            r#"{"type":"identify","userId":12,"traits":{"tags":["a","b"],"nested":{"deep":[[1],[2,{"x":false}]]}}}"#,
        ];
        let alphabet = b"{}[]\",:\\ 0123456789eE+-.tfnulrsax\t\n";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let (mut checked, mut valid) = (0, 0);
        for round in 0..30_000 {
            let mut bytes = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..1 + next(3) {
                let at = next(bytes.len());
                let c = alphabet[next(alphabet.len())];
                match next(3) {
                    0 => bytes[at] = c,
                    1 => bytes.insert(at, c),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            let theirs = serde_json::from_str::<serde_json::Value>(text)
                .map(|v| v.is_object())
                .unwrap_or(false);
            let ours = object(text).is_ok();
            assert_eq!(ours, theirs, "{text}: ours {:?}", object(text).err());
            checked += 1;
            valid += usize::from(ours);
        }
        // Both outcomes are well represented.
        assert!(
            checked > 20_000 && valid > 2_000 && checked - valid > 2_000,
            "{checked} {valid}"
        );
    }

    #[test]
    fn nesting_is_bounded_where_serde_json_bounds_it() {
        for levels in 120..135 {
            // One object around levels - 1 arrays.
            let text = format!(
                "{{\"a\":{}1{}}}",
                "[".repeat(levels - 1),
                "]".repeat(levels - 1)
            );
            let theirs = serde_json::from_str::<serde_json::Value>(&text).is_ok();
            assert_eq!(object(&text).is_ok(), theirs, "{levels} levels");
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(object(&deep).unwrap_err().message, "nested too deep");
    }

    #[test]
    fn numbers_no_f64_holds_are_refused() {
        for (text, ok) in [
            (r#"{"a":1e400}"#, false),
            (r#"{"a":-1e400}"#, false),
            (r#"{"a":1e-400}"#, true),
            (r#"{"a":1.7e308}"#, true),
        ] {
            assert_eq!(object(text).is_ok(), ok, "{text}");
            let theirs = serde_json::from_str::<serde_json::Value>(text).is_ok();
            assert_eq!(theirs, ok, "{text}");
        }
        let long = format!(r#"{{"a":{}}}"#, "9".repeat(400));
        assert_eq!(object(&long).unwrap_err().message, "number out of range");
    }

    #[test]
    fn escaped_or_repeated_keys_make_a_value_irregular() {
        let many: Vec<String> = (0..18).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let text = format!(
            r#"{{"plain":{{"a":1,"b":[{{"c":2}}]}},"spaced":{{"a": 1}},"escaped":{{"caf\u00e9":1}},"twice":{{"a":1,"b":{{"x":1,"x":2}}}},"many":{{{},"k17":0}}}}"#,
            many.join(",")
        );
        let m = object(&text).unwrap();
        let form = |k: &str| m.member(k).unwrap().1;
        assert_eq!(form("plain"), Form::Compact);
        assert_eq!(form("spaced"), Form::Spaced);
        assert_eq!(form("escaped"), Form::Irregular);
        assert_eq!(form("twice"), Form::Irregular);
        assert_eq!(form("many"), Form::Irregular);
        assert_eq!(super::form(r#"{"a": {"b":1}}"#), Form::Spaced);
        assert_eq!(super::form(r#"{"a":{"b":1,"b":2}}"#), Form::Irregular);
        assert_eq!(super::form(r#"{"a":{"b":1,"c":2}}"#), Form::Compact);
    }

    #[test]
    fn members_are_raw_slices_and_the_last_duplicate_wins() {
        let m = object(r#"{ "a" : {"x": [1, 2]}, "k\u0065y": "v", "a": 3 }"#).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m.get("a"), Some("3"));
        assert_eq!(m.get("key"), Some("\"v\""));
        assert_eq!(m.iter().next(), Some(("a", r#"{"x": [1, 2]}"#)));
        let m = object(r#"{"a":{"b":[1,"x y"]},"c":{"d": 1},"e":[ ]}"#).unwrap();
        assert_eq!(m.member("a"), Some((r#"{"b":[1,"x y"]}"#, Form::Compact)));
        assert_eq!(m.member("c"), Some((r#"{"d": 1}"#, Form::Spaced)));
        assert_eq!(m.member("e"), Some(("[ ]", Form::Spaced)));
        assert!(m.get("missing").is_none());
    }

    #[test]
    fn errors_say_where() {
        let err = object(r#"{"a": [1, 2,]}"#).unwrap_err();
        assert_eq!(err.to_string(), "expected a value at byte 12");
        assert_eq!(
            object("[1]").unwrap_err().to_string(),
            "expected a JSON object at byte 0"
        );
        assert_eq!(value(" 5 ").unwrap(), "5");
    }

    #[test]
    fn long_strings_find_their_special_bytes() {
        // Specials at every offset of an 8-byte word, after plain runs.
        for pad in 0..20 {
            let plain = "x".repeat(pad);
            let ok = format!(r#"{{"k":"{plain}é\n{plain}"}}"#);
            assert_eq!(
                string(object(&ok).unwrap().get("k").unwrap()),
                format!("{plain}é\n{plain}")
            );
            let control = format!("{{\"k\":\"{plain}\u{1}{plain}\"}}");
            assert_eq!(
                object(&control).unwrap_err().message,
                "control character in a string"
            );
            let open = format!(r#"{{"k":"{plain}"#);
            assert_eq!(object(&open).unwrap_err().message, "unterminated string");
        }
    }

    #[test]
    fn strings_decode_escapes() {
        assert!(matches!(string(r#""plain""#), Cow::Borrowed("plain")));
        assert_eq!(
            string(r#""a\"b\\c\/d\n\u00e9\ud83d\ude00""#),
            "a\"b\\c/d\né😀"
        );
    }

    #[test]
    fn numbers_print_like_serde_json() {
        for raw in [
            "0",
            "-7",
            "18446744073709551615",
            "1.5",
            "1.50",
            "1e2",
            "-0.5e-3",
            "1e300",
            "0.1",
            "1e-7",
            "2.5E+20",
        ] {
            let ours = number(raw).to_string();
            let theirs = serde_json::from_str::<serde_json::Number>(raw)
                .unwrap()
                .to_string();
            assert_eq!(ours, theirs, "{raw}");
        }
        // Past 64 bits an integer is a float; Rust rounds it correctly
        // (serde_json without `float_roundtrip` may be one ulp off).
        assert_eq!(
            number("123456789012345678901234").to_string(),
            "1.2345678901234569e+23"
        );
        assert!(number("12").is_integer());
        assert_eq!(number("-0").to_string(), "-0.0");
        assert!(!number("12.0").is_integer());
        assert_eq!(number("2.5").as_f64(), 2.5);
    }

    #[test]
    fn compact_removes_whitespace_outside_strings_only() {
        assert!(matches!(compact(r#"{"a":1}"#), Cow::Borrowed(_)));
        assert_eq!(
            compact("{ \"a b\" : [ 1 ,\n\t2 ], \"c\": \"x \\\" y\" }"),
            r#"{"a b":[1,2],"c":"x \" y"}"#
        );
    }
}
