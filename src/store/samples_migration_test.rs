//! The rebuild of `jobs` for repeated samples (migrations/0011_job_samples.sql) on a store
//! made before it: every row that points at a job is kept, and foreign keys hold after.

use super::*;

/// A store at migration 10, with one run whose two jobs have every kind of child row.
async fn store_before_samples(path: &std::path::Path) {
    let pool = open_sqlite(path).await.unwrap();
    sqlx::migrate!().run_to(10, &pool).await.unwrap();
    for statement in [
        "INSERT INTO runs (id, name, created_at_ms, status, input_path, input_sha256,
                           gateway_name, base_url, messages_path, settings)
         VALUES (1, 'old', 0, 'completed', 'jobs.jsonl', '', 'mock', 'http://m', '/v1/messages', '{}')",
        "INSERT INTO jobs (id, run_id, job_id, model, line, request, request_sha256, state)
         VALUES (7, 1, 'q1', 'a', 1, '{}', '', 'succeeded'),
                (8, 1, 'q1', 'b', 1, '{}', '', 'succeeded')",
        "INSERT INTO attempts (job, attempt, started_at_ms, queue_wait_ms, latency_ms)
         VALUES (7, 1, 0, 0, 5), (8, 1, 0, 0, 6), (8, 2, 0, 0, 7)",
        "INSERT INTO results (job, input_tokens, output_tokens, cache_creation_input_tokens,
                              cache_write_5m_tokens, cache_write_1h_tokens,
                              cache_read_input_tokens, latency_ms, streamed, completed_at_ms)
         VALUES (7, 1, 1, 0, 0, 0, 0, 5, 0, 0), (8, 1, 1, 0, 0, 0, 0, 7, 0, 0)",
        "INSERT INTO responses (job, body) VALUES (7, '{}'), (8, '{}')",
        "INSERT INTO grades (job, grader, kind, passed, spec, graded_at_ms)
         VALUES (7, 0, 'contains', 1, '{}', 0), (8, 0, 'contains', 0, '{}', 0)",
        "INSERT INTO batches (id, run_id, remote_id, state, requests, bytes, reserved_pico_usd,
                              intent_at_ms, gateway)
         VALUES (1, 1, 'msgbatch_1', 'recorded', 2, 10, 0, 0, 'http://m')",
        "INSERT INTO batch_items (batch, custom_id, job) VALUES (1, 'q1', 7), (1, 'q1-b', 8)",
    ] {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

async fn counts(store: &Store) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in [
        "jobs",
        "attempts",
        "results",
        "responses",
        "grades",
        "batch_items",
    ] {
        let n: i64 = store
            .value(Sql::new(format!("SELECT count(*) FROM {table}")))
            .await
            .unwrap();
        counts.push(n);
    }
    counts
}

#[tokio::test]
async fn the_rebuild_of_jobs_keeps_every_row_that_points_at_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    store_before_samples(&path).await;

    let store = Store::open(&path).await.unwrap();
    assert_eq!(counts(&store).await, [2, 3, 2, 2, 2, 2]);
    let rows: Vec<(i64, String, i64)> = store
        .all(Sql::new("SELECT id, model, sample FROM jobs ORDER BY id"))
        .await
        .unwrap();
    assert_eq!(rows, [(7, "a".to_owned(), 0), (8, "b".to_owned(), 0)]);
    let on: i64 = store.value(Sql::new("PRAGMA foreign_keys")).await.unwrap();
    assert_eq!(on, 1, "foreign keys are on again");
    let broken: Vec<(String, i64, String, i64)> = store
        .all(Sql::new("PRAGMA foreign_key_check"))
        .await
        .unwrap();
    assert!(broken.is_empty(), "{broken:?}");

    // A second sample of a job is a row of its own; the same sample twice is not.
    let job = |sample| NewJob {
        job_id: "q1".to_owned(),
        model: "a".to_owned(),
        sample,
        line: 1,
        request: "{}".to_owned(),
        request_sha256: String::new(),
        tags: None,
        expect: None,
        state: JobState::Pending,
        error: None,
        params_max_tokens: None,
    };
    store.insert_jobs(1, vec![job(1)]).await.unwrap();
    assert!(store.insert_jobs(1, vec![job(1)]).await.is_err());

    // The rebuilt table's rows still own theirs: deleting the run deletes them all.
    store.delete_run(1).await.unwrap();
    assert_eq!(counts(&store).await, [0, 0, 0, 0, 0, 0]);
    store.close().await;
}
