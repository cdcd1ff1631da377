//! Helpers shared by the test binaries that run the `herd` executable.

use std::io::{BufRead, Lines};
use std::process::Command;

/// The `herd` executable, with no `HERD_*` variable from the environment running the
/// tests: only the flags a test passes count.
pub fn herd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herd"));
    for (key, _) in std::env::vars() {
        if key.starts_with("HERD_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

pub fn database(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("herd.db").display())
}

/// Reads JSON log lines until the one whose message is `message`, and returns its
/// `listen` field. Lines that are not JSON (a cluster's forwarded replica lines) are
/// skipped.
pub fn listen_address(lines: &mut Lines<impl BufRead>, message: &str) -> String {
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the process exited before logging {message:?}"))
            .expect("line");
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if entry["fields"]["message"] == message {
            return entry["fields"]["listen"]
                .as_str()
                .expect("listen")
                .to_owned();
        }
    }
}
