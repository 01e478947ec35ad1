//! The properties the fuzz targets check, one function per input msgbatch reads from outside:
//! the JSONL reader, the CSV reader with a prompt template, the SSE decoder and stream rebuild,
//! the `expect` grader parser, the price-file parser and the partial tool-input JSON parser.
//!
//! Each takes arbitrary bytes and panics only when a property fails: no input may panic the
//! code under test, and a bad input must get an error naming its file and line (and field,
//! where the reader knows it). `fuzz/` drives these with libFuzzer; the ordinary test run
//! replays the committed seeds and regression inputs under `fuzz/seeds/` and feeds each
//! function random inputs with proptest.

use std::path::PathBuf;

use serde_json::Value;

use crate::client::partial_json;
use crate::client::sse::{Accumulator, Decoder};
use crate::eval::{self, Graded};
use crate::jobs::{self, Defaults, InputFormat, LoadOptions};
use crate::pricing::PriceTable;

/// A property check over arbitrary input.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/` file and seed folder.
pub const TARGETS: [(&str, Target); 6] = [
    ("jsonl", jsonl),
    ("csv_template", csv_template),
    ("sse", sse),
    ("expect", expect),
    ("prices", prices),
    ("partial_json", partial_json),
];

fn load(name: &str, format: InputFormat, template: Option<String>, data: &[u8]) {
    let options = LoadOptions {
        path: PathBuf::from(name),
        format,
        defaults: Defaults {
            model: Some("m".to_owned()),
            max_tokens: Some(16),
            ..Defaults::default()
        },
        models: Vec::new(),
        repeat: 1,
        prompt_template: template,
        expect_kind: "contains",
        skip_invalid: true,
    };
    // A record starts on a line that exists: one more than the line breaks in the text.
    let lines = 1 + data.iter().filter(|b| matches!(b, b'\n' | b'\r')).count() as u64;
    let mut jobs = 0_u64;
    match jobs::load_from(&options, data, true, 64, |chunk| {
        jobs += chunk.len() as u64;
        for job in &chunk {
            assert!(
                job.line >= 1 && job.line <= lines.max(1),
                "job line {}",
                job.line
            );
        }
        Ok(())
    }) {
        Ok(summary) => {
            assert!(
                summary.bad_records <= jobs,
                "every bad record is kept as rejected"
            );
            for error in &summary.errors {
                assert_eq!(error.path, name, "{error}");
                assert!(
                    error.line >= 1 && error.line <= lines,
                    "{error}: of {lines} lines"
                );
                assert!(!error.reason.is_empty(), "{error}");
                if let Some(field) = &error.field {
                    assert!(!field.is_empty(), "{error}");
                }
            }
        }
        // A file refused as a whole names the file.
        Err(error) => assert!(format!("{error:#}").contains(name), "{error:#}"),
    }
}

/// JSONL job files.
pub fn jsonl(data: &[u8]) {
    load("fuzz.jsonl", InputFormat::Jsonl, None, data);
}

/// CSV job files with a prompt template: the input's first line is the template, the rest
/// the table.
pub fn csv_template(data: &[u8]) {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let template = String::from_utf8_lossy(&data[..split]).into_owned();
    let table = data.get(split + 1..).unwrap_or_default();
    let template = (!template.is_empty()).then_some(template);
    load(
        "fuzz.csv",
        InputFormat::Csv { delimiter: b',' },
        template,
        table,
    );
}

/// The SSE decoder and the stream rebuild, fed in chunks whose size the first byte sets.
pub fn sse(data: &[u8]) {
    let Some((first, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(*first % 16) + 1;
    let mut decoder = Decoder::default();
    let mut accumulator = Accumulator::default();
    for part in stream.chunks(chunk) {
        for event in decoder.feed(part) {
            if accumulator.apply(&event).is_err() {
                return;
            }
        }
    }
    if let Ok(rebuilt) = accumulator.finish() {
        // What is stored is a Message: an object whose content is a list of objects.
        let message = rebuilt.message.as_object().expect("a message object");
        let content = message["content"].as_array().expect("a content list");
        assert!(content.iter().all(Value::is_object), "{}", rebuilt.message);
        // And it can be read back, as grading and export read it.
        let stored = rebuilt.message.to_string();
        assert!(serde_json::from_str::<Value>(&stored).is_ok(), "{stored}");
    }
}

/// `expect` specs, and grading an answer with whatever they parse to.
pub fn expect(data: &[u8]) {
    let Ok(spec) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    match eval::parse(&spec) {
        Ok(graders) => {
            let answer = serde_json::json!({"type": "message",
                "content": [{"type": "text", "text": "{\"answer\": 42} forty-two"}],
                "stop_reason": "end_turn"});
            for grader in &graders {
                let _ = eval::grade(
                    grader,
                    &Graded {
                        message: &answer,
                        latency_ms: 10,
                    },
                );
            }
        }
        Err(error) => assert!(
            !error.field.is_empty() && !error.reason.is_empty(),
            "{error:?}"
        ),
    }
}

/// Price files.
pub fn prices(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match PriceTable::from_text(&text, "fuzz-prices.toml") {
        Ok(table) => {
            for entry in table.entries() {
                let price = table.lookup(&entry.model).expect("every entry is found");
                let _ = price.worst_case_pico_usd(1_000_000, 1_000_000);
            }
        }
        Err(error) => assert!(error.to_string().contains("fuzz-prices.toml"), "{error}"),
    }
}

/// Tool input JSON, cut anywhere.
pub fn partial_json(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(value) = partial_json::parse(&text) {
        // Whatever is kept is JSON that prints and reads back the same.
        let printed = value.to_string();
        assert_eq!(serde_json::from_str::<Value>(&printed).ok(), Some(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Characters that make JSON, CSV, SSE and TOML, so random inputs reach past the first
    /// byte of each parser.
    const ALPHABET: &str = "[{}\\[\\]\":,=.\\-+a-z0-9_ \\n\\r\\t\\\\#|;']";

    fn text() -> impl Strategy<Value = Vec<u8>> {
        prop::string::string_regex(&format!("{ALPHABET}{{0,300}}"))
            .expect("a valid pattern")
            .prop_map(String::into_bytes)
    }

    proptest! {
        #[test]
        fn no_target_panics_on_random_text(data in text(), target in 0..TARGETS.len()) {
            (TARGETS[target].1)(&data);
        }

        #[test]
        fn no_target_panics_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..300), target in 0..TARGETS.len()) {
            (TARGETS[target].1)(&data);
        }
    }

    /// The seeds and every input a fuzzer found a crash with, each through its target.
    #[test]
    fn the_committed_seeds_and_regression_inputs_pass() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        let mut replayed = 0;
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in entries {
                let path = entry.expect("a directory entry").path();
                let data = std::fs::read(&path).expect("a readable seed");
                target(&data);
                replayed += 1;
            }
        }
        assert!(replayed >= TARGETS.len(), "every target has seeds");
    }
}
