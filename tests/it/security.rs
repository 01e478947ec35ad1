//! The key never reaches the database, the output or an error, and a wrong key stops the
//! run early with one clear sentence.

use msgbatch::mock::MockConfig;

use crate::common::*;

#[tokio::test]
async fn the_key_appears_nowhere_in_the_database_or_the_output() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        require_key: Some(TEST_KEY.to_owned()),
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 5);
    let header = format!("x-extra-secret: {TEST_KEY}");
    let output = ws
        .run_on(&mock, &["run", file.to_str().unwrap(), "--header", &header])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert!(mock.log().iter().all(|l| l.auth == "x-api-key"));
    let status = ws.run(&["status", "1"]).await;
    let export = ws.run(&["export", "1", "--out", "-"]).await;
    for output in [&output, &status, &export] {
        let (stdout, stderr) = text(output);
        assert!(!stdout.contains(TEST_KEY) && !stderr.contains(TEST_KEY));
    }
    // Close every reader so the WAL is folded in, then look at every byte on disk.
    drop(ws.pool().await);
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let mut path = ws.db().into_os_string();
        path.push(suffix);
        let bytes = file_bytes(std::path::Path::new(&path));
        let found = bytes
            .windows(TEST_KEY.len())
            .any(|w| w == TEST_KEY.as_bytes());
        assert!(!found, "the key is in {path:?}");
    }
}

#[tokio::test]
async fn a_wrong_key_stops_the_run_after_a_few_jobs_with_one_sentence() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        require_key: Some("the-right-key".to_owned()),
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 50);
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--concurrency",
                "1",
                "--name",
                "wrong",
            ],
        )
        .await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(
        stderr.contains("the gateway answered 401 authentication_error to 3 jobs in a row"),
        "{stderr}"
    );
    assert!(stderr.contains("msgbatch resume wrong"), "{stderr}");
    assert!(!stderr.contains(TEST_KEY));
    assert_eq!(mock.requests(), 3);
    // Nothing is lost: every job waits for a resume with the right key.
    let pool = ws.pool().await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'pending'").await,
        50
    );
}

#[tokio::test]
async fn a_missing_key_is_one_sentence_before_anything_happens() {
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 1);
    let output = ws.run(&["run", file.to_str().unwrap()]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 2);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr.trim(),
        "error: no API key: set the environment variable ANTHROPIC_API_KEY for gateway `anthropic` (or pass --mock to try the built-in mock gateway)"
    );
    assert!(!ws.db().exists(), "nothing was created");
}

#[tokio::test]
async fn an_unreachable_gateway_stops_the_run_instead_of_failing_every_job() {
    let ws = Workspace::new();
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let file = ws.jobs("jobs.jsonl", 30);
    let base = format!("http://{closed}");
    let output = ws
        .run(&[
            "run",
            file.to_str().unwrap(),
            "--base-url",
            &base,
            "--api-key-env",
            KEY_ENV,
            "--concurrency",
            "1",
            "--max-attempts",
            "2",
            "--retry-base-delay",
            "1ms",
            "--name",
            "down",
        ])
        .await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(
        stderr.contains("the gateway could not be reached for 3 jobs in a row"),
        "{stderr}"
    );
    let pool = ws.pool().await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'pending'").await,
        30
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM attempts").await,
        6,
        "two attempts on three jobs"
    );
}

#[tokio::test]
async fn help_shows_no_key_or_token_set_in_the_environment() {
    let ws = Workspace::new();
    for (command, variable) in [
        ("mock", "MSGBATCH_MOCK_KEY"),
        ("view", "MSGBATCH_VIEW_TOKEN"),
        ("status", "MSGBATCH_DB"),
    ] {
        let secret = "sk-help-secret-0451";
        let output = ws
            .command(&[command, "--help"])
            .env(variable, secret)
            .output()
            .await
            .expect("the binary runs");
        let (stdout, stderr) = text(&output);
        assert_eq!(code(&output), 0, "{stderr}");
        assert!(stdout.contains(variable), "{command}: {stdout}");
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{command} --help shows ${variable}: {stdout}"
        );
    }
}
