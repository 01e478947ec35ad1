//! The routes: each page at its own URL and its data as JSON under `/api/`, both from one
//! data function; the assets built into the binary; the guard and headers around them all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use maud::Markup;
use tokio_util::sync::CancellationToken;

use super::data::{Data, JobsAt, PAGE, ViewError};
use super::pages;
use super::security::{self, Access};
use crate::store::Store;
use crate::store::view::{Cursor, JobFilter, JobSort, MAX_PAGE, MAX_STEPPED, Outcome};

type Shared = State<Arc<Data>>;

impl IntoResponse for ViewError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Internal(e) => {
                crate::errln!("view: {e:#}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, pages::error(status, &format!("{:#}", self))).into_response()
    }
}

/// A JSON error, for the API's routes.
struct ApiError(ViewError);

impl From<ViewError> for ApiError {
    fn from(error: ViewError) -> Self {
        Self(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            ViewError::NotFound(_) => StatusCode::NOT_FOUND,
            ViewError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ViewError::Internal(e) => {
                crate::errln!("view: {e:#}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (
            status,
            Json(serde_json::json!({ "error": format!("{:#}", self.0) })),
        )
            .into_response()
    }
}

type Page = Result<Markup, ViewError>;
type Api<T> = Result<Json<T>, ApiError>;

/// How long a client has to send a request's headers, from the moment the server waits for
/// them (on a new connection, or a kept-alive one between requests): a client that opens a
/// connection and sends nothing, or a byte at a time, is then disconnected rather than holding
/// the connection (and its task) for as long as it likes.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections the command's server holds open at once: one beyond them is closed as soon as
/// it is accepted, unread, until one of those open ends (a kept-alive connection ends once
/// idle for [`HEADER_READ_TIMEOUT`]). A browser opens a few per server.
pub const MAX_CONNECTIONS: usize = 128;

/// Requests answered at once (each reads the store): one beyond them is answered 503 with
/// `Retry-After: 1` at once, rather than queued behind them.
pub const MAX_REQUESTS: usize = 32;

/// What a server holds at most, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a client has to send a request's headers ([`HEADER_READ_TIMEOUT`]).
    pub header_read_timeout: Duration,
    /// Connections open at once ([`MAX_CONNECTIONS`]).
    pub connections: usize,
}

impl Limits {
    /// The command's.
    pub const COMMAND: Self = Self {
        header_read_timeout: HEADER_READ_TIMEOUT,
        connections: MAX_CONNECTIONS,
    };
}

/// `routes` guarded by `access` and wrapped in what every answer passes through: a handler's
/// panic becomes a 500 page (with the headers of every page) rather than a dropped
/// connection, no more than `requests` requests past the guard are answered at once (the
/// others are answered 503), and the security headers are set on everything.
pub fn guarded(routes: Router, access: Access, requests: usize) -> Router {
    routes
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(tokio::sync::Semaphore::new(requests)),
            one_of_few,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(access),
            security::guard,
        ))
        .layer(axum::middleware::from_fn(security::headers))
}

/// Answers a request while fewer than the semaphore's permits are being answered, and 503
/// otherwise.
async fn one_of_few(
    State(answering): State<Arc<tokio::sync::Semaphore>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_answering) = answering.try_acquire_owned() else {
        let status = StatusCode::SERVICE_UNAVAILABLE;
        return (
            status,
            [(header::RETRY_AFTER, "1")],
            pages::error(
                status,
                "The server is answering as many requests as it answers at once: try again \
                 in a moment.",
            ),
        )
            .into_response();
    };
    next.run(request).await
}

/// The answer to a request whose handler panicked: the panic goes to the server's log, the
/// client is told of a failure and no more.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("no message");
    crate::errln!("view: a page failed: {message}");
    let status = StatusCode::INTERNAL_SERVER_ERROR;
    (
        status,
        pages::error(
            status,
            "This page failed on the server (a bug); its log says why.",
        ),
    )
        .into_response()
}

/// The app over `store`, guarded by `access`; its reports are computed over `reports` (the
/// same store, on connections of their own).
pub fn router(store: Store, reports: Store, access: Access) -> (Router, Arc<DataHandle>) {
    let data = Arc::new(Data::new(store, reports));
    let router = Router::new()
        .route("/", get(runs_page))
        .route("/runs/{run}", get(run_page))
        .route("/runs/{run}/jobs", get(jobs_page))
        .route("/runs/{run}/jobs/{job}", get(job_page))
        .route("/runs/{run}/models", get(models_page))
        .route("/runs/{run}/charts/{chart}", get(chart))
        .route("/diff/{a}/{b}", get(diff_page))
        .route("/api/runs", get(runs_api))
        .route("/api/runs/{run}", get(run_api))
        .route("/api/runs/{run}/jobs", get(jobs_api))
        .route("/api/runs/{run}/jobs/{job}", get(job_api))
        .route("/api/runs/{run}/models", get(models_api))
        .route("/api/diff/{a}/{b}", get(diff_api))
        .route("/assets/view.css", get(css))
        .route("/assets/view.js", get(js))
        .fallback(not_found)
        .with_state(data.clone());
    (
        guarded(router, access, MAX_REQUESTS),
        Arc::new(DataHandle(data)),
    )
}

/// What the command keeps of the app: a way to compute the reports of finished runs ahead.
pub struct DataHandle(Arc<Data>);

impl DataHandle {
    pub async fn warm(&self) {
        self.0.warm().await;
    }
}

/// Serves `router` on `listener` until `stop` is cancelled; requests under way finish. A
/// connection is closed when its request's headers take longer than the limits'
/// `header_read_timeout`, and one accepted while `connections` are open is closed at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: CancellationToken,
    limits: Limits,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connections = GracefulShutdown::new();
    let open = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    // Said once each time the server is full, not for every connection closed meanwhile.
    let mut full = false;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // A client that went away before it was accepted: nothing to do.
            Err(e) if is_connection_error(&e) => continue,
            // Out of file descriptors or the like: wait a little for some to be freed, as
            // axum's own server does, rather than spin.
            Err(e) => {
                crate::errln!("view: failed to accept a connection: {e}");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        // A connection beyond the limit is closed unread: it holds nothing, whatever its
        // client does next.
        let Ok(held) = Arc::clone(&open).try_acquire_owned() else {
            if !full {
                crate::errln!(
                    "view: {} connections open; closing new ones until some end",
                    limits.connections
                );
                full = true;
            }
            drop(stream);
            continue;
        };
        full = false;
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let connection = connections.watch(connection);
        // An error here is the client's (gone, too slow, or not speaking HTTP).
        tokio::spawn(async move {
            let _ = connection.await;
            drop(held);
        });
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}

async fn not_found() -> ViewError {
    ViewError::NotFound("no such page".to_owned())
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("assets/view.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("assets/view.js"),
    )
}

async fn runs_page(State(data): Shared) -> Page {
    Ok(pages::runs(&data.runs().await?))
}

async fn runs_api(State(data): Shared) -> Api<serde_json::Value> {
    Ok(Json(serde_json::json!({ "runs": data.runs().await? })))
}

async fn run_page(State(data): Shared, Path(run): Path<String>) -> Page {
    Ok(pages::run(&data.run_page(&run).await?))
}

async fn run_api(State(data): Shared, Path(run): Path<String>) -> Api<super::data::RunPage> {
    Ok(Json(data.run_page(&run).await?))
}

/// One of a run's report charts, as an SVG image (an image runs no script).
async fn chart(
    State(data): Shared,
    Path((run, chart)): Path<(String, String)>,
) -> Result<Response, ViewError> {
    let index = match chart.as_str() {
        "latency.svg" => 0,
        "cost.svg" => 1,
        "stop.svg" => 2,
        "spend.svg" => 3,
        _ => return Err(ViewError::NotFound("no such chart".to_owned())),
    };
    let run = data.find_run(&run).await?;
    let (_, report) = data.report(&run, Some(super::data::REPORT_WAIT)).await?;
    let Some(report) = report else {
        return Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "2")],
            "the run's report is being computed",
        )
            .into_response());
    };
    let mut charts = crate::report::charts(&report)?;
    let svg = charts.swap_remove(index);
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

/// The longest value, in characters, a filter of the job list takes: a text search reads
/// every request and answer of its stretch of rows, and a longer pattern only costs more.
pub const MAX_FILTER_CHARS: usize = 1_000;

/// The last page the job list goes to: its offset stays far inside an `i64` (a page that far
/// holds no jobs anyway).
pub const MAX_PAGE_NUMBER: i64 = 1_000_000_000;

/// What the job list's query asks for: which jobs, which page of them, how many a page, and
/// where a text search goes on from.
struct JobQuery {
    filter: JobFilter,
    at: JobsAt,
    /// The page number a cursor's link carries.
    numbered: Option<i64>,
    per_page: i64,
    from: Option<i64>,
}

/// The job list's query: every field optional, an empty one (as a form sends it) unset.
/// A value longer than [`MAX_FILTER_CHARS`] or holding a NUL, a page past
/// [`MAX_PAGE_NUMBER`], or a cursor (`after`, `before`) that is not one of the list's order,
/// is refused naming its field.
fn job_query(query: &HashMap<String, String>) -> Result<JobQuery, ViewError> {
    for (name, value) in query {
        if value.chars().count() > MAX_FILTER_CHARS {
            return Err(ViewError::BadRequest(format!(
                "{name}: longer than {MAX_FILTER_CHARS} characters"
            )));
        }
        if value.contains('\0') {
            return Err(ViewError::BadRequest(format!(
                "{name}: holds a NUL character"
            )));
        }
    }
    let get = |name: &str| {
        query
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let number = |name: &str, default: i64| -> Result<i64, ViewError> {
        get(name).map_or(Ok(default), |v| {
            v.parse::<i64>()
                .map_err(|_| ViewError::BadRequest(format!("{name}: `{v}` is not a number")))
        })
    };
    let page = number("page", 1)?;
    if page > MAX_PAGE_NUMBER {
        return Err(ViewError::BadRequest(format!(
            "page: `{page}` is past the last page there can be ({MAX_PAGE_NUMBER})"
        )));
    }
    let outcome = get("outcome")
        .map(|v| {
            Outcome::parse(&v).ok_or_else(|| {
                ViewError::BadRequest(format!(
                    "outcome: `{v}` is not one of {}",
                    Outcome::ALL.map(Outcome::as_str).join(", ")
                ))
            })
        })
        .transpose()?;
    let sort = get("sort")
        .map(|v| {
            JobSort::ALL
                .into_iter()
                .find(|s| s.as_str() == v)
                .ok_or_else(|| {
                    ViewError::BadRequest(format!(
                        "sort: `{v}` is not one of {}",
                        JobSort::ALL.map(JobSort::as_str).join(", ")
                    ))
                })
        })
        .transpose()?
        .unwrap_or_default();
    let filter = JobFilter {
        model: get("model"),
        outcome,
        grader: get("grader"),
        stop_reason: get("stop_reason"),
        tag: get("tag"),
        text: get("q"),
        job_id: get("job_id"),
        sort,
    };
    let from = get("from").map(|_| number("from", 0)).transpose()?;
    let cursor = |name: &str| {
        get(name)
            .map(|v| {
                Cursor::parse(&v, sort).map_err(|e| ViewError::BadRequest(format!("{name}: {e}")))
            })
            .transpose()
    };
    let (at, numbered) = match (cursor("after")?, cursor("before")?) {
        (Some(_), Some(_)) => {
            return Err(ViewError::BadRequest(
                "after, before: a page is past one cursor, not two".to_owned(),
            ));
        }
        // A cursor's link carries its page's number (none before the first, nor after it
        // when a page lies before).
        (Some(after), None) if page > 1 || get("page").is_none() => {
            (JobsAt::After(after), get("page").map(|_| page))
        }
        (None, Some(before)) if page >= 1 => (JobsAt::Before(before), get("page").map(|_| page)),
        (Some(_), None) => {
            return Err(ViewError::BadRequest(format!(
                "page: `{page}` cannot follow a job (after=); the first page is 1"
            )));
        }
        (None, Some(_)) => {
            return Err(ViewError::BadRequest(format!(
                "page: `{page}` is before the first page, 1"
            )));
        }
        (None, None) => (JobsAt::Page(page), None),
    };
    Ok(JobQuery {
        filter,
        at,
        numbered,
        per_page: number("per_page", PAGE)?,
        from,
    })
}

async fn jobs_page(
    State(data): Shared,
    Path(run): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Page {
    Ok(pages::jobs(&jobs_of(&data, &run, &query).await?))
}

async fn jobs_api(
    State(data): Shared,
    Path(run): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Api<super::data::JobsPage> {
    Ok(Json(jobs_of(&data, &run, &query).await?))
}

/// The page of a run's jobs `query` asks for.
async fn jobs_of(
    data: &Arc<Data>,
    run: &str,
    query: &HashMap<String, String>,
) -> Result<super::data::JobsPage, ViewError> {
    let q = job_query(query)?;
    if let JobsAt::Page(page) = q.at {
        within_reach(data, run, &q.filter, page, q.per_page).await?;
    }
    data.jobs_page(run, q.filter, q.at, q.numbered, q.per_page, q.from)
        .await
}

/// Refuses a page asked for by its number that lies further into its list than a page is
/// read past ([`MAX_STEPPED`] jobs, from the nearer end of a list whose length is known) when
/// the list is not found by a seek: such a page would read every job before it, and the
/// pages' links reach it at once.
async fn within_reach(
    data: &Arc<Data>,
    run: &str,
    filter: &JobFilter,
    page: i64,
    per_page: i64,
) -> Result<(), ViewError> {
    // As the list reads its page.
    let per_page = per_page.clamp(1, MAX_PAGE);
    let offset = (page.max(1) - 1).saturating_mul(per_page);
    // A page no further in than that is read at once, whatever the list: no need to look.
    if offset <= MAX_STEPPED {
        return Ok(());
    }
    let run = data.find_run(run).await?;
    let tally = data.store.run_tally(run.id).await?;
    let stepped = tally.stepped(filter, offset, per_page);
    if stepped <= MAX_STEPPED {
        return Ok(());
    }
    let reach = MAX_STEPPED / per_page + 1;
    Err(ViewError::BadRequest(format!(
        "page: {stepped} jobs would be read one by one to reach page {page} of this list, \
         which no index finds by its number; such a page is found by number no further than \
         {MAX_STEPPED} jobs from an end of the list (page {reach} at {per_page} a page, or as \
         near its end when its length is known). Follow the pages' next and previous links \
         instead, which find a page wherever it lies, or narrow the filter"
    )))
}

fn job_id(job: &str) -> Result<i64, ViewError> {
    job.parse()
        .map_err(|_| ViewError::NotFound(format!("no job `{job}`")))
}

async fn job_page(State(data): Shared, Path((run, job)): Path<(String, String)>) -> Page {
    Ok(pages::job(&data.job_page(&run, job_id(&job)?).await?))
}

async fn job_api(
    State(data): Shared,
    Path((run, job)): Path<(String, String)>,
) -> Api<super::data::JobPage> {
    Ok(Json(data.job_page(&run, job_id(&job)?).await?))
}

/// The page asked for (`page`, `per_page`, as the job list takes them), or the field that
/// is wrong.
fn page_query(query: &HashMap<String, String>) -> Result<(i64, i64), ViewError> {
    let number = |name: &str, default: i64| -> Result<i64, ViewError> {
        query
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map_or(Ok(default), |v| {
                v.parse::<i64>()
                    .map_err(|_| ViewError::BadRequest(format!("{name}: `{v}` is not a number")))
            })
    };
    let page = number("page", 1)?;
    if page > MAX_PAGE_NUMBER {
        return Err(ViewError::BadRequest(format!(
            "page: `{page}` is past the last page there can be ({MAX_PAGE_NUMBER})"
        )));
    }
    Ok((page, number("per_page", PAGE)?))
}

/// A diff's query: the changed jobs of a change, a model, an outcome (either side's); and
/// the page.
fn diff_query(
    query: &HashMap<String, String>,
) -> Result<(impl Fn(crate::diff::RowKey<'_>) -> bool + use<>, i64, i64), ViewError> {
    let (page, per_page) = page_query(query)?;
    let get = |name: &str| {
        query
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let (change, model, outcome) = (get("change"), get("model"), get("outcome"));
    let keep = move |row: crate::diff::RowKey<'_>| {
        change.as_deref().is_none_or(|c| {
            serde_json::to_value(row.change).ok() == Some(serde_json::Value::from(c))
        }) && model.as_deref().is_none_or(|m| row.model == m)
            && outcome.as_deref().is_none_or(|o| {
                [row.before, row.after]
                    .iter()
                    .any(|side| side.is_some_and(|s| s.as_str() == o))
            })
    };
    Ok((keep, page, per_page))
}

async fn diff_page(
    State(data): Shared,
    Path((a, b)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Page {
    let (keep, page, per_page) = diff_query(&query)?;
    let (before, after) = (data.find_run(&a).await?, data.find_run(&b).await?);
    let diff = data.diff(&before, &after, keep, page, per_page).await?;
    Ok(pages::diff(&diff, &before, &after, &query))
}

async fn diff_api(
    State(data): Shared,
    Path((a, b)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Api<super::data::DiffPage> {
    let (keep, page, per_page) = diff_query(&query)?;
    let (before, after) = (data.find_run(&a).await?, data.find_run(&b).await?);
    Ok(Json(
        data.diff(&before, &after, keep, page, per_page).await?,
    ))
}

/// A model comparison's query: `disagree` (any value) keeps the jobs where the models
/// disagree, `outcome` those where some model's cell has it (one `diff` names); `page` and
/// `per_page` as for the job list.
fn models_query(
    query: &HashMap<String, String>,
) -> Result<(impl Fn(crate::diff::Flags) -> bool + use<>, i64, i64), ViewError> {
    let (page, per_page) = page_query(query)?;
    let get = |name: &str| query.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let disagree = get("disagree").is_some();
    // An outcome no cell can have keeps no job.
    let outcome = get("outcome").map(crate::diff::Outcome::parse);
    let keep = move |flags: crate::diff::Flags| {
        (!disagree || flags.disagree) && outcome.is_none_or(|o| o.is_some_and(|o| flags.has(o)))
    };
    Ok((keep, page, per_page))
}

async fn models_page(
    State(data): Shared,
    Path(run): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Page {
    let (keep, page, per_page) = models_query(&query)?;
    let run = data.find_run(&run).await?;
    let models = data.models(&run, keep, page, per_page).await?;
    Ok(pages::models(&models, &run, &query))
}

async fn models_api(
    State(data): Shared,
    Path(run): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Api<super::data::ModelsPage> {
    let (keep, page, per_page) = models_query(&query)?;
    let run = data.find_run(&run).await?;
    Ok(Json(data.models(&run, keep, page, per_page).await?))
}
