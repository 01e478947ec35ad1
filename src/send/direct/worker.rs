//! One job from pending to an outcome: send it through the [`RequestSender`] and hand what
//! came of it to the writer.

use bytes::Bytes;
use tokio::sync::oneshot;

use super::halt::is_run_level;
use super::sender::{Call, FirstToken, Kind, Metered, Place, Request, RequestSender, SendError};
use super::writer::{Event, Outcome};
use crate::client::AttemptError;
use crate::pricing::PriceTable;
use crate::send::outcome::{CacheUse, result_record};
use crate::store::PendingJob;

/// Whether a request body asks for a streamed answer.
fn wants_stream(request: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        stream: bool,
    }
    serde_json::from_str::<Probe>(request).is_ok_and(|p| p.stream)
}

/// A job as the dispatcher hands it to a worker.
pub struct Dispatched {
    pub job: PendingJob,
    /// Its worst case, held against the budget until its outcome is written.
    pub reserved_pico_usd: u64,
    pub cache: CacheUse,
    /// Told of the first content token when the job warms a cache prefix.
    pub first_token: Option<FirstToken>,
    pub metered: Option<Metered>,
    /// Its place in the run's concurrency, held until its outcome is decided.
    pub place: Place,
}

/// Sends a job and hands its outcome to the writer; true when it was answered. A cache
/// warmer (`first_token` given) is sent streamed, whatever its request says, so that its
/// first content token can release the jobs waiting for its prefix.
pub async fn run_job(sender: &RequestSender, prices: &PriceTable, dispatched: Dispatched) -> bool {
    let Dispatched {
        job,
        reserved_pico_usd,
        cache,
        first_token,
        metered,
        place,
    } = dispatched;
    let mut stream = wants_stream(&job.request);
    let mut body = job.request;
    if first_token.is_some()
        && !stream
        && let Ok(mut request) =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&body)
    {
        request.insert("stream".to_owned(), serde_json::Value::Bool(true));
        body = serde_json::Value::Object(request).to_string();
        stream = true;
    }
    let request = Request {
        kind: Kind::Job,
        job: Some(job.id),
        attempts_before: job.attempts,
        call: Call::Message {
            body: Bytes::from(body),
            stream,
            first_token,
        },
        metered,
    };
    let sent = sender.send_in(&request, &place).await;
    let attempts = job.attempts + i64::from(sent.attempts);
    let (attempts_this_session, elapsed) = (sent.attempts, sent.elapsed);
    let outcome = match sent.into_answer() {
        Ok(answer) => {
            let request_id = answer.request_id.clone();
            match result_record(
                prices,
                job.id,
                &job.model,
                job.expect.as_deref(),
                answer,
                cache,
            ) {
                Ok(result) => Outcome::Succeeded(Box::new(result)),
                // Its usage is none a request could produce: a bad answer, not a figure.
                Err(overflow) => Outcome::Failed {
                    error: AttemptError::InvalidResponse {
                        message: format!("the answer's usage is refused: its cost is {overflow}"),
                        body: None,
                        request_id,
                    },
                    attempts_this_session,
                    elapsed,
                },
            }
        }
        Err(SendError::Stopped) => Outcome::Unfinished,
        Err(SendError::Failed(error)) => Outcome::Failed {
            error: *error,
            attempts_this_session,
            elapsed,
        },
    };
    let answered = matches!(outcome, Outcome::Succeeded(_));
    let Some(events) = &sender.attempts else {
        return answered;
    };
    // A failure that may halt the run waits for the writer's decision, so that this worker
    // (and the place it holds) starts nothing new before a halt has taken effect.
    let (decided, verdict) = match &outcome {
        Outcome::Failed { error, .. } if is_run_level(error) => {
            let (told, verdict) = oneshot::channel();
            (Some(told), Some(verdict))
        }
        _ => (None, None),
    };
    // The writer outlives every worker; a send fails only when it has died, and then the run
    // ends with the writer's error.
    let _ = events
        .send(Event::Finished {
            job: job.id,
            attempts,
            outcome,
            reserved_pico_usd,
            decided,
        })
        .await;
    if let Some(verdict) = verdict {
        let _ = verdict.await;
    }
    drop(place);
    answered
}
