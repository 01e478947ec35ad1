//! The Message Batches endpoints (`{messages URL}/batches`): create, retrieve, list, cancel,
//! and the results file, read as a stream of lines so that a 100,000-request batch never sits
//! in memory whole. Each call is one attempt; retrying is the caller's business.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

use super::{AttemptError, Client, header_text};

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
    ) -> Result<T, AttemptError> {
        self.json_call(request, "the batch endpoint answered with something else")
            .await
    }

    fn batches_url(&self) -> String {
        format!("{}/batches", self.url.trim_end_matches('/'))
    }

    /// `POST …/batches` with a create body (`{"requests": […]}`).
    pub async fn create_batch(&self, body: Bytes) -> Result<MessageBatch, AttemptError> {
        let request = self.http.post(self.batches_url()).body(body);
        self.batch_call(request).await
    }

    /// `GET …/batches/{id}`.
    pub async fn retrieve_batch(&self, id: &str) -> Result<MessageBatch, AttemptError> {
        let request = self.http.get(format!("{}/{id}", self.batches_url()));
        self.batch_call(request).await
    }

    /// `POST …/batches/{id}/cancel`.
    pub async fn cancel_batch(&self, id: &str) -> Result<MessageBatch, AttemptError> {
        let request = self
            .http
            .post(format!("{}/{id}/cancel", self.batches_url()));
        self.batch_call(request).await
    }

    /// `GET …/batches?limit=…&after_id=…`: a page of the workspace's batches, newest first.
    pub async fn list_batches(
        &self,
        after_id: Option<&str>,
        limit: u32,
    ) -> Result<BatchPage, AttemptError> {
        let mut url = format!("{}?limit={limit}", self.batches_url());
        if let Some(after) = after_id {
            url.push_str("&after_id=");
            url.push_str(after);
        }
        self.batch_call(self.http.get(url)).await
    }

    /// The results file of an ended batch, line by line (each a JSON object), as it arrives;
    /// a connection that fails halfway ends the stream with what went wrong.
    pub async fn batch_results(
        &self,
        results_url: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, String>> + use<>, AttemptError> {
        let response = self
            .http
            .get(results_url)
            .headers(self.headers.clone())
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        if response.status().as_u16() != 200 {
            let request_id = header_text(response.headers(), "request-id");
            return Err(self.http_error(response, request_id).await);
        }
        let client = self.clone();
        let chunks = response
            .bytes_stream()
            .map(move |chunk| chunk.map_err(|e| client.transport_error(&e).to_string()));
        Ok(lines(chunks))
    }
}

/// Splits a stream of chunks into its non-empty lines (without their `\n` or `\r\n`).
pub fn lines<S, E>(chunks: S) -> impl Stream<Item = Result<Bytes, E>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    futures_util::stream::unfold(
        (chunks, Vec::<u8>::new(), false),
        |(mut chunks, mut pending, mut done)| async move {
            loop {
                if let Some(end) = memchr::memchr(b'\n', &pending) {
                    let mut line: Vec<u8> = pending.drain(..=end).collect();
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Some((Ok(Bytes::from(line)), (chunks, pending, done)));
                }
                if done {
                    if pending.iter().all(u8::is_ascii_whitespace) {
                        return None;
                    }
                    let line = Bytes::from(std::mem::take(&mut pending));
                    return Some((Ok(line), (chunks, pending, done)));
                }
                match chunks.next().await {
                    Some(Ok(chunk)) => pending.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(e), (chunks, pending, true))),
                    None => done = true,
                }
            }
        },
    )
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
        let got: Vec<Bytes> = lines(chunks).map(Result::unwrap).collect().await;
        assert_eq!(got, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
    }
}
