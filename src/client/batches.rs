//! The Message Batches endpoints (`{messages URL}/batches`): create, retrieve, list, cancel,
//! and the results file, read as a stream of lines so that a 100,000-request batch never sits
//! in memory whole. Each call is one attempt, given back with what its answer's headers said
//! ([`Called`]); pacing, retrying and recording it are the caller's business.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

use std::sync::atomic::Ordering;

use super::{AttemptError, Called, Client, rate_limit_hint};

/// A Message Batch as the API describes it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct MessageBatch {
    pub id: String,
    /// `in_progress`, `canceling` or `ended`.
    pub processing_status: String,
    #[serde(default)]
    pub request_counts: RequestCounts,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub results_url: Option<String>,
}

impl MessageBatch {
    pub fn ended(&self) -> bool {
        self.processing_status == "ended"
    }
}

/// A batch's requests by how they stand; the counts other than `processing` stay zero until
/// the batch ends.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    #[serde(default)]
    pub processing: u64,
    #[serde(default)]
    pub succeeded: u64,
    #[serde(default)]
    pub errored: u64,
    #[serde(default)]
    pub canceled: u64,
    #[serde(default)]
    pub expired: u64,
}

impl RequestCounts {
    pub fn total(&self) -> u64 {
        self.processing + self.succeeded + self.errored + self.canceled + self.expired
    }
}

/// One page of `GET …/batches`, newest first.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchPage {
    pub data: Vec<MessageBatch>,
    #[serde(default)]
    pub has_more: bool,
    #[serde(default)]
    pub last_id: Option<String>,
}

impl Client {
    /// The longest silence allowed inside a streamed answer, or a results download.
    pub fn stream_idle_timeout(&self) -> std::time::Duration {
        self.timeouts.stream_idle
    }

    /// A batch endpoint's call: its answer is a JSON document of type `T`.
    async fn batch_call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Called<T> {
        self.json_exchange(request, "the batch endpoint answered with something else")
            .await
    }

    /// `…/batches`, or `…/batches/{id}{tail}` for one batch, with the messages URL's query
    /// kept. The id is the gateway's: it is escaped as one path segment, so that it cannot
    /// reach another path (`../..`) nor change the query.
    fn batches_url(&self, id: Option<&str>, tail: &str) -> String {
        match id {
            None => self.under("batches"),
            Some(id) => self.under(&format!("batches/{}{tail}", path_segment(id))),
        }
    }

    /// `POST …/batches` with a create body (`{"requests": […]}`) of exactly `length` bytes,
    /// sent as `chunks` yields it: the body never has to be in memory whole. Its length is
    /// declared, so a stream that yields fewer or more bytes fails the call rather than send
    /// another body.
    pub async fn create_batch<S>(&self, length: u64, chunks: S) -> Called<MessageBatch>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let request = self
            .http
            .post(self.batches_url(None, ""))
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(chunks));
        self.batch_call(request).await
    }

    /// `GET …/batches/{id}`.
    pub async fn retrieve_batch(&self, id: &str) -> Called<MessageBatch> {
        let request = self.http.get(self.batches_url(Some(id), ""));
        self.batch_call(request).await
    }

    /// `POST …/batches/{id}/cancel`.
    pub async fn cancel_batch(&self, id: &str) -> Called<MessageBatch> {
        let request = self.http.post(self.batches_url(Some(id), "/cancel"));
        self.batch_call(request).await
    }

    /// `GET …/batches?limit=…&after_id=…`: a page of the workspace's batches, newest first.
    pub async fn list_batches(&self, after_id: Option<&str>, limit: u32) -> Called<BatchPage> {
        let mut url = self.batches_url(None, "");
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("limit={limit}"));
        if let Some(after) = after_id {
            // The gateway's id, escaped so that it stays one value of one parameter.
            url.push_str("&after_id=");
            url.push_str(&escaped(after));
        }
        self.batch_call(self.http.get(url)).await
    }

    /// The results file of an ended batch, line by line (each a JSON object), as it arrives;
    /// a connection that fails halfway, or a line longer than the bound of an answer, ends
    /// the stream with what went wrong.
    ///
    /// The file is always read from the base URL's origin: a `results_url` elsewhere is read
    /// there with the same path and query, and [`ResultsFile::note`] says so the first time,
    /// so that the key and the extra headers go nowhere else.
    pub async fn batch_results(&self, results_url: &str) -> Called<ResultsFile> {
        let (url, note) = match self.on_base_origin(results_url) {
            Ok(moved) => moved,
            Err(message) => {
                return Called::unanswered(AttemptError::InvalidResponse {
                    message,
                    body: None,
                    request_id: None,
                });
            }
        };
        // The download itself may take long (each stall is bounded by the caller), but the
        // answer's head, or an error answer, must come within the attempt's time limit: a
        // gateway that never answers would hold the run for ever.
        let limit = self.timeouts.total;
        let sent = self.http.get(url).headers(self.headers.clone()).send();
        let response = match tokio::time::timeout(limit, sent).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Called::unanswered(self.scrub_error(self.transport_error(e))),
            Err(_) => return Called::unanswered(AttemptError::Timeout(limit)),
        };
        let request_id = self.request_id(response.headers());
        let rate_limit = rate_limit_hint(response.headers());
        if response.status().as_u16() != 200 {
            let error = tokio::time::timeout(limit, self.http_error(response, request_id.clone()))
                .await
                .unwrap_or(AttemptError::Timeout(limit));
            return Called {
                result: Err(self.scrub_error(error)),
                rate_limit,
                request_id,
            };
        }
        let client = self.clone();
        let chunks = response.bytes_stream().map(move |chunk| {
            chunk.map_err(|e| client.scrub_error(client.transport_error(e)).to_string())
        });
        // A line holds one result, whose message is bounded like a direct answer, and the
        // few fields around it.
        let max_line =
            usize::try_from(self.max_answer_bytes.saturating_add(64 * 1024)).unwrap_or(usize::MAX);
        // Each line as stored: with nothing the gateway echoed of the key in it.
        let client = self.clone();
        let lines = lines(chunks, max_line)
            .map(move |line| line.map(|l| client.scrub_json(&l).unwrap_or(l)));
        Called {
            result: Ok(ResultsFile {
                note,
                lines: Box::pin(lines),
            }),
            rate_limit,
            request_id,
        }
    }

    /// `url` (absolute, or relative to the messages URL) moved to the base URL's origin, and
    /// a note for the user the first time one had to be moved.
    fn on_base_origin(&self, url: &str) -> Result<(String, Option<String>), String> {
        let base = reqwest::Url::parse(&self.url)
            .map_err(|e| format!("the messages URL is not a URL: {e}"))?;
        let target = base
            .join(url)
            .map_err(|e| format!("the batch's results_url is not a URL: {e}"))?;
        if target.origin() == base.origin() {
            return Ok((target.to_string(), None));
        }
        let mut moved = base.clone();
        moved.set_path(target.path());
        moved.set_query(target.query());
        moved.set_fragment(None);
        let first = !self.results_origin_noted.swap(true, Ordering::Relaxed);
        let note = first.then(|| {
            let origin = target.origin();
            let origin = if origin.is_tuple() {
                origin.ascii_serialization()
            } else {
                format!("{}:", target.scheme())
            };
            let origin: String = origin.chars().filter(|c| !c.is_control()).take(200).collect();
            self.scrub(format!(
                "the gateway gave a results_url on another origin ({origin}); batch results are read from the base URL's origin with the same path instead, so that the key goes nowhere else"
            ))
        });
        Ok((moved.to_string(), note))
    }
}

/// A batch id as one path segment: [`escaped`], and `.` and `..` lose their meaning.
fn path_segment(id: &str) -> String {
    if id == "." || id == ".." {
        return id.replace('.', "%2E");
    }
    escaped(id)
}

/// `text` with what is not a letter, a digit, `-`, `_`, `.` or `~` percent-escaped: one path
/// segment, or one query value.
fn escaped(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A batch's results file as it arrives.
pub struct ResultsFile {
    /// Something the user should be told once (a `results_url` moved to the base origin).
    pub note: Option<String>,
    pub lines: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>,
}

/// Splits a stream of chunks into its non-empty lines (without their `\n` or `\r\n`); a line
/// longer than `max_line` bytes ends the stream with an error, so memory stays bounded.
pub fn lines<S, E>(chunks: S, max_line: usize) -> impl Stream<Item = Result<Bytes, String>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    futures_util::stream::unfold(
        (chunks, Splitter::new(max_line), false),
        |(mut chunks, mut splitter, ended)| async move {
            if ended {
                return None;
            }
            loop {
                if let Some(line) = splitter.line() {
                    let failed = line.is_err();
                    return Some((line, (chunks, splitter, failed)));
                }
                match chunks.next().await {
                    Some(Ok(chunk)) => splitter.push(&chunk),
                    Some(Err(e)) => return Some((Err(e.to_string()), (chunks, splitter, true))),
                    None => {
                        return splitter
                            .rest()
                            .map(|line| (Ok(line), (chunks, splitter, true)));
                    }
                }
            }
        },
    )
}

/// The bytes of a stream not yet given out as lines.
struct Splitter {
    pending: Vec<u8>,
    /// Where in `pending` the next line starts: the lines before it are dropped only when
    /// more bytes arrive, so that a chunk of many lines is moved once, not once per line.
    start: usize,
    /// Up to where `pending` is known to hold no `\n`: each byte is looked at once.
    scanned: usize,
    max_line: usize,
    /// Bytes moved to drop lines already given out, for the test that it is linear.
    #[cfg(test)]
    moved: usize,
}

impl Splitter {
    fn new(max_line: usize) -> Self {
        Self {
            pending: Vec::new(),
            start: 0,
            scanned: 0,
            max_line,
            #[cfg(test)]
            moved: 0,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        #[cfg(test)]
        {
            self.moved += self.pending.len() - self.start;
        }
        self.pending.drain(..self.start);
        self.scanned -= self.start;
        self.start = 0;
        self.pending.extend_from_slice(chunk);
    }

    /// The next non-empty line, or the error of one past the bound; `None` when more bytes
    /// are needed.
    fn line(&mut self) -> Option<Result<Bytes, String>> {
        loop {
            let found =
                memchr::memchr(b'\n', &self.pending[self.scanned..]).map(|at| self.scanned + at);
            if found.unwrap_or(self.pending.len()) - self.start > self.max_line {
                *self = Self::new(self.max_line);
                return Some(Err(format!(
                    "a line of the results is longer than {} bytes",
                    self.max_line
                )));
            }
            let Some(end) = found else {
                self.scanned = self.pending.len();
                return None;
            };
            let mut line = &self.pending[self.start..end];
            self.start = end + 1;
            self.scanned = self.start;
            if let Some(without) = line.strip_suffix(b"\r") {
                line = without;
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Some(Ok(Bytes::copy_from_slice(line)));
            }
        }
    }

    /// The last line, once the stream has ended without a `\n` after it.
    fn rest(&mut self) -> Option<Bytes> {
        let rest = &self.pending[self.start..];
        let line =
            (!rest.iter().all(u8::is_ascii_whitespace)).then(|| Bytes::copy_from_slice(rest));
        *self = Self::new(self.max_line);
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_across_chunks_whatever_their_ends() {
        let chunks = futures_util::stream::iter(
            ["{\"a\":1}\n{\"b\"", ":2}\r\n\n", "{\"c\":3}"]
                .map(|c| Ok::<_, std::convert::Infallible>(Bytes::from(c))),
        );
        let got: Vec<Bytes> = lines(chunks, 100).map(Result::unwrap).collect().await;
        assert_eq!(got, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
    }

    #[tokio::test]
    async fn a_line_past_the_bound_ends_the_stream_with_an_error() {
        let chunks = futures_util::stream::iter(
            [
                "{\"a\":1}\n",
                "0123456789",
                "0123456789",
                "0123456789\n{}\n",
            ]
            .map(|c| Ok::<_, std::convert::Infallible>(Bytes::from(c))),
        );
        let got: Vec<Result<Bytes, String>> = lines(chunks, 25).collect().await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].as_deref(), Ok(&b"{\"a\":1}"[..]));
        assert!(
            got[1]
                .as_ref()
                .unwrap_err()
                .contains("longer than 25 bytes")
        );
    }

    #[test]
    fn a_chunk_of_many_lines_is_moved_once_not_once_per_line() {
        let mut splitter = Splitter::new(1_000);
        let mut chunk = "{}".to_owned();
        chunk.push_str(&"\n".repeat(200_000));
        chunk.push_str(&"{}\r\n".repeat(20_000));
        chunk.push_str("{\"cut\":");
        let mut lines = 0;
        for _ in 0..3 {
            splitter.push(chunk.as_bytes());
            while let Some(line) = splitter.line() {
                let line = line.unwrap();
                assert!(line == "{}" || line == "{\"cut\":{}", "{line:?}");
                lines += 1;
            }
        }
        assert_eq!(lines, 3 * 20_001);
        // Only the cut line's bytes are kept from one chunk to the next.
        assert!(
            splitter.moved <= 2 * "{\"cut\":".len(),
            "{} bytes moved",
            splitter.moved
        );
        assert_eq!(splitter.rest().as_deref(), Some(&b"{\"cut\":"[..]));
    }
}
