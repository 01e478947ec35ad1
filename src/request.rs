//! The request model's checks on a Messages body before it is sent: the requests the API always answers with a 400
//! are refused here, with the field that is wrong, so that a bad line costs nothing.

use serde_json::{Map, Value};

/// Whether a model takes non-default `temperature`, `top_p` and `top_k`: Opus 4.7 and every
/// later model (the 5.x Opus, Sonnet and Haiku, Fable, Mythos) answer them with a 400.
pub fn takes_sampling_parameters(model: &str) -> bool {
    !from_opus_4_7_on(model)
}

/// Whether a model id names Opus 4.7 or a later model (found by its family and version
/// wherever `claude-` stands in it: `claude-opus-4-7`, `anthropic.claude-fable-5`). The
/// tokenizer, the sampling parameters and other behaviour changed from that model on.
pub fn from_opus_4_7_on(model: &str) -> bool {
    let Some(at) = model.find("claude-") else {
        return false;
    };
    let mut parts = model[at + "claude-".len()..].split(['-', '@', ':']);
    let family = parts.next().unwrap_or("");
    let number = |part: Option<&str>| {
        part.filter(|p| (1..=2).contains(&p.len()))
            .and_then(|p| p.parse::<u32>().ok())
    };
    let major = number(parts.next());
    let minor = number(parts.next()).unwrap_or(0);
    match (family, major) {
        ("fable" | "mythos", _) => true,
        ("opus" | "sonnet" | "haiku", Some(major)) if major >= 5 => true,
        ("opus", Some(4)) => minor >= 7,
        _ => false,
    }
}

/// The API's request size limit (bytes).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// The API rejects a request with more cache breakpoints than this.
const MAX_CACHE_BREAKPOINTS: usize = 4;
/// Smallest `budget_tokens` the API accepts for manual extended thinking.
const MIN_THINKING_BUDGET: u64 = 1024;

/// A problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Validates a complete request body (model already filled in).
pub fn validate(body: &Map<String, Value>) -> Result<(), FieldError> {
    match body.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => {}
        Some(Value::String(_)) => return Err(FieldError::new("model", "is empty")),
        Some(_) => return Err(FieldError::new("model", "must be a string")),
        None => {
            return Err(FieldError::new(
                "model",
                "is missing (give it in the record, or --model / --models)",
            ));
        }
    }
    let max_tokens = match body.get("max_tokens") {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v >= 1 => v,
            _ => {
                return Err(FieldError::new(
                    "max_tokens",
                    format!("must be an integer of at least 1 (got {n})"),
                ));
            }
        },
        Some(other) => {
            return Err(FieldError::new(
                "max_tokens",
                format!("must be an integer of at least 1 (got {other})"),
            ));
        }
        None => {
            return Err(FieldError::new(
                "max_tokens",
                "is missing (give it in the record, or --max-tokens)",
            ));
        }
    };
    validate_messages(body.get("messages"))?;
    if let Some(system) = body.get("system") {
        validate_system(system)?;
    }
    if let Some(t) = body.get("temperature") {
        match t.as_f64() {
            Some(v) if (0.0..=1.0).contains(&v) => {}
            _ => {
                return Err(FieldError::new(
                    "temperature",
                    format!("must be a number from 0 to 1 (got {t})"),
                ));
            }
        }
    }
    validate_thinking(body, max_tokens)?;
    let breakpoints = count_cache_breakpoints(body);
    if breakpoints > MAX_CACHE_BREAKPOINTS {
        return Err(FieldError::new(
            "cache_control",
            format!(
                "{breakpoints} cache breakpoints; the API accepts at most {MAX_CACHE_BREAKPOINTS}"
            ),
        ));
    }
    Ok(())
}

fn validate_messages(messages: Option<&Value>) -> Result<(), FieldError> {
    let messages = match messages {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => return Err(FieldError::new("messages", "is empty")),
        Some(_) => return Err(FieldError::new("messages", "must be an array")),
        None => return Err(FieldError::new("messages", "is missing")),
    };
    for (i, message) in messages.iter().enumerate() {
        let Some(message) = message.as_object() else {
            return Err(FieldError::new(
                format!("messages[{i}]"),
                "must be an object",
            ));
        };
        match message.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            Some("system") => {
                return Err(FieldError::new(
                    format!("messages[{i}].role"),
                    "`system` is not a message role: the system prompt goes in the top-level \
                     `system` field of the request (or --system)",
                ));
            }
            Some(other) => {
                return Err(FieldError::new(
                    format!("messages[{i}].role"),
                    format!("unknown role `{other}` (expected `user` or `assistant`)"),
                ));
            }
            None => {
                return Err(FieldError::new(format!("messages[{i}].role"), "is missing"));
            }
        }
        validate_content(message.get("content"), &format!("messages[{i}].content"))?;
    }
    Ok(())
}

fn validate_content(content: Option<&Value>, field: &str) -> Result<(), FieldError> {
    match content {
        Some(Value::String(text)) if text.is_empty() => {
            Err(FieldError::new(field, "text content must be non-empty"))
        }
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(blocks)) => {
            for (j, block) in blocks.iter().enumerate() {
                let Some(block) = block.as_object() else {
                    return Err(FieldError::new(
                        format!("{field}[{j}]"),
                        "must be an object",
                    ));
                };
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => match block.get("text") {
                        Some(Value::String(t)) if !t.is_empty() => {}
                        _ => {
                            return Err(FieldError::new(
                                format!("{field}[{j}].text"),
                                "text content blocks must be non-empty",
                            ));
                        }
                    },
                    Some(_) => {}
                    None => {
                        return Err(FieldError::new(format!("{field}[{j}].type"), "is missing"));
                    }
                }
            }
            Ok(())
        }
        Some(_) => Err(FieldError::new(
            field,
            "must be a string or an array of blocks",
        )),
        None => Err(FieldError::new(field, "is missing")),
    }
}

fn validate_system(system: &Value) -> Result<(), FieldError> {
    match system {
        Value::String(_) => Ok(()),
        Value::Array(blocks) => {
            for (j, block) in blocks.iter().enumerate() {
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => match block.get("text") {
                        Some(Value::String(t)) if !t.is_empty() => {}
                        _ => {
                            return Err(FieldError::new(
                                format!("system[{j}].text"),
                                "text content blocks must be non-empty",
                            ));
                        }
                    },
                    _ => {
                        return Err(FieldError::new(
                            format!("system[{j}].type"),
                            "system blocks must be of type `text`",
                        ));
                    }
                }
            }
            Ok(())
        }
        _ => Err(FieldError::new(
            "system",
            "must be a string or an array of text blocks",
        )),
    }
}

fn validate_thinking(body: &Map<String, Value>, max_tokens: u64) -> Result<(), FieldError> {
    let Some(thinking) = body.get("thinking") else {
        return Ok(());
    };
    let kind = thinking.get("type").and_then(Value::as_str);
    if kind == Some("enabled") {
        let budget = thinking.get("budget_tokens").and_then(Value::as_u64);
        match budget {
            Some(b) if b < MIN_THINKING_BUDGET => {
                return Err(FieldError::new(
                    "thinking.budget_tokens",
                    format!("must be at least {MIN_THINKING_BUDGET} (got {b})"),
                ));
            }
            Some(b) if b >= max_tokens => {
                return Err(FieldError::new(
                    "thinking.budget_tokens",
                    format!("must be less than max_tokens ({b} ≥ {max_tokens})"),
                ));
            }
            Some(_) => {}
            None => {
                return Err(FieldError::new(
                    "thinking.budget_tokens",
                    "must be an integer when thinking is enabled",
                ));
            }
        }
    }
    if matches!(kind, Some("enabled" | "adaptive")) {
        let forced = body
            .get("tool_choice")
            .and_then(|c| c.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t == "any" || t == "tool");
        if forced {
            return Err(FieldError::new(
                "tool_choice",
                "thinking may not be enabled when tool_choice forces tool use",
            ));
        }
    }
    Ok(())
}

/// Counts `cache_control` markers where the API honours them: top level, tools, system blocks
/// and message content blocks.
pub fn count_cache_breakpoints(body: &Map<String, Value>) -> usize {
    let marked = |v: &Value| usize::from(v.get("cache_control").is_some_and(|c| !c.is_null()));
    let in_blocks = |v: Option<&Value>| {
        v.and_then(Value::as_array)
            .map_or(0, |blocks| blocks.iter().map(marked).sum::<usize>())
    };
    let top = usize::from(body.get("cache_control").is_some_and(|c| !c.is_null()));
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, |ms| ms.iter().map(|m| in_blocks(m.get("content"))).sum());
    top + in_blocks(body.get("tools")) + in_blocks(body.get("system")) + messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(body: Value) -> Result<(), FieldError> {
        validate(body.as_object().unwrap())
    }

    fn ok_body() -> Value {
        json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
    }

    #[test]
    fn a_plain_request_passes() {
        assert_eq!(check(ok_body()), Ok(()));
    }

    #[test]
    fn each_hard_rejection_names_its_field() {
        let cases = [
            (
                json!({"max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}),
                "model",
            ),
            (
                json!({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
                "max_tokens",
            ),
            (
                json!({"model": "m", "max_tokens": 1.5, "messages": [{"role": "user", "content": "x"}]}),
                "max_tokens",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": []}),
                "messages",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}),
                "messages[0].content[0].text",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]}),
                "temperature",
            ),
            (
                json!({"model": "m", "max_tokens": 5000, "thinking": {"type": "enabled", "budget_tokens": 100}, "messages": [{"role": "user", "content": "x"}]}),
                "thinking.budget_tokens",
            ),
            (
                json!({"model": "m", "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 2000}, "messages": [{"role": "user", "content": "x"}]}),
                "thinking.budget_tokens",
            ),
            (
                json!({"model": "m", "max_tokens": 5000, "thinking": {"type": "adaptive"}, "tool_choice": {"type": "any"}, "messages": [{"role": "user", "content": "x"}]}),
                "tool_choice",
            ),
        ];
        for (body, field) in cases {
            let err = check(body.clone()).expect_err(&body.to_string());
            assert_eq!(err.field, field, "{body}");
        }
    }

    #[test]
    fn five_cache_breakpoints_are_refused() {
        let block = json!({"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}});
        let mut body = ok_body();
        body["system"] = json!([block, block]);
        body["messages"][0]["content"] = json!([block, block]);
        assert_eq!(check(body.clone()), Ok(()));
        body["cache_control"] = json!({"type": "ephemeral"});
        assert_eq!(check(body).unwrap_err().field, "cache_control");
    }
}
