//! Job files as other tools make them: Windows line endings, compressed datasets, tables
//! saved with another separator.

use std::io::Write;
use std::process::Stdio;

use msgbatch::mock::MockConfig;
use serde_json::json;
use sqlx::Row;
use tokio::io::AsyncWriteExt;

use crate::common::*;

fn jsonl(count: usize) -> String {
    (0..count)
        .map(|i| {
            json!({"custom_id": format!("j{i}"), "params": {"model": "claude-haiku-4-5",
                "max_tokens": 50, "messages": [{"role": "user", "content": format!("q{i}")}]}})
            .to_string()
                + "\n"
        })
        .collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    msgbatch::jobs::sha256_hex(bytes)
}

async fn stored_input(ws: &Workspace) -> (String, String) {
    let pool = ws.pool().await;
    let row = sqlx::query("SELECT input_sha256, input_format FROM runs ORDER BY id DESC LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_spreadsheet_csv_with_windows_line_endings_names_the_right_lines() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    ws.write(
        "sheet.csv",
        "id,prompt,model,max_tokens\r\na,first,m,lots\r\nb,\"two\r\nlines\",m,5\r\nc,third,m,\r\nd,fourth,m,5,extra\r\n",
    );
    let output = ws
        .run_on(&mock, &["run", "sheet.csv", "--max-tokens", "9"])
        .await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(stderr.contains("sheet.csv:2: `max_tokens`"), "{stderr}");
    assert!(
        stderr.contains("sheet.csv:6: row has 5 columns"),
        "{stderr}"
    );
    assert!(stderr.contains("2 bad records"), "{stderr}");
    assert_eq!(mock.requests(), 0);
}

#[tokio::test]
async fn compressed_files_of_every_format_run_whole_and_keep_the_hash_of_the_file_given() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let plain = jsonl(30);
    let csv = "id,prompt\nc1,one\nc2,two\nc3,\"multi\nline\"\n";
    let tsv = "id\tprompt\nt1\tone\nt2\ttwo\n";
    let cases: Vec<(&str, Vec<u8>, u64, &str)> = vec![
        ("a.jsonl.gz", gzip(plain.as_bytes()), 30, "JSONL, gzip"),
        (
            "b.jsonl.zst",
            zstd::encode_all(plain.as_bytes(), 3).unwrap(),
            30,
            "JSONL, zstd",
        ),
        ("c.csv.gz", gzip(csv.as_bytes()), 3, "CSV, gzip"),
        (
            "d.tsv.zst",
            zstd::encode_all(tsv.as_bytes(), 3).unwrap(),
            2,
            "TSV, zstd",
        ),
        // Compressed, with no extension saying so: the bytes tell.
        ("e.jsonl", gzip(plain.as_bytes()), 30, "JSONL, gzip"),
    ];
    for (name, bytes, jobs, format) in cases {
        std::fs::write(ws.path(name), &bytes).unwrap();
        let output = ws
            .run_on(
                &mock,
                &[
                    "run",
                    name,
                    "--name",
                    name,
                    "--model",
                    "claude-haiku-4-5",
                    "--max-tokens",
                    "20",
                ],
            )
            .await;
        let (stdout, stderr) = text(&output);
        assert_eq!(code(&output), 0, "{name}: {stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!("{jobs} succeeded, 0 failed")),
            "{name}: {stdout}"
        );
        assert_eq!(
            stored_input(&ws).await,
            (sha256(&bytes), format.to_owned()),
            "{name}"
        );
        let (status, _) = text(&ws.run(&["status", name]).await);
        assert!(
            status.contains(&format!("{name}, {format} (sha256 ")),
            "{status}"
        );
    }
    // A run named after its file leaves out the compression extension with the format's.
    let output = ws
        .run_on(&mock, &["run", "a.jsonl.gz", "--model", "claude-haiku-4-5"])
        .await;
    let (stdout, stderr) = text(&output);
    assert!(stderr.starts_with("run a-20"), "{stderr}\n{stdout}");
}

#[tokio::test]
async fn compressed_standard_input_is_read_too() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let bytes = zstd::encode_all(jsonl(12).as_bytes(), 3).unwrap();
    let mut child = ws
        .command_on(&mock, &["run", "-", "--name", "piped"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&bytes).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("12 succeeded"), "{stdout}");
    assert_eq!(
        stored_input(&ws).await,
        (sha256(&bytes), "JSONL, zstd".to_owned())
    );
}

#[tokio::test]
async fn a_file_that_is_not_what_its_name_says_is_refused_in_one_sentence() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    ws.write("plain.jsonl.gz", &jsonl(2));
    let output = ws.run_on(&mock, &["run", "plain.jsonl.gz"]).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(
        stderr.contains("plain.jsonl.gz: the name says gzip but the file is not gzip data"),
        "{stderr}"
    );
    assert!(!stderr.contains("not UTF-8"), "{stderr}");
    std::fs::write(ws.path("data.jsonl.bz2"), b"BZh91AY&SYrest").unwrap();
    let output = ws.run_on(&mock, &["run", "data.jsonl.bz2"]).await;
    let (_, stderr) = text(&output);
    assert!(
        stderr.contains("this is bzip2, which msgbatch does not read"),
        "{stderr}"
    );
    assert_eq!(mock.requests(), 0);
}

#[tokio::test]
async fn a_semicolon_table_is_refused_with_the_flag_that_reads_it() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    ws.write(
        "export.csv",
        "id;prompt;model\nq1;\"Hello; world\";claude-haiku-4-5\nq2;Second;claude-haiku-4-5\n",
    );
    let output = ws.run_on(&mock, &["run", "export.csv"]).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(
        stderr.contains("split on `;` it reads `id`, `prompt`, `model`: give --delimiter ';'"),
        "{stderr}"
    );
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                "export.csv",
                "--delimiter",
                ";",
                "--max-tokens",
                "20",
            ],
        )
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("2 succeeded"), "{stdout}");
    let answers = answers(&ws.pool().await).await;
    assert!(answers[0].1.contains("Hello; world"), "{answers:?}");
    assert_eq!(stored_input(&ws).await.1, "CSV (delimiter `;`)".to_owned());
}
