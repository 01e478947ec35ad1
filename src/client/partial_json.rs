//! Tool input JSON as the official SDKs read it from a stream, complete or cut short.
//!
//! The Python SDK parses the accumulated `input_json_delta` text with jiter in partial mode
//! after every delta, so a tool call cut by `max_tokens` keeps everything the model produced
//! that is whole. This follows jiter's partial mode:
//! - an object or array that the input ends inside is closed and kept, with the members that
//!   were complete;
//! - a string, a literal (`tru`) or a number (`1.`, `-`) that the input ends inside is dropped,
//!   and so is an object key whose value never came;
//! - a number the input ends right after (`12`) is kept;
//! - after a complete value, anything but `,` or the closing bracket ends the input there, as
//!   if it were cut (`[1 2]` reads as `[1]`), and after a complete top-level value the rest of
//!   the input is ignored.
//!
//! Anything else that is not JSON is an error, and so is input that ends before any value.

use serde_json::{Map, Number, Value};

/// Why the text is not JSON, even cut short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at byte {at}")]
pub struct PartialJsonError {
    pub message: String,
    pub at: usize,
}

/// Parses `text` as JSON that may be cut off anywhere.
pub fn parse(text: &str) -> Result<Value, PartialJsonError> {
    let mut parser = Parser {
        bytes: text.as_bytes(),
        text,
        at: 0,
        depth: 0,
    };
    match parser.value()? {
        Parsed::Whole(value) | Parsed::Cut(Some(value)) => Ok(value),
        Parsed::Cut(None) => Err(parser.error("the input ends before a value")),
    }
}

/// Nesting beyond this is refused. jiter refuses past 201 levels, but serde_json reads at most
/// 128, and the input sits three levels down in the stored Message, which msgbatch reads
/// back for grading: deeper input is kept as text in a note instead, so that every stored
/// message can be read again.
const MAX_DEPTH: usize = 120;

enum Parsed {
    /// A complete value, with input after it.
    Whole(Value),
    /// The input ended inside or right after this value: what of it can be kept.
    Cut(Option<Value>),
}

struct Parser<'a> {
    bytes: &'a [u8],
    text: &'a str,
    at: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, message: &str) -> PartialJsonError {
        PartialJsonError {
            message: message.to_owned(),
            at: self.at,
        }
    }

    fn skip_whitespace(&mut self) {
        while self
            .bytes
            .get(self.at)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn value(&mut self) -> Result<Parsed, PartialJsonError> {
        self.skip_whitespace();
        match self.peek() {
            None => Ok(Parsed::Cut(None)),
            Some(b'{') => self.nested(Self::object),
            Some(b'[') => self.nested(Self::array),
            Some(b'"') => Ok(match self.string()? {
                Some(s) => Parsed::Whole(Value::String(s)),
                None => Parsed::Cut(None),
            }),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn nested(
        &mut self,
        parse: fn(&mut Self) -> Result<Parsed, PartialJsonError>,
    ) -> Result<Parsed, PartialJsonError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.depth += 1;
        let parsed = parse(self);
        self.depth -= 1;
        parsed
    }

    fn object(&mut self) -> Result<Parsed, PartialJsonError> {
        self.at += 1;
        let mut map = Map::new();
        let cut = |map| Ok(Parsed::Cut(Some(Value::Object(map))));
        self.skip_whitespace();
        match self.peek() {
            None => return cut(map),
            Some(b'}') => {
                self.at += 1;
                return Ok(Parsed::Whole(Value::Object(map)));
            }
            _ => {}
        }
        loop {
            self.skip_whitespace();
            match self.peek() {
                None => return cut(map),
                Some(b'"') => {}
                Some(_) => return Err(self.error("expected a string key")),
            }
            let Some(key) = self.string()? else {
                return cut(map);
            };
            self.skip_whitespace();
            match self.peek() {
                None => return cut(map),
                Some(b':') => self.at += 1,
                Some(_) => return Err(self.error("expected `:` after a key")),
            }
            match self.value()? {
                Parsed::Whole(value) => {
                    map.insert(key, value);
                }
                Parsed::Cut(value) => {
                    if let Some(value) = value {
                        map.insert(key, value);
                    }
                    return cut(map);
                }
            }
            self.skip_whitespace();
            match self.peek() {
                None => return cut(map),
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Parsed::Whole(Value::Object(map)));
                }
                Some(_) => return cut(map),
            }
        }
    }

    fn array(&mut self) -> Result<Parsed, PartialJsonError> {
        self.at += 1;
        let mut items = Vec::new();
        let cut = |items| Ok(Parsed::Cut(Some(Value::Array(items))));
        self.skip_whitespace();
        match self.peek() {
            None => return cut(items),
            Some(b']') => {
                self.at += 1;
                return Ok(Parsed::Whole(Value::Array(items)));
            }
            _ => {}
        }
        loop {
            match self.value()? {
                Parsed::Whole(value) => items.push(value),
                Parsed::Cut(value) => {
                    items.extend(value);
                    return cut(items);
                }
            }
            self.skip_whitespace();
            match self.peek() {
                None => return cut(items),
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Parsed::Whole(Value::Array(items)));
                }
                Some(_) => return cut(items),
            }
        }
    }

    /// A string, or `None` when the input ends inside it.
    fn string(&mut self) -> Result<Option<String>, PartialJsonError> {
        let start = self.at;
        self.at += 1;
        let mut escaped = false;
        while let Some(byte) = self.peek() {
            self.at += 1;
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => {
                    // serde_json checks the escapes and the control characters.
                    return serde_json::from_str(&self.text[start..self.at])
                        .map(Some)
                        .map_err(|e| PartialJsonError {
                            message: format!("invalid string: {e}"),
                            at: start,
                        });
                }
                _ => {}
            }
        }
        Ok(None)
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Parsed, PartialJsonError> {
        let rest = &self.bytes[self.at..];
        if rest.starts_with(word.as_bytes()) {
            self.at += word.len();
            return Ok(Parsed::Whole(value));
        }
        if word.as_bytes().starts_with(rest) {
            self.at = self.bytes.len();
            return Ok(Parsed::Cut(None));
        }
        Err(self.error("expected a value"))
    }

    fn number(&mut self) -> Result<Parsed, PartialJsonError> {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
        {
            self.at += 1;
        }
        let text = &self.text[start..self.at];
        let ended = self.at == self.bytes.len();
        match serde_json::from_str::<Number>(text) {
            Ok(number) if ended => Ok(Parsed::Cut(Some(Value::Number(number)))),
            Ok(number) => Ok(Parsed::Whole(Value::Number(number))),
            // `1.`, `-` or `1e+` at the end of the input: a number not finished.
            Err(_) if ended && is_number_prefix(text) => Ok(Parsed::Cut(None)),
            Err(e) => Err(PartialJsonError {
                message: format!("invalid number: {e}"),
                at: start,
            }),
        }
    }
}

/// Whether `text` can begin a JSON number: `-?(0|[1-9][0-9]*)(\.[0-9]*)?([eE][+-]?[0-9]*)?`.
fn is_number_prefix(text: &str) -> bool {
    let mut rest = text.strip_prefix('-').unwrap_or(text);
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let int = digits(rest);
    if int > 1 && rest.starts_with('0') {
        return false;
    }
    rest = &rest[int..];
    if let Some(fraction) = rest.strip_prefix('.') {
        if int == 0 {
            return false;
        }
        rest = &fraction[digits(fraction)..];
    }
    if let Some(exponent) = rest.strip_prefix(['e', 'E']) {
        if int == 0 {
            return false;
        }
        let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        rest = &exponent[digits(exponent)..];
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Each case as jiter 0.19's `from_json(text, partial_mode=True)` reads it (the parser
    /// behind the Python SDK 2.14.0's stream rebuild).
    #[test]
    fn cut_input_reads_as_jiter_partial_mode_reads_it() {
        let cases = [
            (r#"{"a": "hel"#, json!({})),
            (r#"{"a": 1, "b"#, json!({"a": 1})),
            (r#"{"a": 12"#, json!({"a": 12})),
            (r#"{"a": 1."#, json!({})),
            (r#"{"a": tr"#, json!({})),
            (r#"{"a": [1, 2"#, json!({"a": [1, 2]})),
            (r#"{"a": {"b": "c""#, json!({"a": {"b": "c"}})),
            (r#"{"a":"#, json!({})),
            (r#"{"a""#, json!({})),
            ("{", json!({})),
            ("[", json!([])),
            (r#"{"a": -"#, json!({})),
            (r#"{"a": 1e"#, json!({})),
            (r#"{"a": "x\"#, json!({})),
            (r#"{"a": "x\u00"#, json!({})),
            (r#"{"a": null"#, json!({"a": null})),
            (r#"{"a": nu"#, json!({})),
            (r#"{"a": ["x", "y"#, json!({"a": ["x"]})),
            (r#"{"q": "a"}"#, json!({"q": "a"})),
            (r#"{"a": 1} x"#, json!({"a": 1})),
            (r#"{"a": 1,"#, json!({"a": 1})),
            (r#"  {"a": 1  "#, json!({"a": 1})),
            (r#"{"a": fals"#, json!({})),
            ("12", json!(12)),
            (r#"{"a": ["#, json!({"a": []})),
            (r#"{"a": [{"b": "x"#, json!({"a": [{}]})),
            (r#"{"a": {"#, json!({"a": {}})),
            (r#"{"a": 12.5e"#, json!({})),
            (
                r#"{"city": "Paris", "days": 3, "units": "cel"#,
                json!({"city": "Paris", "days": 3}),
            ),
            ("[1 2]", json!([1])),
            ("[1, 2 3]", json!([1, 2])),
            (r#"{"a": 1 "b": 2}"#, json!({"a": 1})),
            (r#"{"a": [1 2]}"#, json!({"a": [1]})),
            ("[1,2]x", json!([1, 2])),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn text_that_is_not_json_even_cut_short_is_an_error() {
        for text in [
            "nope",
            r#""abc"#,
            "",
            "   ",
            r#"{"a" 1}"#,
            r#"{"a": 01}"#,
            "{a: 1}",
            "[1,]",
            r#"{"a":1,}"#,
            "[1,,2]",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
        // 120 levels parse, 121 do not (serde_json reads a stored message to 128 levels).
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(parse(&nested(120)).is_ok());
        assert!(parse(&nested(121)).is_err());
        assert!(parse(&"[".repeat(100_000)).is_err());
    }
}
