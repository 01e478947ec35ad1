//! Judge graders: each pending `judge` grade becomes a Messages request to the grader model,
//! sent through the run's [`RequestSender`] like any job (the same limiter, retries, budget
//! budget and shutdown, its attempts recorded with kind `judge`). A verdict is committed by
//! the writer as soon as it arrives, so an interrupted judging round resumes where it stopped;
//! a judge that fails after its attempts stays pending with the reason, for `msgbatch grade`.

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;

use super::sender::{Call, Kind, Metered, Request, RequestSender, SendError};
use super::writer::{Event, failure_message};
use crate::eval::{self, Graded, Grader};
use crate::message::Usage;
use crate::message::last_user_text;
use crate::pricing::PriceTable;
use crate::store::{GradeRecord, PendingJudge};

/// How a judging round went.
#[derive(Debug, Default)]
pub struct Judged {
    pub verdicts: u64,
    /// Requests that failed after all their attempts (their grades stay pending with the
    /// reason), or that the run's stop cut short.
    pub unanswered: u64,
    /// Requests the budget did not allow: their grades stay pending.
    pub over_budget: u64,
    pub cost_pico_usd: u64,
}

/// What came of one pending judge.
enum Outcome {
    Verdict(u64),
    Unanswered,
    OverBudget,
}

/// Sends every pending judge grade of a run; the writer commits the verdicts.
pub async fn run(
    sender: &RequestSender,
    prices: &PriceTable,
    pending: Vec<PendingJudge>,
    concurrency: usize,
) -> anyhow::Result<Judged> {
    let mut outcomes = futures_util::stream::iter(pending)
        .map(|p| one(sender, prices, p))
        .buffer_unordered(concurrency.max(1));
    let mut judged = Judged::default();
    while let Some(outcome) = outcomes.next().await {
        match outcome {
            Outcome::Verdict(cost) => {
                judged.verdicts += 1;
                judged.cost_pico_usd += cost;
            }
            Outcome::Unanswered => judged.unanswered += 1,
            Outcome::OverBudget => judged.over_budget += 1,
        }
    }
    Ok(judged)
}

/// The most one judge request can cost, or `None` for a judge model without a price.
pub(crate) fn worst_case(
    prices: &PriceTable,
    model: &str,
    pending: &PendingJudge,
) -> Result<Option<u64>, crate::pricing::CostOverflow> {
    // The request carries the prompt and the answer, plus the rubric and instructions.
    let bytes = (pending.request.len() + pending.response.len() + 2048) as u64;
    prices
        .worst_case_pico_usd(model, bytes, eval::JUDGE_MAX_TOKENS)
        .transpose()
}

/// A judge request as it is sent, directly or in a batch.
pub(crate) struct JudgeCall {
    pub model: String,
    pub body: String,
}

/// The rubric and model of a judge grader's spec, when it is one.
pub(crate) fn judge_of(spec: &str) -> Option<(String, String)> {
    let spec: Value = serde_json::from_str(spec).ok()?;
    match eval::parse_with_specs(&spec).ok()?.into_iter().next()? {
        (Grader::Judge { rubric, model }, _) => Some((rubric, model)),
        _ => None,
    }
}

/// The request that asks for a pending judge grade's verdict, or why it has none: the same
/// bytes whenever it is made from the same grade, job and answer.
pub(crate) fn judge_call(pending: &PendingJudge) -> Result<JudgeCall, String> {
    let Some((rubric, model)) = judge_of(&pending.spec) else {
        return Err(format!("the judge spec cannot be read: {}", pending.spec));
    };
    let request: Value = serde_json::from_str(&pending.request).unwrap_or(Value::Null);
    let response: Value = serde_json::from_str(&pending.response).unwrap_or(Value::Null);
    let prompt = last_user_text(request.get("messages"));
    let answer = Graded {
        message: &response,
        latency_ms: 0,
    }
    .text();
    let body = eval::judge_request(&model, &rubric, &prompt, &answer).to_string();
    Ok(JudgeCall { model, body })
}

/// The grade of `job`'s grader `grader` (its spec `spec`) that a judge's answer gives: the
/// Message `body` with its `usage`, priced at `prices` (the batch rates for a batch's
/// answer). `Err` says why the answer is refused.
pub(crate) fn verdict(
    prices: &PriceTable,
    (job, grader, spec): (i64, i64, String),
    model: String,
    body: &[u8],
    usage: &Usage,
) -> Result<GradeRecord, String> {
    let verdict_text = serde_json::from_slice::<Value>(body)
        .map(|m| {
            Graded {
                message: &m,
                latency_ms: 0,
            }
            .text()
        })
        .unwrap_or_default();
    let (passed, reason) = match eval::parse_verdict(&verdict_text) {
        Ok(verdict) => verdict,
        Err(e) => (false, e),
    };
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let cost = prices
        .cost_pico_usd(&model, usage)
        .transpose()
        .map_err(|overflow| format!("the judge's answer is refused: its cost is {overflow}"))?;
    Ok(GradeRecord {
        job,
        grader,
        kind: "judge".to_owned(),
        passed: Some(passed),
        reason: Some(reason),
        spec,
        judge_model: Some(model),
        judge_input_tokens: Some(to_i64(usage.total_input_tokens())),
        judge_output_tokens: Some(to_i64(usage.output_tokens)),
        judge_cost_pico_usd: cost.map(to_i64),
    })
}

/// Asks for one verdict and hands the grade (or why it has none) to the writer.
async fn one(sender: &RequestSender, prices: &PriceTable, pending: PendingJudge) -> Outcome {
    if sender.shutdown.stop.is_cancelled() {
        return Outcome::Unanswered;
    }
    let JudgeCall { model, body } = match judge_call(&pending) {
        Ok(call) => call,
        Err(reason) => {
            report(sender, failed(&pending, None, reason), 0).await;
            return Outcome::Unanswered;
        }
    };
    let worst = match worst_case(prices, &model, &pending) {
        Ok(worst) => worst,
        // No budget can hold it: it stays pending, as one over the budget does.
        Err(_) if sender.budget.limit().is_some() => return Outcome::OverBudget,
        Err(_) => None,
    };
    let reserved = match sender.budget.reserve_shared(worst, "judge request").await {
        Ok(held) => held,
        Err(_) => return Outcome::OverBudget,
    };
    let metered = Some(Metered::message(sender, &model, &body, |_| false));
    let request = Request {
        kind: Kind::Judge,
        job: Some(pending.job),
        attempts_before: 0,
        call: Call::Message {
            body: Bytes::from(body),
            stream: false,
            first_token: None,
        },
        metered,
    };
    let sent = sender.send(&request).await;
    let (attempts, elapsed) = (sent.attempts, sent.elapsed);
    let answered = match sent.into_answer() {
        Ok(answered) => answered,
        Err(SendError::Stopped) => {
            sender.budget.settle(reserved, 0);
            return Outcome::Unanswered;
        }
        Err(SendError::Failed(error)) => {
            let reason = format!(
                "the judge request failed: {}",
                failure_message(&error, attempts, elapsed)
            );
            report(sender, failed(&pending, Some(&model), reason), reserved).await;
            return Outcome::Unanswered;
        }
    };
    let usage = answered.summary.usage();
    let about = (pending.job, pending.grader, pending.spec.clone());
    match verdict(prices, about, model.clone(), &answered.body, &usage) {
        Ok(grade) => {
            let cost = grade
                .judge_cost_pico_usd
                .and_then(|c| u64::try_from(c).ok());
            report(sender, grade, reserved).await;
            Outcome::Verdict(cost.unwrap_or(0))
        }
        Err(reason) => {
            report(sender, failed(&pending, Some(&model), reason), reserved).await;
            Outcome::Unanswered
        }
    }
}

/// A judge grade left pending, with why.
pub(crate) fn failed(pending: &PendingJudge, model: Option<&str>, reason: String) -> GradeRecord {
    GradeRecord {
        job: pending.job,
        grader: pending.grader,
        kind: "judge".to_owned(),
        passed: None,
        reason: Some(reason),
        spec: pending.spec.clone(),
        judge_model: model.map(str::to_owned),
        ..GradeRecord::default()
    }
}

async fn report(sender: &RequestSender, grade: GradeRecord, reserved_pico_usd: u64) {
    if let Some(events) = &sender.attempts {
        // The writer outlives every request; a send fails only when it has died.
        let _ = events
            .send(Event::Grade {
                grade,
                reserved_pico_usd,
            })
            .await;
    }
}
