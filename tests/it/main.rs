//! Integration tests: the real binary and library against the in-process mock gateway on
//! `127.0.0.1:0`, with a real SQLite file in a temporary directory.

mod batches;
mod batches_calls;
mod batches_judges;
mod bounded_input;
mod budget;
mod common;
mod conventions;
mod deadline;
mod diff;
mod durable;
mod files;
mod first_evening;
mod grade;
mod hostile_gateway;
mod hostile_text;
mod input;
mod limits;
mod limits_key;
mod postgres;
mod prices;
mod repeat;
mod report;
mod resume;
mod retry;
mod run;
mod sdk;
mod security;
mod stream;
mod test_command;
mod view;
mod warmup;
