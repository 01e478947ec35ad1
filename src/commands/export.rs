//! `msgbatch export`: one JSON line per (job, model, sample) in the Message Batches results
//! shape, with the sample's number (from 0) and whether every grader passed (`null` when
//! ungraded) beside `custom_id` and `model`.
//!
//! Succeeded jobs carry the Message exactly as stored. Failed jobs carry the API's error body
//! when the gateway sent one, else an error of the same shape; a batch item its batch ended
//! without processing is `canceled` or `expired`, as the API says. Rejected jobs are `errored`
//! with an `invalid_request_error`; jobs never finished are `canceled`.

use std::io::{BufWriter, Write};

use serde_json::{Value, json};

use super::Global;
use crate::ExitStatus;
use crate::output::AtomicFile;
use crate::store::{ExportRow, Store};

pub async fn export(global: &Global, args: &crate::cli::ExportArgs) -> anyhow::Result<ExitStatus> {
    let store = global.existing_store().await?;
    let run = store.find_run(&args.run).await?;
    let to_stdout = args.out.as_os_str() == "-";
    if to_stdout {
        let mut out = BufWriter::new(std::io::stdout().lock());
        write_rows(&store, run.id, &mut out, true).await?;
        out.flush()?;
        return Ok(ExitStatus::Success);
    }
    // Written under a temporary name and renamed into place once whole: an export stopped
    // half-way leaves no truncated file that looks complete.
    let mut out = AtomicFile::create(&args.out)?;
    let count = write_rows(&store, run.id, &mut out, false).await?;
    out.commit()?;
    crate::errln!("wrote {count} lines to {}", args.out.display());
    Ok(ExitStatus::Success)
}

/// Writes every row of `run` as a line to `out`, returning how many.
async fn write_rows(
    store: &Store,
    run: i64,
    out: &mut impl Write,
    to_stdout: bool,
) -> anyhow::Result<u64> {
    store
        .export_rows(run, |row| {
            let line = line(&row);
            // On standard output, C1 controls and bidirectional overrides a gateway or a job
            // file wrote are JSON escapes, which read back the same; a file keeps the bytes.
            let line = if to_stdout {
                crate::output::document(&line)
            } else {
                line.into()
            };
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
            Ok(())
        })
        .await
}

fn line(row: &ExportRow) -> String {
    let passed = match row.passed {
        Some(true) => "true",
        Some(false) => "false",
        None => "null",
    };
    let head = format!(
        "{{\"custom_id\":{},\"model\":{},\"sample\":{},\"passed\":{passed},\"result\":",
        Value::String(row.job_id.clone()),
        Value::String(row.model.clone()),
        row.sample
    );
    let result = match (row.state.as_str(), &row.response) {
        // The stored body is the gateway's JSON, byte for byte.
        ("succeeded", Some(response)) => match &row.note {
            None => format!("{{\"type\":\"succeeded\",\"message\":{response}}}"),
            // What the stream's rebuild could not apply, beside the message it leaves intact.
            Some(note) => format!(
                "{{\"type\":\"succeeded\",\"message\":{response},\"note\":{}}}",
                Value::String(note.clone())
            ),
        },
        // A batch item the batch ended without processing, as the Batches API says it.
        ("failed", _)
            if row.last_kind.as_deref() == Some("batch")
                && matches!(row.last_error_type.as_deref(), Some("canceled" | "expired")) =>
        {
            json!({ "type": row.last_error_type }).to_string()
        }
        ("failed", _) => {
            let error = row
                .last_error_body
                .as_deref()
                .and_then(|b| serde_json::from_str::<Value>(b).ok())
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("error"))
                .unwrap_or_else(|| {
                    json!({"type": "error", "error": {
                        "type": row.last_error_type.as_deref().unwrap_or("api_error"),
                        "message": row.error.as_deref().unwrap_or(""),
                    }})
                });
            json!({"type": "errored", "error": error}).to_string()
        }
        ("rejected", _) => json!({"type": "errored", "error": {"type": "error", "error": {
            "type": "invalid_request_error",
            "message": format!("rejected before sending: {}", row.error.as_deref().unwrap_or("")),
        }}})
        .to_string(),
        _ => json!({"type": "canceled"}).to_string(),
    };
    format!("{head}{result}}}")
}
