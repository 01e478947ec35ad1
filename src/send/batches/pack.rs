//! Packing pending jobs, or pending judges, into batches: up to the request and byte bounds,
//! and to what is left of the budget, with custom ids the API accepts.

use std::borrow::Cow;
use std::collections::HashSet;

use anyhow::Context;
use serde_json::{Map, Value};

use super::BatchError;
use crate::pricing::PriceTable;
use crate::send::direct::judge::{JudgeCall, judge_call};
use crate::settings::BatchSettings;
use crate::store::{BatchItem, BatchKind, PendingJob, PendingJudge};

/// A batch ready to create: which job each request is, and the exact size of its body,
/// which is produced from the store only as it is sent ([`super::body`]).
pub(super) struct Packed {
    /// The bytes of its create body, `{"requests":[…]}`.
    pub(super) bytes: usize,
    pub(super) items: Vec<BatchItem>,
    /// Each request's worst case at the batch rates.
    pub(super) worst_cases: Vec<u64>,
    /// The bytes of its largest request.
    pub(super) largest: usize,
    /// For each request, whether its job's stored request is its params as sent, byte for
    /// byte (no `stream` to drop, and written as they are written): its body line is then
    /// made without reading the request again.
    pub(super) verbatim: Vec<bool>,
}

impl Packed {
    /// Whether its requests are jobs' or judges'.
    pub(super) fn kind(&self) -> BatchKind {
        if self.items.iter().any(|item| item.grader.is_some()) {
            BatchKind::Judge
        } else {
            BatchKind::Answer
        }
    }
}

/// Fills batches up to the request and byte bounds, and to what is left of the budget.
pub(super) struct Packer<'a> {
    settings: BatchSettings,
    prices: &'a PriceTable,
    current: Packed,
    ids: HashSet<String>,
    /// What is left of the budget for worst cases at the batch rates, when there is one.
    room: Option<u64>,
    /// The worst case of the current batch at the batch rates.
    current_worst: u64,
    /// The last job offered did not fit what is left of the budget, even alone.
    pub(super) over_budget: bool,
}

/// The wrapper around a batch's requests: `{"requests":[` … `]}`.
pub(super) const WRAPPER_BYTES: usize = OPEN.len() + CLOSE.len();
pub(super) const OPEN: &[u8] = b"{\"requests\":[";
pub(super) const CLOSE: &[u8] = b"]}";

/// A job's request as the params of a batch request, as JSON text: a batch answers whole
/// Messages, so a streamed request goes without `stream`.
pub(super) fn params(request: &str, job_id: &str) -> anyhow::Result<String> {
    Ok(params_and_max_tokens(request, job_id)?.0)
}

/// [`params`], and the request's `max_tokens` as [`crate::send::outcome::worst_case`] reads
/// it (0 unless an integer of 0 or more), from the one reading of the request.
fn params_and_max_tokens(request: &str, job_id: &str) -> anyhow::Result<(String, u64)> {
    let mut params: Map<String, Value> = serde_json::from_str(request)
        .with_context(|| format!("job {job_id} is not a JSON object"))?;
    let max_tokens = params
        .get("max_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    params.remove("stream");
    // As `Value`'s `Display` writes it, without going through a formatter.
    let params = serde_json::to_string(&params).context("a JSON object always serializes")?;
    Ok((params, max_tokens))
}

/// One request of a create body, `{"custom_id":…,"params":…}`, from its params as JSON text:
/// the same bytes whenever it is made from the same request, as packing counts them and the
/// body sends them.
#[cfg(test)]
pub(super) fn request_line(params: &str, custom_id: &str) -> String {
    let mut line = Vec::with_capacity(line_len(params, custom_id));
    push_request_line(&mut line, params, custom_id);
    String::from_utf8(line).expect("made of strings")
}

/// Appends one request of a create body, `{"custom_id":…,"params":…}`, from its params as
/// JSON text, to `out`: the same bytes whenever it is made from the same request, as packing
/// counts them ([`line_len`]) and the body sends them.
pub(super) fn push_request_line(out: &mut Vec<u8>, params: &str, custom_id: &str) {
    out.extend_from_slice(b"{\"custom_id\":");
    if plain(custom_id) {
        out.push(b'"');
        out.extend_from_slice(custom_id.as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(Value::from(custom_id).to_string().as_bytes());
    }
    out.extend_from_slice(b",\"params\":");
    out.extend_from_slice(params.as_bytes());
    out.push(b'}');
}

/// The bytes of the line [`push_request_line`] appends, without making it.
pub(super) fn line_len(params: &str, custom_id: &str) -> usize {
    let id = if plain(custom_id) {
        custom_id.len() + 2
    } else {
        Value::from(custom_id).to_string().len()
    };
    "{\"custom_id\":,\"params\":}".len() + id + params.len()
}

/// Whether `id` is written in JSON as itself between quotes: no quote, backslash or control
/// character to escape.
fn plain(id: &str) -> bool {
    id.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

impl<'a> Packer<'a> {
    pub(super) fn new(settings: BatchSettings, prices: &'a PriceTable, room: Option<u64>) -> Self {
        Self {
            settings,
            prices,
            current: Self::empty(),
            ids: HashSet::new(),
            room,
            current_worst: 0,
            over_budget: false,
        }
    }

    pub(super) fn empty() -> Packed {
        Packed {
            bytes: WRAPPER_BYTES,
            items: Vec::new(),
            worst_cases: Vec::new(),
            largest: 0,
            verbatim: Vec::new(),
        }
    }

    /// Adds a job; returns the batch it filled, if adding it would have passed a bound (the
    /// job then starts the next batch).
    pub(super) fn add(&mut self, job: &PendingJob) -> anyhow::Result<Option<Packed>> {
        // What the loader knew of the request spares reading it again.
        let known = job.params_max_tokens.and_then(|m| u64::try_from(m).ok());
        let (params, max_tokens, verbatim) = match known {
            Some(max_tokens) => (Cow::Borrowed(job.request.as_str()), max_tokens, true),
            None => {
                let (params, max_tokens) = params_and_max_tokens(&job.request, &job.job_id)?;
                let verbatim = params == job.request;
                (Cow::Owned(params), max_tokens, verbatim)
            }
        };
        let worst = crate::send::outcome::worst_case_of(self.prices, job, max_tokens)
            .map_err(|overflow| {
                BatchError(format!(
                    "job {} cannot be bounded by --max-cost: its worst case is {overflow}",
                    job.job_id
                ))
            })?
            .unwrap_or(0);
        let entry = Entry {
            name: &job.job_id,
            params,
            job: job.id,
            grader: None,
            spec_hash: None,
            worst,
        };
        self.place(entry, verbatim)
    }

    /// Adds a pending judge grade, its request as a judge asked directly would get it, under
    /// the custom id `judge-JOB-GRADER` (the grade's row); returns the batch it filled, as
    /// [`Packer::add`]. `Err` with a [`BadJudge`] when its spec cannot be read.
    pub(super) fn add_judge(&mut self, judge: &PendingJudge) -> anyhow::Result<Option<Packed>> {
        let JudgeCall { model, body } = judge_call(judge).map_err(BadJudge)?;
        let worst = match crate::send::direct::judge::worst_case(self.prices, &model, judge) {
            Ok(worst) => worst.unwrap_or(0),
            // No budget can hold it: it is not sent under one.
            Err(_) if self.room.is_some() => u64::MAX,
            Err(_) => 0,
        };
        let entry = Entry {
            name: &judge_custom_id(judge.job, judge.grader),
            params: Cow::Owned(body),
            job: judge.job,
            grader: Some(judge.grader),
            spec_hash: Some(crate::store::spec_hash(&judge.spec)),
            worst,
        };
        // Made as sent, never read back from a job's request.
        self.place(entry, true)
    }

    /// Puts a request in the current batch, or in the next once it is full.
    fn place(&mut self, entry: Entry<'_>, verbatim: bool) -> anyhow::Result<Option<Packed>> {
        let Entry {
            name,
            params,
            job,
            grader,
            spec_hash,
            worst,
        } = entry;
        let probe = line_len(&params, name);
        if probe + WRAPPER_BYTES > self.settings.max_bytes {
            return Err(BatchError(format!(
                "{} {name} is {} bytes, more than a batch may hold ({} bytes)",
                if grader.is_some() {
                    "judge request"
                } else {
                    "job"
                },
                probe,
                self.settings.max_bytes
            ))
            .into());
        }
        let over_room = self
            .room
            .is_some_and(|room| self.current_worst.saturating_add(worst) > room);
        let separator = usize::from(!self.current.items.is_empty());
        let full = self.current.items.len() >= self.settings.max_requests
            || self.current.bytes + separator + probe > self.settings.max_bytes
            || over_room;
        let filled = if full { self.take() } else { None };
        if self.room.is_some_and(|room| worst > room) {
            self.over_budget = true;
            return Ok(filled);
        }
        self.current_worst = self.current_worst.saturating_add(worst);
        let custom_id = self.custom_id(name, job);
        let line = if custom_id == name {
            probe
        } else {
            line_len(&params, &custom_id)
        };
        self.current.bytes += usize::from(!self.current.items.is_empty()) + line;
        self.current.largest = self.current.largest.max(line);
        self.current.verbatim.push(verbatim);
        self.current.items.push(BatchItem {
            custom_id,
            job,
            grader,
            spec_hash,
        });
        self.current.worst_cases.push(worst);
        Ok(filled)
    }

    /// `wanted` where the API accepts it and it is not taken in this batch (a run over
    /// several models has one job id per model), else one made from the job's row id.
    fn custom_id(&mut self, wanted: &str, job: i64) -> String {
        if valid_custom_id(wanted) && self.ids.insert(wanted.to_owned()) {
            return wanted.to_owned();
        }
        let mut made = format!("job-{job}");
        let mut n = 0;
        while !self.ids.insert(made.clone()) {
            n += 1;
            made = format!("job-{job}-{n}");
        }
        made
    }

    pub(super) fn take(&mut self) -> Option<Packed> {
        if self.current.items.is_empty() {
            return None;
        }
        self.ids.clear();
        if let Some(room) = &mut self.room {
            *room = room.saturating_sub(self.current_worst);
        }
        self.current_worst = 0;
        Some(std::mem::replace(&mut self.current, Self::empty()))
    }

    pub(super) fn finish(mut self) -> Option<Packed> {
        self.take()
    }
}

/// A request on its way into a batch.
struct Entry<'a> {
    /// The custom id it asks for, which names it in errors.
    name: &'a str,
    /// Its params as sent, as JSON text.
    params: Cow<'a, str>,
    job: i64,
    grader: Option<i64>,
    /// For a judge's request, the hash of the spec it asks with.
    spec_hash: Option<i64>,
    /// Its worst case at the batch rates.
    worst: u64,
}

/// A judge grade whose spec cannot be read: it is recorded so, and never sent.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct BadJudge(pub(super) String);

/// The custom id of the request for the verdict of `job`'s grader `grader`: one per grade
/// row, within the API's rules.
pub(super) fn judge_custom_id(job: i64, grader: i64) -> String {
    format!("judge-{job}-{grader}")
}

/// Whether the API accepts `id` as a batch's `custom_id`: `^[a-zA-Z0-9_-]{1,64}$`.
pub fn valid_custom_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64, job_id: &str, model: &str) -> PendingJob {
        PendingJob {
            id,
            job_id: job_id.to_owned(),
            model: model.to_owned(),
            request: serde_json::json!({"model": model, "max_tokens": 100, "stream": true,
                "messages": [{"role": "user", "content": "hello there"}]})
            .to_string(),
            attempts: 0,
            expect: None,
            params_max_tokens: None,
            lease: None,
        }
    }

    fn settings(max_requests: usize, max_bytes: usize) -> BatchSettings {
        BatchSettings {
            max_requests,
            max_bytes,
            ..BatchSettings::default()
        }
    }

    /// The create body of `packed` over `jobs`, made as the body is made when it is sent.
    fn body(packed: &Packed, jobs: &[PendingJob]) -> Vec<u8> {
        let mut body = OPEN.to_vec();
        for (at, item) in packed.items.iter().enumerate() {
            let custom_id = &item.custom_id;
            let job = jobs
                .iter()
                .find(|j| j.id == item.job)
                .expect("a packed job");
            if at > 0 {
                body.push(b',');
            }
            let params = params(&job.request, &job.job_id).unwrap();
            body.extend_from_slice(request_line(&params, custom_id).as_bytes());
        }
        body.extend_from_slice(CLOSE);
        assert_eq!(body.len(), packed.bytes, "packed sizes are exact");
        body
    }

    fn requests(packed: &Packed, jobs: &[PendingJob]) -> Vec<Value> {
        let body: Value =
            serde_json::from_slice(&body(packed, jobs)).expect("a batch body is JSON");
        body["requests"].as_array().expect("requests").clone()
    }

    #[test]
    fn batches_fill_up_to_the_request_bound_and_drop_stream() {
        let prices = PriceTable::builtin();
        let mut packer = Packer::new(settings(2, BATCH_BYTES), &prices, None);
        let jobs: Vec<PendingJob> = (0..5)
            .map(|i| job(i, &format!("j{i}"), "claude-haiku-4-5"))
            .collect();
        let mut filled = Vec::new();
        for job in &jobs {
            filled.extend(packer.add(job).unwrap());
        }
        filled.extend(packer.finish());
        let sizes: Vec<usize> = filled.iter().map(|p| p.items.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        let first = requests(&filled[0], &jobs);
        assert_eq!(first[0]["custom_id"], "j0");
        assert!(first[0]["params"].get("stream").is_none(), "{first:?}");
        assert_eq!(first[0]["params"]["max_tokens"], 100);
    }

    const BATCH_BYTES: usize = crate::settings::BATCH_MAX_BYTES;

    #[test]
    fn batches_stay_under_the_byte_bound() {
        let prices = PriceTable::builtin();
        let one = job(1, "a", "claude-haiku-4-5");
        let line = serde_json::json!({"custom_id": "a", "params": {}})
            .to_string()
            .len();
        // Room for about two requests of this size, not three.
        let bound = WRAPPER_BYTES + 2 * (one.request.len() + line + 1) + 10;
        let mut packer = Packer::new(settings(100, bound), &prices, None);
        let jobs: Vec<PendingJob> = (0..3)
            .map(|i| job(i, &format!("b{i}"), "claude-haiku-4-5"))
            .collect();
        let mut filled = Vec::new();
        for job in &jobs {
            filled.extend(packer.add(job).unwrap());
        }
        filled.extend(packer.finish());
        assert_eq!(filled.len(), 2);
        assert!(
            filled.iter().all(|p| body(p, &jobs).len() <= bound),
            "{bound}"
        );
        // A bound met to the byte is not passed: exactly two requests fit.
        let exact = filled[0].bytes;
        let mut packer = Packer::new(settings(100, exact), &prices, None);
        let mut refilled = Vec::new();
        for job in &jobs {
            refilled.extend(packer.add(job).unwrap());
        }
        refilled.extend(packer.finish());
        let sizes: Vec<usize> = refilled.iter().map(|p| p.items.len()).collect();
        assert_eq!(sizes, [2, 1]);
        assert_eq!(refilled[0].bytes, exact);
    }

    #[test]
    fn a_line_is_counted_as_it_is_written() {
        let params = r#"{"model":"m","messages":[{"role":"user","content":"é \" x"}]}"#;
        for id in [
            "plain-id_1",
            "has space",
            "quote\"d",
            "back\\slash",
            "tab\tnl\n",
            "é",
            "",
        ] {
            let line = request_line(params, id);
            assert_eq!(line_len(params, id), line.len(), "{id:?}");
            let value: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(value["custom_id"], id);
            assert_eq!(value["params"]["messages"][0]["content"], "é \" x");
        }
    }

    #[test]
    fn params_keep_what_worst_cases_read_of_max_tokens() {
        for (request, max_tokens) in [
            (r#"{"max_tokens":64,"stream":true}"#, 64),
            (r#"{"max_tokens":64.0}"#, 0),
            (r#"{"max_tokens":-1}"#, 0),
            (r#"{"max_tokens":null}"#, 0),
            (r#"{"model":"m"}"#, 0),
        ] {
            let (params, read) = params_and_max_tokens(request, "j").unwrap();
            assert_eq!(read, max_tokens, "{request}");
            let job = PendingJob {
                request: request.to_owned(),
                ..job(1, "j", "claude-haiku-4-5")
            };
            let prices = PriceTable::builtin();
            assert_eq!(
                crate::send::outcome::worst_case(&prices, &job),
                crate::send::outcome::worst_case_of(&prices, &job, read),
                "{request}"
            );
            assert!(!params.contains("stream"));
        }
    }

    #[test]
    fn custom_ids_the_api_refuses_or_repeats_are_replaced() {
        let prices = PriceTable::builtin();
        let mut packer = Packer::new(settings(100, BATCH_BYTES), &prices, None);
        for (id, job_id, model) in [
            (1, "same", "claude-haiku-4-5"),
            (2, "same", "claude-sonnet-4-6"),
            (3, "has space", "claude-haiku-4-5"),
            (4, &"x".repeat(65), "claude-haiku-4-5"),
            (5, "job-7", "claude-haiku-4-5"),
            (6, "ok_id-1", "claude-haiku-4-5"),
            (7, "bad id", "claude-haiku-4-5"),
        ] {
            assert!(packer.add(&job(id, job_id, model)).unwrap().is_none());
        }
        let packed = packer.finish().unwrap();
        let ids: Vec<&str> = packed.items.iter().map(|i| i.custom_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "same", "job-2", "job-3", "job-4", "job-7", "ok_id-1", "job-7-1"
            ]
        );
        // `job-7` was a job's own id before job 7 needed one: made ids never clash.
        let unique: HashSet<&&str> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(ids.iter().all(|id| valid_custom_id(id)));
    }

    #[test]
    fn a_budget_bounds_each_batch_and_stops_at_a_job_that_cannot_fit() {
        let prices = PriceTable::builtin().batch();
        let one = job(1, "a", "claude-haiku-4-5");
        let half = crate::send::outcome::worst_case(&prices, &one)
            .unwrap()
            .unwrap();
        let mut packer = Packer::new(settings(100, BATCH_BYTES), &prices, Some(half * 5 / 2));
        let mut filled = Vec::new();
        for i in 0..5 {
            filled.extend(
                packer
                    .add(&job(i, &format!("c{i}"), "claude-haiku-4-5"))
                    .unwrap(),
            );
            if packer.over_budget {
                break;
            }
        }
        assert!(packer.over_budget);
        let sizes: Vec<usize> = filled.iter().map(|p| p.items.len()).collect();
        assert_eq!(sizes, [2], "two worst cases fit the room, a third does not");
    }
}
