//! The test command itself: the README gives one, `.ci/run` runs that same one last, and it
//! includes the tests marked ignored for a tool, so that CI never passes having skipped them.

use std::path::Path;

const COMMAND: &str = "cargo test --locked -- --include-ignored";

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name))
        .unwrap_or_else(|e| panic!("{name} is readable: {e}"))
}

#[test]
fn ci_runs_the_readmes_test_command_with_the_ignored_tests_last() {
    let readme = read("README.md");
    let given: Vec<&str> = readme
        .lines()
        .filter(|line| line.starts_with("cargo test"))
        .map(|line| line.split('#').next().unwrap_or_default().trim_end())
        .collect();
    assert_eq!(given, [COMMAND], "the README's test command");
    let ci = read(".ci/run");
    let last = ci
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty() && !line.starts_with('#'))
        .expect(".ci/run has commands");
    assert_eq!(last, COMMAND, ".ci/run's last step");
}

#[test]
fn a_missing_tool_is_never_a_silent_pass() {
    // The tests that need a tool are marked `#[ignore = "needs …"]` and fail when run without
    // it; a variable that turned a skip into a failure would mean skips are back.
    let ci = read(".ci/run");
    assert!(!ci.contains("MSGBATCH_REQUIRE_"), "{ci}");
    for (file, needs) in [
        ("tests/it/postgres.rs", "needs PostgreSQL"),
        ("tests/it/sdk.rs", "needs the Python SDK"),
        ("tests/it/diff.rs", "needs Chromium"),
    ] {
        let text = read(file);
        assert!(!text.contains("MSGBATCH_REQUIRE_"), "{file}");
        assert!(!text.contains("skipped:"), "{file} still skips");
        assert!(
            text.contains(&format!("#[ignore = \"{needs}")),
            "{file} marks its tests ignored for what they need"
        );
    }
}
