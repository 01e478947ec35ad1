//! `msgbatch view`: serves the store in a browser until Ctrl-C.

use std::net::SocketAddr;

use anyhow::Context;

use super::Global;
use crate::cli::ViewArgs;
use crate::view::Access;
use crate::{ExitStatus, Shutdown};

/// Connections to a PostgreSQL store the pages keep open: as many as its pool holds.
const PAGE_CONNECTIONS: u32 = 6;

pub async fn view(
    global: &Global,
    args: &ViewArgs,
    shutdown: Shutdown,
) -> anyhow::Result<ExitStatus> {
    // The pages' connections to a PostgreSQL server are opened before the first page and kept
    // open: opened while a page waits, each cost it a tenth of a second while the reports of
    // the finished runs are computed (the first runs page took half a second).
    let store = global.existing_store_keeping(PAGE_CONNECTIONS).await?;
    // Reports are computed on connections of their own: a report of a large run holds its
    // connections for seconds, and the pages must not wait for one behind it.
    let reports = global.store().await?;
    let address = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("failed to listen on {address}"))?;
    let address = listener.local_addr()?;
    // Beyond loopback the pages are open to the network: a token guards them, made up here
    // when none is given (and shown only in the URL printed below).
    let token = match (&args.token, address.ip().is_loopback()) {
        (Some(token), _) if token.trim().is_empty() => anyhow::bail!("--token is empty"),
        // It goes into a cookie and a query as it is: a `;`, a space or a `+` there would
        // make a browser (or the query's decoding) keep something else.
        (Some(token), _)
            if !token.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '/' | '=')
            }) =>
        {
            anyhow::bail!(
                "--token: use only letters, digits and `- . _ ~ / =` (it goes into a cookie \
                 and a URL as it is)"
            )
        }
        (Some(token), _) => Some(token.clone()),
        (None, true) => None,
        (None, false) => Some(crate::view::new_token().context("failed to make a token")?),
    };
    let shown_host = match address {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => crate::store::host_name(),
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    };
    let url = match &token {
        Some(token) if args.token.is_none() => {
            format!("http://{shown_host}:{}/?token={token}", address.port())
        }
        _ => format!("http://{shown_host}:{}/", address.port()),
    };
    let (router, data) = crate::view::router(store, reports, Access::for_address(address, token));
    crate::outln!("msgbatch view: {url}")?;
    crate::errln!("serving {} read-only (Ctrl-C to stop)", global.db);
    // Finished runs' reports are computed once, in the background, so that their pages open
    // at once.
    let warm = tokio::spawn(async move { data.warm().await });
    crate::view::serve(
        listener,
        router,
        shutdown.stop.clone(),
        crate::view::Limits::COMMAND,
    )
    .await
    .context("the server failed")?;
    warm.abort();
    Ok(ExitStatus::Success)
}
