//! Judge graders: each pending `judge` grade becomes a Messages request to the grader model,
//! sent through the run's gateway with the run's limiter and retry policy. A verdict is saved
//! as soon as it arrives, so an interrupted judging round resumes where it stopped.

use backon::Retryable;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::client::{AttemptError, Client, RetryPolicy};
use crate::eval::{self, Graded, Grader};
use crate::limiter::Limiter;
use crate::message::last_user_text;
use crate::pricing::PriceTable;
use crate::store::{GradeRecord, PendingJudge, Store};

/// Verdicts saved per transaction.
const SAVE_EVERY: usize = 64;

/// How a judging round went.
#[derive(Debug, Default)]
pub struct Judged {
    pub verdicts: u64,
    /// Requests that failed after all their attempts, or that the budget did not allow: the
    /// grades stay pending.
    pub unanswered: u64,
    /// The budget stopped judging.
    pub over_budget: bool,
    pub cost_pico_usd: u64,
}

pub struct Judge<'a> {
    pub store: &'a Store,
    pub client: &'a Client,
    pub limiter: &'a Limiter,
    pub prices: &'a PriceTable,
    pub policy: RetryPolicy,
    pub concurrency: usize,
    pub stop: &'a CancellationToken,
    /// What judging may spend (pico-USD), under the run's `--max-cost`.
    pub budget_pico_usd: Option<u64>,
}

impl Judge<'_> {
    /// Sends every pending judge grade of a run and saves the verdicts.
    pub async fn run(&self, run_id: i64) -> anyhow::Result<Judged> {
        let pending = self.store.pending_judges(run_id).await?;
        let mut judged = Judged::default();
        // Each request's worst case is held against the budget until its real cost is known.
        let held = std::sync::atomic::AtomicU64::new(0);
        let spent = std::sync::atomic::AtomicU64::new(0);
        let refused = std::sync::atomic::AtomicBool::new(false);
        let held = &held;
        let spent = &spent;
        let refused = &refused;
        let mut verdicts = futures_util::stream::iter(pending)
            .map(|p| async move {
                let worst = self.worst_case(&p);
                if let Some(budget) = self.budget_pico_usd {
                    use std::sync::atomic::Ordering::SeqCst;
                    let reserve = worst.unwrap_or(u64::MAX);
                    let total = spent
                        .load(SeqCst)
                        .saturating_add(held.load(SeqCst))
                        .saturating_add(reserve);
                    if total > budget {
                        refused.store(true, SeqCst);
                        return None;
                    }
                    held.fetch_add(reserve, SeqCst);
                    let grade = self.one(p).await;
                    held.fetch_sub(reserve, SeqCst);
                    let cost = grade
                        .as_ref()
                        .and_then(|g| g.judge_cost_pico_usd)
                        .and_then(|c| u64::try_from(c).ok())
                        .unwrap_or(0);
                    spent.fetch_add(cost, SeqCst);
                    grade
                } else {
                    self.one(p).await
                }
            })
            .buffer_unordered(self.concurrency.max(1));
        let mut batch = Vec::new();
        while let Some(outcome) = verdicts.next().await {
            match outcome {
                Some(grade) => {
                    judged.verdicts += 1;
                    judged.cost_pico_usd += grade
                        .judge_cost_pico_usd
                        .and_then(|c| u64::try_from(c).ok())
                        .unwrap_or(0);
                    batch.push(grade);
                }
                None => judged.unanswered += 1,
            }
            if batch.len() >= SAVE_EVERY {
                self.store.save_grades(&std::mem::take(&mut batch)).await?;
            }
        }
        self.store.save_grades(&batch).await?;
        judged.over_budget = refused.load(std::sync::atomic::Ordering::SeqCst);
        Ok(judged)
    }

    /// The most one judge request can cost, or `None` for a judge model without a price.
    fn worst_case(&self, pending: &PendingJudge) -> Option<u64> {
        let spec: Value = serde_json::from_str(&pending.spec).ok()?;
        let (Grader::Judge { model, .. }, _) =
            eval::parse_with_specs(&spec).ok()?.into_iter().next()?
        else {
            return None;
        };
        // The request carries the prompt and the answer, plus the rubric and instructions.
        let bytes = (pending.request.len() + pending.response.len() + 2048) as u64;
        self.prices
            .worst_case_pico_usd(&model, bytes, eval::JUDGE_MAX_TOKENS)
    }

    /// One verdict, or `None` when the judge could not be asked (the grade stays pending).
    async fn one(&self, pending: PendingJudge) -> Option<GradeRecord> {
        if self.stop.is_cancelled() {
            return None;
        }
        let spec: Value = serde_json::from_str(&pending.spec).ok()?;
        let (Grader::Judge { rubric, model }, _) =
            eval::parse_with_specs(&spec).ok()?.into_iter().next()?
        else {
            return None;
        };
        let request: Value = serde_json::from_str(&pending.request).ok()?;
        let response: Value = serde_json::from_str(&pending.response).ok()?;
        let prompt = last_user_text(request.get("messages"));
        let answer = Graded {
            message: &response,
            latency_ms: 0,
        }
        .text();
        let body = Bytes::from(eval::judge_request(&model, &rubric, &prompt, &answer).to_string());
        let send = || async {
            self.limiter.until_ready().await;
            self.client.send(body.clone(), false).await.result
        };
        let answered = send
            .retry(self.policy)
            .when(|e: &AttemptError| e.is_retryable() && !self.stop.is_cancelled())
            .adjust(|e: &AttemptError, delay| {
                delay.map(|d| e.retry_after().map_or(d, |floor| d.max(floor)))
            })
            .await
            .ok()?;
        let usage = answered.summary.usage();
        let verdict_text = serde_json::from_slice::<Value>(&answered.body)
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
        Some(GradeRecord {
            job: pending.job,
            grader: pending.grader,
            kind: "judge".to_owned(),
            passed: Some(passed),
            reason: Some(reason),
            spec: pending.spec,
            judge_model: Some(model.clone()),
            judge_input_tokens: Some(to_i64(usage.total_input_tokens())),
            judge_output_tokens: Some(to_i64(usage.output_tokens)),
            judge_cost_pico_usd: self.prices.cost_pico_usd(&model, &usage).map(to_i64),
        })
    }
}
