//! Sending a run through the Message Batches API (`run --via batches`): the run's pending jobs
//! packed into batches of at most 100,000 requests and 256 MB (less once the gateway refused
//! a body as too large: the refused batch is halved), each batch's intent committed before
//! its create call and its id right after, its body streamed from the store as it is sent,
//! the batches polled with a growing interval, and their results read as a stream into the
//! store, priced at the batch rates (half of every price). Every call to a batch endpoint is
//! paced by the Batches API's own request limit, retried as the run's calls are, and recorded
//! ([`calls`]), and the user's Ctrl-C ends any wait.
//!
//! Creating a batch is the one call that is not idempotent. A crash between the create call
//! and the commit of its id leaves an intent without an id; before anything is submitted
//! again, the batches the API lists are searched for one created in that window with as many
//! requests, and adopted. Only when none is found is the intent dropped and its jobs sent
//! again.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::client::batches::MessageBatch;
use crate::client::{AttemptError, Client, RetryPolicy, Unanswered, retried};
use crate::pricing::PriceTable;
use crate::send::budget;
use crate::send::deadline::Pace;
use crate::send::direct::Judged;
use crate::settings::{BatchSettings, RunSettings};
use crate::store::{BatchRow, GradeRecord, PendingJob, PendingJudge, Store, now_ms};
pub use calls::BatchCalls;
use calls::{About, Endpoint};

/// Jobs read from the store per page while batches are packed: a page's requests are in
/// memory at once, and long ones are hundreds of kilobytes.
const PAGE: i64 = 256;

/// How long before and after its intent a batch found in the API's list may have been
/// created and still be the one a crash left without an id.
const INTENT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The longest wait between two looks at a running batch.
const MAX_POLL: Duration = Duration::from_secs(60);

/// What a session of batches did.
#[derive(Debug, Default)]
pub struct Collected {
    /// Batches created in this session (adopted ones included).
    pub submitted: usize,
    /// Jobs whose outcome was recorded in this session.
    pub recorded: u64,
    /// Stopped by the user while batches were still running on the server.
    pub left_running: usize,
    /// Why no more batches were submitted, when the budget stopped them.
    pub budget_stop: Option<String>,
    /// The run gave up on batches to meet its deadline: what is pending goes directly.
    pub switched: bool,
}

/// What a round of batches sends: the run's pending jobs, or (once their answers are in) its
/// pending judge grades.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Answers,
    Judges,
}

/// The judges recorded from batches in a session: verdicts, judges left pending with why,
/// and what the verdicts cost at the batch rates.
#[derive(Debug, Default)]
pub struct JudgeTally {
    verdicts: AtomicU64,
    unanswered: AtomicU64,
    cost_pico_usd: AtomicU64,
    /// Results asked with a spec their grade no longer has: not recorded, the grade asked
    /// again.
    stale: AtomicU64,
}

impl JudgeTally {
    fn add(&self, grade: &GradeRecord) {
        if grade.passed.is_some() {
            self.verdicts.fetch_add(1, Ordering::Relaxed);
            let cost = grade
                .judge_cost_pico_usd
                .and_then(|c| u64::try_from(c).ok());
            self.cost_pico_usd
                .fetch_add(cost.unwrap_or(0), Ordering::Relaxed);
        } else {
            self.unanswered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Judges recorded so far, with or without a verdict.
    fn total(&self) -> u64 {
        self.verdicts.load(Ordering::Relaxed) + self.unanswered.load(Ordering::Relaxed)
    }

    /// As a judging round reports it.
    pub fn judged(&self) -> Judged {
        Judged {
            verdicts: self.verdicts.load(Ordering::Relaxed),
            unanswered: self.unanswered.load(Ordering::Relaxed),
            over_budget: 0,
            cost_pico_usd: self.cost_pico_usd.load(Ordering::Relaxed),
        }
    }
}

/// A request waiting to be packed: a pending job, or a pending judge grade.
enum Pending {
    Job(PendingJob),
    Judge(PendingJudge),
}

impl Pending {
    /// Where the next page starts after it.
    fn key(&self) -> (i64, i64) {
        match self {
            Self::Job(job) => (job.id, 0),
            Self::Judge(judge) => (judge.job, judge.grader),
        }
    }
}

/// A run's `--deadline`, watched while its batches run.
#[derive(Debug)]
pub struct DeadlineWatch {
    /// When the answers must be in, in Unix milliseconds.
    pub at_ms: i64,
    /// How fast the rest would go directly.
    pub pace: Pace,
    /// The run switched to the direct way (in this session or an earlier one).
    pub switched: AtomicBool,
}

/// Everything a session of batches needs.
pub struct Batcher<'a> {
    pub store: &'a Store,
    pub client: &'a Client,
    /// The table at the batch rates ([`PriceTable::batch`]): results and worst cases alike.
    pub prices: &'a PriceTable,
    pub run_id: i64,
    pub settings: BatchSettings,
    pub policy: RetryPolicy,
    pub stop: CancellationToken,
    pub show_progress: bool,
    /// The run's budget in pico-USD; earlier spend and open batches count against it.
    pub budget_pico_usd: Option<u64>,
    /// The pace of the calls to the batch endpoints, and their rows.
    pub calls: BatchCalls,
    /// The run's deadline, when it has one.
    pub deadline: Option<&'a DeadlineWatch>,
    /// The judges recorded from batches in this session.
    pub judged: JudgeTally,
}

/// What one round of submitting did.
struct Submitted {
    /// Batches created.
    made: usize,
    /// Why the budget stopped the round, when it did.
    budget_stop: Option<String>,
    /// The next batch would have taken the queue past its cap.
    queue_full: bool,
}

impl Submitted {
    fn queue_full(made: usize) -> Self {
        Self {
            made,
            budget_stop: None,
            queue_full: true,
        }
    }
}

/// How the creation of a batch ended.
enum Creation {
    /// Created (or found in the API's list after its answer was lost); its id is committed.
    Created,
    /// Not submitted: it could pass the budget, for the reason given.
    OverBudget(String),
    /// The user stopped the run before the create call was answered. Its intent stays, for
    /// the next session to look for the batch before sending anything again.
    Stopped,
    /// The gateway refused the body as too large, for the reason given; nothing was created.
    TooLarge(String),
}

/// What one create call came to, when it did not fail.
enum Attempted {
    Created(MessageBatch),
    /// The call failed in a way that may have created the batch, and the API's list could
    /// not be read to tell.
    Unknown(Unanswered),
    /// The gateway refused the body as too large (a 413, or a connection closed while the
    /// body was being sent, after which no batch was found), for the reason given.
    TooLarge(String),
    /// The body could not be made as packed, for the reason given; nothing was sent whole.
    Broken(String),
}

/// The bound of the next batches once the gateway refused `refused` as too large (`why`):
/// half its bytes, yet room for its largest request, which then goes alone. A batch of one
/// request refused cannot be made smaller: the run stops with why.
fn smaller(refused: &Packed, why: &str) -> anyhow::Result<usize> {
    let bytes = refused.bytes;
    if refused.items.len() <= 1 {
        let job = refused
            .items
            .first()
            .map_or("", |item| item.custom_id.as_str());
        return Err(BatchError(format!(
            "the gateway refuses a batch of the single request {job} ({bytes} bytes) as too large: {why}; send it directly with `--via direct`"
        ))
        .into());
    }
    let bound = (bytes / 2).max(refused.largest + pack::WRAPPER_BYTES);
    warn(&format!(
        "the gateway refused a batch of {} requests ({bytes} bytes) as too large: {why}; the requests are packed again in batches of at most {bound} bytes for the rest of the run",
        refused.items.len()
    ));
    Ok(bound)
}

/// Why a batch session cannot go on, in one sentence for the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BatchError(pub String);

impl Batcher<'_> {
    /// Resolves intents a crash left, submits what `source` says is pending (when `submit`),
    /// and collects every open batch of the run until all are recorded or the user stops.
    pub async fn execute(&self, submit: bool, source: Source) -> anyhow::Result<Collected> {
        let mut collected = Collected {
            submitted: self.recover().await?,
            ..Collected::default()
        };
        self.watch_deadline().await?;
        // The most bytes the gateway takes in one create body, once it refused more (in
        // this session or an earlier one).
        let mut max_bytes = self
            .settings
            .learnt_max_bytes
            .map_or(self.settings.max_bytes, |learnt| {
                learnt.clamp(1, self.settings.max_bytes)
            });
        let mut said_full = false;
        loop {
            let mut queue_full = false;
            if submit && !self.switched() {
                let submitted = self.submit_pending(source, &mut max_bytes).await?;
                collected.submitted += submitted.made;
                collected.budget_stop = submitted.budget_stop;
                queue_full = submitted.queue_full;
            }
            if queue_full && !said_full {
                said_full = true;
                crate::errln!(
                    "{} requests of this run are in open batches, the queue's cap (--batch-queue {}): the next batch is created once they have ended",
                    self.store.jobs_in_open_batches(self.run_id).await?,
                    self.settings.max_queued
                );
            }
            let judged_before = self.judged.total();
            let stale_before = self.judged.stale.load(Ordering::Relaxed);
            let recorded = self.collect().await?;
            collected.recorded += recorded;
            let ended = recorded + (self.judged.total() - judged_before);
            // Under a budget, batches are sized to the worst case that fits; once they are
            // in, what they did not spend of it is free for the next. A full queue likewise
            // takes more once the open batches have ended, and judges whose results came
            // back for a spec since replaced are asked again with theirs.
            let asked_again = source == Source::Judges
                && self.judged.stale.load(Ordering::Relaxed) > stale_before
                && !self.stop.is_cancelled();
            if submit && asked_again && !self.switched() {
                continue;
            }
            let paused = collected.budget_stop.is_some() || queue_full;
            if !submit || !paused || ended == 0 || self.switched() {
                break;
            }
        }
        collected.switched = self.switched();
        collected.left_running = self
            .store
            .open_batches(self.run_id)
            .await?
            .iter()
            .filter(|b| b.remote_id.is_some())
            .count();
        Ok(collected)
    }

    /// Whether the run gave up on batches to meet its deadline.
    pub(super) fn switched(&self) -> bool {
        self.deadline
            .is_some_and(|d| d.switched.load(Ordering::Relaxed))
    }

    /// Looks at the deadline: once the time left is what the pending jobs would take sent
    /// directly ([`Pace::needed`]), the switch is recorded with the run's settings, then
    /// every open batch is canceled (again, after a session that died in between: a cancel
    /// is harmless twice). Their requests canceled before they were processed go back to
    /// pending as their results are read. Returns whether the run has switched.
    pub(super) async fn watch_deadline(&self) -> anyhow::Result<bool> {
        let Some(deadline) = self.deadline else {
            return Ok(false);
        };
        let already = deadline.switched.load(Ordering::Relaxed);
        if !already {
            // Once every job is settled, what is left is the judges.
            let mut pending =
                u64::try_from(self.store.run_counts(self.run_id).await?.pending).unwrap_or(0);
            let mut what = "jobs have no answer yet";
            if pending == 0 {
                pending =
                    u64::try_from(self.store.pending_judge_count(self.run_id).await?).unwrap_or(0);
                what = "judges have no verdict yet";
            }
            let now = now_ms();
            if !deadline.pace.due(now, deadline.at_ms, pending) {
                return Ok(false);
            }
            let at_ms = deadline.at_ms;
            self.update_settings(|settings| {
                let kept = settings
                    .send
                    .deadline
                    .get_or_insert(crate::send::deadline::Deadline {
                        at_ms,
                        switched_at_ms: None,
                    });
                kept.switched_at_ms = Some(now);
            })
            .await?;
            deadline.switched.store(true, Ordering::Relaxed);
            crate::errln!(
                "the deadline ({}) is near: {pending} {what}, and sending them directly takes about {} at the run's pace; they go directly{}",
                crate::send::deadline::describe(deadline.at_ms),
                humantime::format_duration(std::time::Duration::from_secs(
                    deadline.pace.needed(pending).as_secs()
                )),
                if self.open_remote().await?.is_empty() {
                    String::new()
                } else {
                    ", once the open batches are canceled and what they finished is kept".to_owned()
                }
            );
        }
        for row in self.open_remote().await? {
            match self.cancel(&row).await? {
                Ok(_) => {}
                Err(Unanswered::Stopped) => break,
                // Looked at again as it is polled: a batch that cannot be canceled is waited
                // for.
                Err(Unanswered::Failed(e)) => warn(&format!(
                    "canceling batch {} for the deadline failed: {e}; it is waited for",
                    row.remote_id.as_deref().unwrap_or_default()
                )),
            }
        }
        Ok(true)
    }

    /// The run's batches submitted and not yet recorded.
    async fn open_remote(&self) -> anyhow::Result<Vec<BatchRow>> {
        Ok(self
            .store
            .open_batches(self.run_id)
            .await?
            .into_iter()
            .filter(|b| b.remote_id.is_some())
            .collect())
    }

    /// Intents left without an id: adopts the batch each one created, if the API lists one,
    /// and drops the others. Returns how many were adopted.
    async fn recover(&self) -> anyhow::Result<usize> {
        let intents: Vec<BatchRow> = self
            .store
            .open_batches(self.run_id)
            .await?
            .into_iter()
            .filter(|b| b.remote_id.is_none())
            .collect();
        if intents.is_empty() {
            return Ok(0);
        }
        let known = self.store.known_batch_ids().await?;
        let earliest = intents.iter().map(|b| b.intent_at_ms).min().unwrap_or(0);
        let mut candidates: Vec<MessageBatch> = Vec::new();
        let mut after: Option<String> = None;
        // Newest first: page until the batches are older than the earliest intent's window.
        loop {
            let page = match self
                .patiently(Endpoint::List, About::default(), || {
                    self.client.list_batches(after.as_deref(), 100)
                })
                .await?
            {
                Ok(page) => page,
                // The intents stay for the next session to resolve.
                Err(Unanswered::Stopped) => return Ok(0),
                Err(Unanswered::Failed(e)) => {
                    return Err(
                        BatchError(format!("listing the gateway's batches failed: {e}")).into(),
                    );
                }
            };
            let mut older = false;
            for batch in page.data {
                let created = created_ms(&batch);
                if created.is_some_and(|c| c < earliest - window_ms()) {
                    older = true;
                }
                if !known.contains(&batch.id) {
                    candidates.push(batch);
                }
            }
            match page.last_id {
                Some(last) if page.has_more && !older => after = Some(last),
                _ => break,
            }
        }
        let mut adopted = 0;
        for intent in intents {
            let found = candidates.iter().position(|b| {
                let near =
                    created_ms(b).is_none_or(|c| (c - intent.intent_at_ms).abs() <= window_ms());
                near && i64::try_from(b.request_counts.total()).ok() == Some(intent.requests)
            });
            match found {
                Some(i) => {
                    let batch = candidates.swap_remove(i);
                    let at = created_ms(&batch).unwrap_or(intent.intent_at_ms);
                    self.store.batch_submitted(intent.id, &batch.id, at).await?;
                    adopted += 1;
                }
                None => self.store.drop_batch_intent(intent.id).await?,
            }
        }
        Ok(adopted)
    }

    /// The next page of what `source` has pending and in no open batch, after `after`.
    async fn page(&self, source: Source, after: (i64, i64)) -> anyhow::Result<Vec<Pending>> {
        Ok(match source {
            Source::Answers => self
                .store
                .unbatched_jobs(self.run_id, after.0, PAGE)
                .await?
                .into_iter()
                .map(Pending::Job)
                .collect(),
            Source::Judges => self
                .store
                .unbatched_judges(self.run_id, after, PAGE)
                .await?
                .into_iter()
                .map(Pending::Judge)
                .collect(),
        })
    }

    /// Packs one pending request; a judge whose spec cannot be read is recorded so at once,
    /// as a judge asked directly would be, and never sent.
    async fn pack(
        &self,
        packer: &mut Packer<'_>,
        pending: &Pending,
        max_bytes: usize,
    ) -> anyhow::Result<Option<Packed>> {
        let added = match pending {
            Pending::Job(job) => packer.add(job),
            Pending::Judge(judge) => match packer.add_judge(judge) {
                Err(e) if e.is::<BadJudge>() => {
                    let reason = e.to_string();
                    let grade = crate::send::direct::judge::failed(judge, None, reason);
                    self.store.save_grades(&[grade]).await?;
                    return Ok(None);
                }
                added => added,
            },
        };
        added.map_err(|e| self.refused_before(e, max_bytes))
    }

    /// Packs what `source` has pending and in no open batch into batches of at most
    /// `max_bytes` and creates them, as long as the budget allows. A batch the gateway
    /// refuses as too large lowers `max_bytes` to half its size, and what was not yet
    /// submitted is packed again. Returns the batches created and why the budget stopped
    /// them, if it did.
    async fn submit_pending(
        &self,
        source: Source,
        max_bytes: &mut usize,
    ) -> anyhow::Result<Submitted> {
        let mut made = 0;
        let paused = |made, budget_stop| {
            Ok(Submitted {
                made,
                budget_stop,
                queue_full: false,
            })
        };
        'packing: loop {
            let mut after = match source {
                Source::Answers => (self.store.before_first_job(self.run_id).await?, 0),
                Source::Judges => (i64::MIN, i64::MIN),
            };
            let room = match self.budget_pico_usd {
                Some(budget) => Some(
                    budget.saturating_sub(budget::held_by_batches(self.store, self.run_id).await?),
                ),
                None => None,
            };
            // A batch always fits in an empty queue.
            let settings = BatchSettings {
                max_bytes: *max_bytes,
                max_requests: self.settings.max_requests.min(self.settings.max_queued),
                ..self.settings
            };
            let mut packer = Packer::new(settings, self.prices, room);
            loop {
                if self.stop.is_cancelled() {
                    return paused(made, None);
                }
                let page = self.page(source, after).await?;
                let Some(last) = page.last() else {
                    break;
                };
                after = last.key();
                for pending in page {
                    let filled = self.pack(&mut packer, &pending, *max_bytes).await?;
                    if let Some(full) = filled {
                        if self.queue_is_full_for(&full).await? {
                            return Ok(Submitted::queue_full(made));
                        }
                        match self.create(&full).await? {
                            Creation::Created => made += 1,
                            Creation::OverBudget(why) => return paused(made, Some(why)),
                            Creation::Stopped => return paused(made, None),
                            Creation::TooLarge(why) => {
                                *max_bytes = smaller(&full, &why)?;
                                self.learnt(*max_bytes).await?;
                                continue 'packing;
                            }
                        }
                    }
                    if packer.over_budget {
                        let held = budget::held_by_batches(self.store, self.run_id).await?;
                        let limit = self.budget_pico_usd.unwrap_or(0);
                        return paused(made, Some(budget::batch_over_budget(limit, held)));
                    }
                }
            }
            if let Some(rest) = packer.finish() {
                if self.queue_is_full_for(&rest).await? {
                    return Ok(Submitted::queue_full(made));
                }
                match self.create(&rest).await? {
                    Creation::Created => made += 1,
                    Creation::OverBudget(why) => return paused(made, Some(why)),
                    Creation::Stopped => {}
                    Creation::TooLarge(why) => {
                        *max_bytes = smaller(&rest, &why)?;
                        self.learnt(*max_bytes).await?;
                        continue 'packing;
                    }
                }
            }
            return paused(made, None);
        }
    }

    /// Whether `packed` would take the requests in the run's open batches past the queue's
    /// cap (`--batch-queue`): it then waits until they have ended.
    async fn queue_is_full_for(&self, packed: &Packed) -> anyhow::Result<bool> {
        let queued = usize::try_from(self.store.jobs_in_open_batches(self.run_id).await?)
            .unwrap_or(usize::MAX);
        Ok(queued.saturating_add(packed.items.len()) > self.settings.max_queued)
    }

    /// Keeps the gateway's body limit, as learnt, with the run's settings: `resume` packs
    /// its batches under it from the start.
    async fn learnt(&self, max_bytes: usize) -> anyhow::Result<()> {
        self.update_settings(|settings| {
            settings.send.batches.learnt_max_bytes = Some(max_bytes);
        })
        .await
    }

    /// Changes the run's stored settings as `change` says, from what is stored now (what
    /// this session learnt so far included).
    async fn update_settings(&self, change: impl FnOnce(&mut RunSettings)) -> anyhow::Result<()> {
        let run = self.store.find_run(&self.run_id.to_string()).await?;
        let mut settings = RunSettings::of(&run)?;
        change(&mut settings);
        self.store
            .set_run_settings(self.run_id, &settings.stored()?)
            .await?;
        Ok(())
    }

    /// A job too large for a batch, said with why batches are smaller than --batch-max-mb
    /// when the gateway made them so.
    fn refused_before(&self, error: anyhow::Error, max_bytes: usize) -> anyhow::Error {
        if max_bytes < self.settings.max_bytes {
            error.context(format!(
                "the gateway refused larger batches in this run; batches are at most {max_bytes} bytes"
            ))
        } else {
            error
        }
    }

    /// Creates one batch: the intent first, then the call, then its id.
    async fn create(&self, packed: &Packed) -> anyhow::Result<Creation> {
        let worst: u64 = packed.worst_cases.iter().sum::<u64>();
        if let Some(budget) = self.budget_pico_usd {
            let held = budget::held_by_batches(self.store, self.run_id).await?;
            if held.saturating_add(worst) > budget {
                return Ok(Creation::OverBudget(format!(
                    "the next batch of {} requests could cost up to {} at the batch rates, over what is left of --max-cost {} ({} spent or held by batches already submitted)",
                    packed.items.len(),
                    crate::pricing::format_usd(worst),
                    crate::pricing::format_usd(budget),
                    crate::pricing::format_usd(held),
                )));
            }
        }
        let intent_at_ms = now_ms();
        let intent = self
            .store
            .batch_intent(
                self.run_id,
                packed.kind(),
                &packed.items,
                packed.bytes,
                worst,
                intent_at_ms,
            )
            .await?;
        let requests = body::Requests {
            kind: packed.kind(),
            items: Arc::new(packed.items.clone()),
            verbatim: Arc::new(packed.verbatim.clone()),
        };
        // The batches of the store, which a batch found in the list after a lost answer is
        // none of.
        let known = self.store.known_batch_ids().await?;
        let made = AtomicI64::new(0);
        let about = About {
            batch: Some(intent),
            remote_id: None,
        };
        let attempted = retried(self.policy, &self.stop, || {
            self.create_once(&requests, packed.bytes, &known, intent_at_ms, about, &made)
        })
        .await;
        self.recorded()?;
        match attempted {
            Ok(Attempted::Created(batch)) => {
                self.store
                    .batch_submitted(intent, &batch.id, now_ms())
                    .await?;
                Ok(Creation::Created)
            }
            Ok(Attempted::TooLarge(why)) => {
                self.store.drop_batch_intent(intent).await?;
                Ok(Creation::TooLarge(why))
            }
            // The body was cut short of what was packed, and its declared length with it:
            // the gateway cannot have taken it as a batch.
            Ok(Attempted::Broken(why)) => {
                self.store.drop_batch_intent(intent).await?;
                Err(BatchError(format!(
                    "creating a batch failed: {why}; nothing was submitted"
                ))
                .into())
            }
            // The intent stays: the next session looks for its batch before sending again.
            Ok(Attempted::Unknown(Unanswered::Stopped)) | Err(Unanswered::Stopped) => {
                Ok(Creation::Stopped)
            }
            Ok(Attempted::Unknown(Unanswered::Failed(error))) => Err(BatchError(format!(
                "a create call failed and whether it created the batch cannot be told (listing the gateway's batches failed: {error}); `msgbatch resume` looks for it again before sending anything"
            ))
            .into()),
            Err(Unanswered::Failed(error)) => {
                self.store.drop_batch_intent(intent).await?;
                if error.http_status() == Some(404) {
                    return Err(BatchError(format!(
                        "the gateway has no Message Batches endpoint (it answered 404 to the create call: {error}); nothing was submitted. Send directly with `--via direct`, or set `batches = false` in its msgbatch.toml profile"
                    ))
                    .into());
                }
                Err(BatchError(format!("creating a batch failed: {error}")).into())
            }
        }
    }

    /// One create call. A failure that may have come after the batch was created (a server
    /// error, a lost connection) is followed by a look for it in the API's list, so that a
    /// retry never creates a batch twice.
    async fn create_once(
        &self,
        requests: &body::Requests,
        bytes: usize,
        known: &HashSet<String>,
        intent_at_ms: i64,
        about: About<'_>,
        made: &AtomicI64,
    ) -> Result<Attempted, AttemptError> {
        // Nothing is sent, nor its body read, before the call's turn: a stop while it waits
        // leaves the intent for the next session, which finds no batch and drops it.
        let Some(queued) = self.create_turn().await else {
            return Ok(Attempted::Unknown(Unanswered::Stopped));
        };
        let sent = Arc::new(body::Sent::default());
        let body = body::stream(
            self.store.clone(),
            requests.clone(),
            bytes,
            Arc::clone(&sent),
        );
        let length = u64::try_from(bytes).unwrap_or(u64::MAX);
        let created = self
            .call_in(
                queued,
                Endpoint::Create,
                about,
                made,
                self.client.create_batch(length, body),
            )
            .await;
        if let (Err(_), Some(why)) = (&created, sent.broken()) {
            return Ok(Attempted::Broken(why));
        }
        let count = requests.items.len();
        match created {
            Ok(batch) => Ok(Attempted::Created(batch)),
            Err(e @ AttemptError::Http { status: 413, .. }) => {
                Ok(Attempted::TooLarge(format!("it answered {e}")))
            }
            // A refusal with a status other than a server error never created the batch.
            Err(e @ AttemptError::Http { status, .. }) if status < 500 && status != 429 => Err(e),
            Err(lost) => match self.recover_one(known, intent_at_ms, count).await {
                Ok(Ok(Some(found))) => Ok(Attempted::Created(found)),
                // A create whose connection broke, with no batch made while the list that
                // followed was answered: what proxies do with a body over their limit, closing
                // once they read its length. Whether any of the body was written by then is a
                // race (the client may not have begun it), so that is not asked; a break for
                // another cause costs one smaller batch, never a batch sent twice.
                Ok(Ok(None)) if matches!(lost, AttemptError::Connection(_)) => {
                    Ok(Attempted::TooLarge(format!(
                        "the connection closed while the body was being sent ({lost})"
                    )))
                }
                Ok(Ok(None)) => Err(lost),
                Ok(Err(unknown)) => Ok(Attempted::Unknown(unknown)),
                // The store refused to record a call: it says so once the create is over.
                Err(_) => Ok(Attempted::Unknown(Unanswered::Stopped)),
            },
        }
    }

    /// After a create call whose answer was lost: the batch it created, if the API lists one
    /// made since the intent (written at `intent_at_ms`) with as many requests.
    async fn recover_one(
        &self,
        known: &HashSet<String>,
        intent_at_ms: i64,
        requests: usize,
    ) -> anyhow::Result<Result<Option<MessageBatch>, Unanswered>> {
        let page = match self
            .patiently(Endpoint::List, About::default(), || {
                self.client.list_batches(None, 100)
            })
            .await?
        {
            Ok(page) => page,
            Err(unanswered) => return Ok(Err(unanswered)),
        };
        Ok(Ok(page.data.into_iter().find(|b| {
            !known.contains(&b.id)
                && created_ms(b).is_none_or(|c| c >= intent_at_ms - window_ms())
                && usize::try_from(b.request_counts.total()).ok() == Some(requests)
        })))
    }
}

/// A warning about what a gateway did, escaped for the terminal.
fn warn(note: &str) {
    crate::errln!("warning: {note}");
}

fn window_ms() -> i64 {
    i64::try_from(INTENT_WINDOW.as_millis()).unwrap_or(i64::MAX)
}

/// When the API says a batch was created, in Unix milliseconds.
fn created_ms(batch: &MessageBatch) -> Option<i64> {
    let at = humantime::parse_rfc3339_weak(batch.created_at.as_deref()?).ok()?;
    let ms = at.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok()
}

mod body;
mod calls;
mod pack;
mod results;

use pack::{BadJudge, Packed, Packer};
