//! A local model of prompt tokens and prompt caching, shared by the mock gateway (which answers
//! with it) and `msgbatch estimate` (which predicts with it when a gateway cannot count tokens).
//!
//! Tokens are counted as one per four bytes of text (at least one per non-empty block), which
//! is close to a real tokenizer for English prose; models with the newer tokenizer (Opus 4.7 and
//! every later model, see [`Tokenizer`]) count the same text as about 30% more tokens. The cache follows the API's rules: the prefix
//! is built in the order tools, system, messages; each `cache_control` marks a breakpoint; a
//! top-level `cache_control` marks the last block; prefixes shorter than
//! [`MIN_CACHEABLE_TOKENS`] are not cached.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Map, Value};

/// Below this many tokens a prefix is not cached: the smallest minimum of any model, used for
/// models the table below does not know.
pub const MIN_CACHEABLE_TOKENS: u64 = 1024;

/// The shortest prefix a model caches (`API_NOTES.md` §7, from the prompt-caching page):
/// 4,096 tokens for Opus 4.5 and 4.6 and Haiku 4.5, 2,048 for Opus 4.7 and the Haiku 3 models,
/// 1,024 for the others. Models whose minimum no source gives (the 5.x family) take 1,024:
/// holding back a group whose prefix turns out too short to cache costs one time to first
/// token, while sending a cacheable group unwarmed costs a cache write per worker.
pub fn min_cacheable_tokens(model: &str) -> u64 {
    const TABLE: [(&str, u64); 7] = [
        ("claude-opus-4-5", 4096),
        ("claude-opus-4-6", 4096),
        ("claude-haiku-4-5", 4096),
        ("claude-opus-4-7", 2048),
        ("claude-3-5-haiku", 2048),
        ("claude-3-haiku", 2048),
        ("claude-haiku-3", 2048),
    ];
    TABLE
        .iter()
        .find(|(family, _)| model.contains(family))
        .map_or(MIN_CACHEABLE_TOKENS, |(_, min)| *min)
}

/// A prefix a request would write to (or read from) the prompt cache: everything up to one
/// of its `cache_control` breakpoints, with the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CachePrefix {
    pub hash: u64,
    pub tokens: u64,
    pub one_hour: bool,
}

/// The prefixes of a request long enough for its model to cache, shortest first.
pub fn cache_prefixes(body: &Map<String, Value>) -> Vec<CachePrefix> {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let min = min_cacheable_tokens(model);
    breakpoints(body)
        .1
        .into_iter()
        .filter(|p| p.tokens >= min)
        .map(|p| CachePrefix {
            hash: p.prefix_hash,
            tokens: p.tokens,
            one_hour: p.one_hour,
        })
        .collect()
}

/// Which tokenizer a model uses, as far as token counts go.
///
/// The pricing and model pages say that Opus 4.7 and every model after it (Opus 4.8, the 5.x
/// Opus, Sonnet and Haiku models, Fable and Mythos) use a newer tokenizer that counts the same
/// text as about 30% more tokens than the one before; the local estimate scales by 13/10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokenizer {
    /// Haiku 4.5, Sonnet 4.6, Opus 4.6 and everything before them: about four bytes a token.
    Classic,
    /// Opus 4.7 and later: about 30% more tokens for the same text.
    Dense,
}

impl Tokenizer {
    /// The tokenizer of a model id, found by its family and version wherever `claude-` stands
    /// in it (`claude-opus-4-7`, `claude-haiku-5-5-20261007`, `anthropic.claude-fable-5`). An id
    /// that names no Claude family is taken as classic.
    pub fn of(model: &str) -> Self {
        if crate::request::from_opus_4_7_on(model) {
            Self::Dense
        } else {
            Self::Classic
        }
    }

    /// Tokens in `text`: one per four bytes, or 13 per 40 bytes with the newer tokenizer.
    pub fn count(self, text: &str) -> u64 {
        self.of_bytes(text.len() as u64, 4)
    }

    /// An upper bound on the input tokens of a request body of `bytes` bytes: one per three
    /// bytes, or 13 per 30 with the newer tokenizer. A heuristic bound, not a guarantee.
    pub fn most_tokens_in(self, bytes: u64) -> u64 {
        self.of_bytes(bytes, 3)
    }

    /// How many bytes of text make about `tokens` tokens.
    pub fn bytes_for(self, tokens: u64) -> u64 {
        match self {
            Self::Classic => tokens.saturating_mul(4),
            Self::Dense => tokens.saturating_mul(40) / 13,
        }
    }

    fn of_bytes(self, bytes: u64, bytes_per_token: u64) -> u64 {
        match self {
            Self::Classic => bytes.div_ceil(bytes_per_token),
            Self::Dense => bytes.saturating_mul(13).div_ceil(bytes_per_token * 10),
        }
    }
}

/// Token count of any content value: text counts its characters, other blocks their JSON.
fn value_tokens(tokenizer: Tokenizer, value: &Value) -> u64 {
    match value {
        Value::String(s) => tokenizer.count(s),
        Value::Object(block) => match block.get("text") {
            Some(Value::String(text))
                if block.get("type").and_then(Value::as_str) == Some("text") =>
            {
                tokenizer.count(text)
            }
            _ => {
                let mut block = block.clone();
                block.remove("cache_control");
                tokenizer.count(&Value::Object(block).to_string())
            }
        },
        other => tokenizer.count(&other.to_string()),
    }
}

/// Cache-aware input usage of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PromptUsage {
    pub input_tokens: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub cache_read: u64,
}

impl PromptUsage {
    pub fn total_input(&self) -> u64 {
        self.input_tokens + self.cache_write_5m + self.cache_write_1h + self.cache_read
    }
}

/// A point in the prompt where a cache entry may start or be read.
struct Breakpoint {
    /// Tokens of the prefix up to and including the marked block.
    tokens: u64,
    one_hour: bool,
    prefix_hash: u64,
}

/// Walks the prompt in cache order (tools, system, messages), returning its total token count
/// and its cache breakpoints.
fn breakpoints(body: &Map<String, Value>) -> (u64, Vec<Breakpoint>) {
    let mut blocks: Vec<&Value> = Vec::new();
    let mut owned_strings = Vec::new();
    if let Some(Value::Array(tools)) = body.get("tools") {
        blocks.extend(tools.iter());
    }
    match body.get("system") {
        Some(Value::Array(system)) => blocks.extend(system.iter()),
        Some(text @ Value::String(_)) => owned_strings.push(("system", text)),
        _ => {}
    }
    let mut hasher = DefaultHasher::new();
    body.get("model").map(Value::to_string).hash(&mut hasher);
    let tokenizer = Tokenizer::of(body.get("model").and_then(Value::as_str).unwrap_or(""));
    let mut total = 0;
    let mut points = Vec::new();
    let mut visit = |block: &Value, total: &mut u64, hasher: &mut DefaultHasher| {
        *total += value_tokens(tokenizer, block);
        let mut plain = block.clone();
        if let Value::Object(map) = &mut plain {
            map.remove("cache_control");
        }
        plain.to_string().hash(hasher);
        if let Some(control) = block.get("cache_control").filter(|c| !c.is_null()) {
            points.push(Breakpoint {
                tokens: *total,
                one_hour: control.get("ttl").and_then(Value::as_str) == Some("1h"),
                prefix_hash: hasher.finish(),
            });
        }
    };
    for block in blocks {
        visit(block, &mut total, &mut hasher);
    }
    for (_, text) in owned_strings {
        visit(text, &mut total, &mut hasher);
    }
    let mut last_block_hash = None;
    if let Some(Value::Array(messages)) = body.get("messages") {
        for message in messages {
            match message.get("content") {
                Some(Value::Array(content)) => {
                    for block in content {
                        visit(block, &mut total, &mut hasher);
                        last_block_hash = Some((total, hasher.finish()));
                    }
                }
                Some(text) => {
                    visit(text, &mut total, &mut hasher);
                    last_block_hash = Some((total, hasher.finish()));
                }
                None => {}
            }
        }
    }
    // Automatic caching: a top-level cache_control puts a breakpoint on the last block.
    if let (Some(control), Some((tokens, prefix_hash))) = (
        body.get("cache_control").filter(|c| !c.is_null()),
        last_block_hash,
    ) {
        points.push(Breakpoint {
            tokens,
            one_hour: control.get("ttl").and_then(Value::as_str) == Some("1h"),
            prefix_hash,
        });
    }
    (total, points)
}

/// Input-side usage of a request, reading and writing the prompt cache at once (as a replay
/// of a file in order assumes: each request's writes are there for the next).
pub fn input_usage(body: &Map<String, Value>, cache: &mut HashSet<u64>) -> PromptUsage {
    let (usage, written) = input_usage_seen(body, |hash| cache.contains(&hash));
    cache.extend(written);
    usage
}

/// Input-side usage of a request against a cache that `cached` answers for, and the
/// prefixes the request writes, for the caller to make readable when it chooses (the API
/// makes them readable once the response that writes them has begun).
pub fn input_usage_seen(
    body: &Map<String, Value>,
    cached: impl Fn(u64) -> bool,
) -> (PromptUsage, Vec<u64>) {
    let (total, points) = breakpoints(body);
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let min = min_cacheable_tokens(model);
    let eligible: Vec<&Breakpoint> = points.iter().filter(|p| p.tokens >= min).collect();
    let read = eligible
        .iter()
        .rev()
        .find(|p| cached(p.prefix_hash))
        .map_or(0, |p| p.tokens);
    let mut usage = PromptUsage {
        cache_read: read,
        ..PromptUsage::default()
    };
    let mut covered = read;
    let mut written = Vec::new();
    for point in &eligible {
        if point.tokens > covered {
            let tokens = point.tokens - covered;
            if point.one_hour {
                usage.cache_write_1h += tokens;
            } else {
                usage.cache_write_5m += tokens;
            }
            covered = point.tokens;
        }
        written.push(point.prefix_hash);
    }
    usage.input_tokens = total - covered;
    (usage, written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_newer_tokenizer_counts_about_thirty_percent_more() {
        for model in [
            "claude-opus-4-7",
            "claude-opus-4-8",
            "claude-opus-5",
            "claude-opus-5-5",
            "claude-sonnet-5",
            "claude-sonnet-5-5",
            "claude-haiku-5-5",
            "claude-haiku-5-5-20261007",
            "claude-fable-5",
            "claude-fable-5-1",
            "claude-mythos-5-1",
            "anthropic.claude-opus-4-7",
        ] {
            assert_eq!(Tokenizer::of(model), Tokenizer::Dense, "{model}");
        }
        for model in [
            "claude-opus-4-6",
            "claude-sonnet-4-6",
            "claude-haiku-4-5-20251001",
            "claude-opus-4-1-20250805",
            "claude-3-5-haiku-20241022",
            "claude-3-opus-20240229",
            "gpt-4o",
            "m",
        ] {
            assert_eq!(Tokenizer::of(model), Tokenizer::Classic, "{model}");
        }
        let text = "x".repeat(4000);
        assert_eq!(Tokenizer::Classic.count(&text), 1000);
        assert_eq!(Tokenizer::Dense.count(&text), 1300);
        assert_eq!(Tokenizer::Classic.most_tokens_in(3000), 1000);
        assert_eq!(Tokenizer::Dense.most_tokens_in(3000), 1300);
        assert_eq!(Tokenizer::Dense.bytes_for(1300), 4000);
    }

    #[test]
    fn a_request_to_a_newer_model_counts_more_input_tokens() {
        let request = |model: &str| {
            body(json!({"model": model, "max_tokens": 10,
                "messages": [{"role": "user", "content": "y".repeat(400)}]}))
        };
        let mut cache = HashSet::new();
        assert_eq!(
            input_usage(&request("claude-haiku-4-5"), &mut cache).input_tokens,
            100
        );
        assert_eq!(
            input_usage(&request("claude-haiku-5-5"), &mut cache).input_tokens,
            130
        );
    }

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_cached_prefix_is_written_once_then_read() {
        let long = "x".repeat(8000); // 2000 tokens
        let request = |question: &str| {
            body(json!({
                "model": "m", "max_tokens": 10,
                "system": [{"type": "text", "text": long, "cache_control": {"type": "ephemeral"}}],
                "messages": [{"role": "user", "content": question}],
            }))
        };
        let mut cache = HashSet::new();
        let first = input_usage(&request("what is one?"), &mut cache);
        assert_eq!(
            first,
            PromptUsage {
                input_tokens: 3,
                cache_write_5m: 2000,
                cache_write_1h: 0,
                cache_read: 0
            }
        );
        let second = input_usage(&request("and two?"), &mut cache);
        assert_eq!(
            second,
            PromptUsage {
                input_tokens: 2,
                cache_write_5m: 0,
                cache_write_1h: 0,
                cache_read: 2000
            }
        );
    }

    #[test]
    fn short_prefixes_are_not_cached_and_1h_writes_are_split_out() {
        let mut cache = HashSet::new();
        let short = body(
            json!({"model": "m", "max_tokens": 5, "system": [{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}], "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_eq!(input_usage(&short, &mut cache).cache_write_5m, 0);
        let long = "y".repeat(4400); // 1100 tokens
        let two = body(json!({"model": "m", "max_tokens": 5,
            "system": [{"type": "text", "text": long, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                       {"type": "text", "text": long, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "hi"}]}));
        let usage = input_usage(&two, &mut cache);
        assert_eq!(
            (
                usage.cache_write_1h,
                usage.cache_write_5m,
                usage.input_tokens
            ),
            (1100, 1100, 1)
        );
    }
}
