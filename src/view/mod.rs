//! `msgbatch view`: the store in a browser. Pages for the runs, a run's report, its jobs and
//! one job, and the diffs, each a thin template over a data function whose result is also
//! served as JSON under `/api/`.
//!
//! Read-only, and careful with what it serves: every value goes through a template that
//! escapes it, every response carries a strict Content-Security-Policy (scripts and styles
//! come only from this server, as assets built into the binary), a loopback server refuses
//! requests for other host names (DNS rebinding), and a server bound elsewhere asks for a
//! token.

mod data;
mod kept;
mod pages;
mod security;
mod server;

pub use security::{Access, CONTENT_SECURITY_POLICY, new_token};
pub use server::{
    HEADER_READ_TIMEOUT, Limits, MAX_CONNECTIONS, MAX_REQUESTS, guarded, router, serve,
};
