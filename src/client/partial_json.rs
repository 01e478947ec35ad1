//! Tool input JSON as the official SDKs read it from a stream, complete or cut short.
//!
//! The Python SDK parses the accumulated `input_json_delta` text with jiter in partial mode
//! after every delta, so a tool call cut by `max_tokens` keeps everything the model produced
//! that is whole. This reads it with the same parser, the `jiter` crate, in the same mode:
//! - an object or array that the input ends inside is closed and kept, with the members that
//!   were complete;
//! - a string, a literal (`tru`) or a number (`1.`, `-`) that the input ends inside is dropped,
//!   and so is an object key whose value never came;
//! - a number the input ends right after (`12`) is kept;
//! - after a complete value, anything but `,` or the closing bracket ends the input there, as
//!   if it were cut (`[1 2]` reads as `[1]`), and after a complete top-level value the rest of
//!   the input is ignored.
//!
//! Anything else that is not JSON is an error, and so is input that ends before any value, a
//! number too large for a float (`1e400`), and input nested deeper than `MAX_DEPTH`.

use jiter::{JsonErrorType, JsonValue, PartialMode};
use serde_json::{Map, Number, Value};

/// Why the text is not JSON, even cut short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at byte {at}")]
pub struct PartialJsonError {
    pub message: String,
    pub at: usize,
}

/// Nesting beyond this is refused. jiter refuses past 200 levels, but serde_json reads at most
/// 128, and the input sits three levels down in the stored Message, which msgbatch reads
/// back for grading: deeper input is kept as text in a note instead, so that every stored
/// message can be read again.
const MAX_DEPTH: usize = 120;

/// Parses `text` as JSON that may be cut off anywhere.
pub fn parse(text: &str) -> Result<Value, PartialJsonError> {
    let parsed = JsonValue::parse_with_config(text.as_bytes(), false, PartialMode::On);
    let value = match parsed {
        Ok(value) => value,
        Err(e) if e.error_type == JsonErrorType::RecursionLimitExceeded => {
            return Err(too_deep(text));
        }
        Err(e) => {
            return Err(PartialJsonError {
                message: e.error_type.to_string(),
                at: e.index,
            });
        }
    };
    if depth(&value) > MAX_DEPTH {
        return Err(too_deep(text));
    }
    if has_reserved_key(&value) {
        return Err(PartialJsonError {
            message: "an object key that serde_json reads as a value of its own".to_owned(),
            at: RESERVED_KEYS
                .iter()
                .filter_map(|key| text.find(key))
                .min()
                .unwrap_or(0),
        });
    }
    to_serde(value).ok_or_else(|| PartialJsonError {
        message: "a number is too large for a float".to_owned(),
        at: first_infinite_number(text).unwrap_or(0),
    })
}

/// Object keys serde_json gives a meaning of its own when it reads a value back (a raw value,
/// an exact number): an object holding one would not read back as it was stored, so such
/// input is kept as text, as input nested too deeply is.
const RESERVED_KEYS: [&str; 2] = [
    "$serde_json::private::RawValue",
    "$serde_json::private::Number",
];

/// Whether an object in `value` has a key of [`RESERVED_KEYS`].
fn has_reserved_key(value: &JsonValue<'_>) -> bool {
    match value {
        JsonValue::Array(items) => items.iter().any(has_reserved_key),
        JsonValue::Object(members) => members
            .iter()
            .any(|(key, v)| RESERVED_KEYS.contains(&key.as_ref()) || has_reserved_key(v)),
        _ => false,
    }
}

/// The levels of arrays and objects in `value`, counting itself.
fn depth(value: &JsonValue<'_>) -> usize {
    match value {
        JsonValue::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        JsonValue::Object(members) => 1 + members.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

/// The error for input nested deeper than [`MAX_DEPTH`], at the bracket that opens the first
/// level too many.
fn too_deep(text: &str) -> PartialJsonError {
    let (mut level, mut in_string, mut escaped) = (0_usize, false, false);
    let at = text.bytes().position(|byte| {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            b'[' | b'{' if !in_string => level += 1,
            b']' | b'}' if !in_string => level = level.saturating_sub(1),
            _ => {}
        }
        level > MAX_DEPTH
    });
    PartialJsonError {
        message: "nested too deeply".to_owned(),
        at: at.unwrap_or(0),
    }
}

/// Where the first number outside strings that no float holds (`1e400`) starts.
fn first_infinite_number(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let (mut at, mut in_string, mut escaped) = (0, false, false);
    while at < bytes.len() {
        let byte = bytes[at];
        match byte {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            b'-' | b'0'..=b'9' if !in_string => {
                let end = bytes[at..]
                    .iter()
                    .position(|b| !matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .map_or(bytes.len(), |len| at + len);
                if text[at..end].parse::<f64>().is_ok_and(f64::is_infinite) {
                    return Some(at);
                }
                at = end;
                continue;
            }
            _ => {}
        }
        at += 1;
    }
    None
}

/// jiter's value as serde_json's, or `None` when it holds a number that serde_json cannot:
/// one past the floats (`1e400`, which jiter reads as infinity).
fn to_serde(value: JsonValue<'_>) -> Option<Value> {
    Some(match value {
        JsonValue::Null => Value::Null,
        JsonValue::Bool(b) => Value::Bool(b),
        JsonValue::Int(i) => Value::Number(i.into()),
        // Past i64: serde_json holds up to u64 exactly and larger integers as floats, as it
        // reads them itself.
        JsonValue::BigInt(big) => Value::Number(serde_json::from_str(&big.to_string()).ok()?),
        JsonValue::Float(f) => Value::Number(Number::from_f64(f)?),
        JsonValue::Str(s) => Value::String(s.into_owned()),
        JsonValue::Array(items) => Value::Array(
            unwrap_shared(items)
                .into_iter()
                .map(to_serde)
                .collect::<Option<_>>()?,
        ),
        JsonValue::Object(members) => {
            let mut map = Map::new();
            // A key given twice keeps its first place and its last value, as in a Python dict.
            for (key, value) in unwrap_shared(members) {
                map.insert(key.into_owned(), to_serde(value)?);
            }
            Value::Object(map)
        }
    })
}

/// The items of a container jiter built, without copying them when nothing else holds it.
fn unwrap_shared<T: Clone>(items: std::sync::Arc<Vec<T>>) -> Vec<T> {
    std::sync::Arc::unwrap_or_clone(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_key_serde_json_reserves_is_refused_so_that_what_is_kept_reads_back() {
        // Found by the fuzzer: serde_json reads `{"$serde_json::private::RawValue": …}` back
        // as the JSON inside the string it expects there.
        let cut = "{\"$serde_json::private::RawValue\":{\"!\": \r\r\r{\"!\": ";
        let error = parse(cut).unwrap_err();
        assert_eq!(error.at, 2, "{error}");
        let nested = r#"[1, {"a": {"$serde_json::private::Number": "1"}}]"#;
        assert!(parse(nested).is_err());
        crate::fuzz::partial_json(cut.as_bytes());
        assert_eq!(
            parse(r#"{"$serde_json": 1}"#),
            Ok(json!({"$serde_json": 1}))
        );
    }

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
            // A number ends where jiter's grammar ends it; what follows is read as after a value.
            ("0-", json!(0)),
            ("[7-8]", json!([7])),
            (r#"{"a": 2+"#, json!({"a": 2})),
            ("[1e5.", json!([100000.0])),
            ("[1.5e3x", json!([1500.0])),
            ("-0", json!(0)),
            (r#"{"a":1,"a":2,"b":3}"#, json!({"a": 2, "b": 3})),
            (r#"["\u00e9", "\ud83d\ude00"]"#, json!(["é", "😀"])),
            (r#"["\ud83d"#, json!([])),
            (
                "18446744073709551615",
                json!(18_446_744_073_709_551_615_u64),
            ),
            ("[0.1, -2.5E-3]", json!([0.1, -0.0025])),
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
            "[1e400]",
            r#"["\ud800"]"#,
            "[\"a\u{1}\"]",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
        // 120 levels parse, 121 do not (serde_json reads a stored message to 128 levels).
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(parse(&nested(120)).is_ok());
        assert_eq!(parse(&nested(121)).map_err(|e| e.at), Err(120));
        assert_eq!(parse("[1, 1e400]").map_err(|e| e.at), Err(4));
        assert!(parse(&"[".repeat(100_000)).is_err());
    }
}
