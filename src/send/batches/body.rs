//! The create body of a packed batch, made from the store as it is sent: its jobs are read a
//! page at a time and each request is written as packing counted it, so that memory does not
//! grow with the batch. The body must come to exactly the bytes packed; one that does not
//! ends the stream with an error, which fails the create call (its length was declared)
//! rather than send another batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;

use super::pack::{CLOSE, OPEN, params, push_request_line};
use crate::send::direct::judge::judge_call;
use crate::store::{BatchItem, BatchKind, Store};

/// Jobs read from the store per chunk of a body.
const JOBS_PER_CHUNK: usize = 512;

/// A packed batch's requests, as its body is made from them: which job (and for a judge's,
/// which grade) each is, and whether it is sent as stored
/// ([`super::pack::Packed::verbatim`]). A judge's request is made from its grade's spec and
/// the job's request and answer, as a judge asked directly is.
#[derive(Debug, Clone)]
pub(super) struct Requests {
    pub(super) kind: BatchKind,
    pub(super) items: Arc<Vec<BatchItem>>,
    pub(super) verbatim: Arc<Vec<bool>>,
}

/// What became of a body as it was sent.
#[derive(Debug, Default)]
pub(super) struct Sent {
    /// Bytes handed to the connection.
    pub(super) bytes: AtomicU64,
    /// Why the body could not be made as packed, when it could not.
    pub(super) broken: Mutex<Option<String>>,
}

impl Sent {
    pub(super) fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The create body of the batch of `requests`, `length` bytes as packed, read from `store`
/// as the connection takes it.
pub(super) fn stream(
    store: Store,
    Requests {
        kind,
        items,
        verbatim,
    }: Requests,
    length: usize,
    sent: Arc<Sent>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let maker = Maker {
        store,
        kind,
        items,
        verbatim,
        length,
        next: 0,
        made: 0,
        closed: false,
    };
    futures_util::stream::unfold((maker, sent), |(mut maker, sent)| async move {
        if maker.closed {
            return None;
        }
        match maker.chunk().await {
            Ok(chunk) => {
                let bytes = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
                sent.bytes.fetch_add(bytes, Ordering::Relaxed);
                Some((Ok(chunk), (maker, sent)))
            }
            Err(why) => {
                maker.closed = true;
                *sent.broken.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
                Some((Err(std::io::Error::other(why)), (maker, sent)))
            }
        }
    })
}

/// Makes a body chunk by chunk.
struct Maker {
    store: Store,
    kind: BatchKind,
    items: Arc<Vec<BatchItem>>,
    /// Which requests are sent as stored ([`super::pack::Packed::verbatim`]).
    verbatim: Arc<Vec<bool>>,
    length: usize,
    /// The first item not yet written.
    next: usize,
    /// Bytes made so far.
    made: usize,
    /// The closing bracket is written.
    closed: bool,
}

impl Maker {
    /// The next chunk: the opening of the body with the first requests, the next requests,
    /// and the closing with the last ones.
    async fn chunk(&mut self) -> Result<Bytes, String> {
        let page = &self.items[self.next..self.items.len().min(self.next + JOBS_PER_CHUNK)];
        let ids: Vec<i64> = page.iter().map(|item| item.job).collect();
        let mut requests = self.requests(&ids).await?;
        let mut chunk = Vec::with_capacity(JOBS_PER_CHUNK * 512);
        if self.next == 0 {
            chunk.extend_from_slice(OPEN);
        }
        for (at, item) in page.iter().enumerate() {
            let custom_id = &item.custom_id;
            let request = requests
                .remove(&(item.job, item.grader))
                .ok_or_else(|| format!("the job of request {custom_id} is gone from the store"))?;
            if self.next + at > 0 {
                chunk.push(b',');
            }
            if self.verbatim.get(self.next + at) == Some(&true) {
                push_request_line(&mut chunk, &request, custom_id);
            } else {
                let params = params(&request, custom_id).map_err(|e| format!("{e:#}"))?;
                push_request_line(&mut chunk, &params, custom_id);
            }
        }
        self.next += page.len();
        if self.next == self.items.len() {
            chunk.extend_from_slice(CLOSE);
            self.closed = true;
        }
        self.made += chunk.len();
        if self.made > self.length || (self.closed && self.made != self.length) {
            return Err(format!(
                "the batch's body came to {} bytes where {} were packed; nothing different is sent",
                if self.closed {
                    self.made.to_string()
                } else {
                    format!("more than {}", self.made - chunk.len())
                },
                self.length
            ));
        }
        Ok(Bytes::from(chunk))
    }

    /// The requests of the items of `jobs`, by (job, grader): a job's stored request, or
    /// the judge request of each of its grades.
    async fn requests(&self, jobs: &[i64]) -> Result<HashMap<(i64, Option<i64>), String>, String> {
        let failed = |e| format!("reading the requests of a batch from the store failed: {e}");
        Ok(match self.kind {
            BatchKind::Answer => self
                .store
                .job_requests(jobs)
                .await
                .map_err(failed)?
                .into_iter()
                .map(|(job, request)| ((job, None), request))
                .collect(),
            BatchKind::Judge => self
                .store
                .judge_inputs(jobs)
                .await
                .map_err(failed)?
                .into_iter()
                .filter_map(|judge| {
                    let call = judge_call(&judge).ok()?;
                    Some(((judge.job, Some(judge.grader)), call.body))
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use serde_json::Value;

    use super::*;
    use crate::pricing::PriceTable;
    use crate::settings::BatchSettings;
    use crate::store::{JobState, NewJob, NewRun};

    async fn store_with_jobs(dir: &std::path::Path, count: u64) -> (Store, i64) {
        let store = Store::open(&dir.join("runs.db")).await.unwrap();
        let run_id = store
            .create_run(&NewRun {
                name: "body".to_owned(),
                input_path: "jobs.jsonl".to_owned(),
                gateway_name: "mock".to_owned(),
                base_url: "mock://".to_owned(),
                messages_path: "/v1/messages".to_owned(),
                settings_json: "{}".to_owned(),
                via: "batches",
                checked: None,
            })
            .await
            .unwrap();
        let jobs = (0..count)
            .map(|line| {
                let mut request = serde_json::json!({
                    "model": "claude-haiku-4-5", "max_tokens": 16,
                    "messages": [{"role": "user", "content": format!("prompt \"{line}\" é")}]
                });
                if line % 2 == 0 {
                    request["stream"] = Value::Bool(true);
                }
                let request = request.to_string();
                NewJob {
                    // Some ids the API refuses, which go under ids made for them.
                    job_id: if line % 3 == 0 {
                        format!("job {line}")
                    } else {
                        format!("j-{line}")
                    },
                    model: "claude-haiku-4-5".to_owned(),
                    sample: 0,
                    line,
                    request_sha256: crate::jobs::sha256_hex(request.as_bytes()),
                    request,
                    tags: None,
                    expect: None,
                    state: JobState::Pending,
                    error: None,
                    // Known at load for a request without `stream`, as the loader stores it.
                    params_max_tokens: (line % 2 != 0).then_some(16),
                }
            })
            .collect();
        store.insert_jobs(run_id, jobs).await.unwrap();
        (store, run_id)
    }

    async fn packed(store: &Store, run_id: i64) -> super::super::pack::Packed {
        let prices = PriceTable::builtin();
        let mut packer = super::super::pack::Packer::new(BatchSettings::default(), &prices, None);
        let after = store.before_first_job(run_id).await.unwrap();
        for job in store.unbatched_jobs(run_id, after, 10_000).await.unwrap() {
            assert!(packer.add(&job).unwrap().is_none());
        }
        packer.finish().unwrap()
    }

    async fn collect(
        store: &Store,
        items: &[BatchItem],
        verbatim: &[bool],
        length: usize,
    ) -> (Vec<Result<Bytes, std::io::Error>>, Arc<Sent>) {
        let sent = Arc::new(Sent::default());
        let chunks = stream(
            store.clone(),
            Requests {
                kind: BatchKind::Answer,
                items: Arc::new(items.to_vec()),
                verbatim: Arc::new(verbatim.to_vec()),
            },
            length,
            Arc::clone(&sent),
        )
        .collect()
        .await;
        (chunks, sent)
    }

    #[tokio::test]
    async fn a_body_is_made_in_chunks_to_exactly_the_bytes_packed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, run_id) = store_with_jobs(dir.path(), 1_200).await;
        let packed = packed(&store, run_id).await;
        // Half the requests are stored with `stream`, which the body drops; the others are
        // sent as stored.
        assert_eq!(packed.verbatim.iter().filter(|v| **v).count(), 600);
        let (chunks, sent) = collect(&store, &packed.items, &packed.verbatim, packed.bytes).await;
        assert_eq!(chunks.len(), 3, "512 jobs a chunk");
        let body: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        assert_eq!(body.len(), packed.bytes);
        assert_eq!(sent.bytes.load(Ordering::Relaxed), packed.bytes as u64);
        assert_eq!(sent.broken(), None);
        let body: Value = serde_json::from_slice(&body).unwrap();
        let requests = body["requests"].as_array().unwrap();
        assert_eq!(requests.len(), 1_200);
        assert_eq!(requests[0]["custom_id"], packed.items[0].custom_id);
        assert!(requests.iter().all(|r| r["params"].get("stream").is_none()));
        assert_eq!(requests[1]["custom_id"], "j-1");
        assert_eq!(
            requests[1]["params"]["messages"][0]["content"],
            "prompt \"1\" é"
        );
    }

    #[tokio::test]
    async fn a_body_that_does_not_come_to_the_bytes_packed_ends_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (store, run_id) = store_with_jobs(dir.path(), 600).await;
        let packed = packed(&store, run_id).await;
        for length in [packed.bytes - 1, packed.bytes + 1, 100] {
            let (chunks, sent) = collect(&store, &packed.items, &packed.verbatim, length).await;
            let last = chunks.last().unwrap();
            assert!(last.is_err(), "{length}");
            let made: usize = chunks
                .iter()
                .filter_map(|c| c.as_ref().ok())
                .map(Bytes::len)
                .sum();
            assert!(
                made <= length,
                "never more than declared: {made} > {length}"
            );
            let why = sent.broken().expect("why is kept");
            assert!(why.contains("were packed"), "{why}");
        }
        // A job gone from the store between packing and sending is no body either.
        let mut items = packed.items.clone();
        items.push(BatchItem {
            custom_id: "gone".to_owned(),
            job: i64::MAX,
            grader: None,
            spec_hash: None,
        });
        let (chunks, sent) = collect(&store, &items, &packed.verbatim, packed.bytes).await;
        assert!(chunks.last().unwrap().is_err());
        assert!(sent.broken().unwrap().contains("gone from the store"));
    }
}
