//! A session of a run: send what is pending, judge it, and record how the session ended.
//!
//! The direct way ([`direct`], `POST /v1/messages` job by job) and the batch way
//! ([`batches`], the Message Batches API) are siblings over what they share: the session
//! that chooses between them and records the run's status, the rows of a file
//! stored while they are sent ([`feed`]), the `--max-cost` budget ([`budget`]), the step from
//! an answer to its result row ([`outcome`]), the progress bar ([`progress`]) and how a
//! command is stopped ([`shutdown`]).

pub mod batches;
pub mod budget;
pub mod deadline;
pub mod direct;
pub mod feed;
pub mod outcome;
pub mod progress;
pub mod session;
pub mod shutdown;

pub use shutdown::{Shutdown, Signal};
