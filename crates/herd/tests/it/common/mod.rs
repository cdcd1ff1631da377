//! Helpers shared by the modules that run the `herd` executable: the executable itself,
//! one [`Replica`] (`herd serve`) and one [`Cluster`] (`herd cluster`).

mod cluster;
mod replica;

pub use cluster::Cluster;
pub use replica::Replica;

use std::io::{BufRead, Lines};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// `herd serve` flags for a cheap argon2id: tests log in many times and test nothing
/// about the hash's cost.
pub const CHEAP_HASH: [&str; 4] = ["--argon2-memory-kib", "64", "--argon2-iterations", "1"];

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

/// Stops a child gently (SIGTERM, so it can stop its own children or workers), then for
/// good once `grace` has passed.
pub fn stop(child: &mut Child, grace: Duration) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The replica that served a response, from `x-herd-replica`.
pub fn replica_of(response: &reqwest::Response) -> String {
    response.headers()["x-herd-replica"]
        .to_str()
        .expect("ascii")
        .to_owned()
}
