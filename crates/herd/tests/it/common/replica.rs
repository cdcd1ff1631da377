//! `herd serve` as a child process with JSON logs, every line it writes kept.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use super::{herd, keep_lines, stop, CHEAP_HASH};

/// A `herd serve` child process on port 0, killed (SIGKILL) when dropped. Its log lines
/// are read by a thread as they come, so the pipe never fills up and stalls it.
#[derive(Debug)]
pub struct Replica {
    pub id: String,
    pub child: Child,
    pub listen: String,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Replica {
    /// Starts `herd serve --replica-id ID --database DATABASE` on port 0 with cheap
    /// password hashing (these tests are about tokens and processes, not passwords),
    /// `flags` after the defaults.
    pub fn start(id: &str, database: &str, flags: &[&str]) -> Replica {
        Replica::start_with_env(id, database, flags, &[])
    }

    /// [`Replica::start`] with `env` set for the process.
    pub fn start_with_env(
        id: &str,
        database: &str,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Replica {
        Replica::start_at(id, "127.0.0.1:0", database, flags, env)
    }

    /// [`Replica::start_with_env`] listening on `listen`: a replica that comes back at
    /// the address its clients know.
    pub fn start_at(
        id: &str,
        listen: &str,
        database: &str,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Replica {
        let mut child = herd()
            .args(["--log-format", "json", "serve", "--listen", listen])
            .args(["--replica-id", id, "--database", database])
            .args(CHEAP_HASH)
            .args(flags)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn herd serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut listen = None;
        for line in lines.by_ref() {
            let line = line.expect("a log line");
            let entry: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            log.lock().expect("log").push(line);
            if entry["fields"]["message"] == "herd is serving" {
                listen = entry["fields"]["listen"].as_str().map(str::to_owned);
                break;
            }
        }
        let listen = listen.unwrap_or_else(|| {
            panic!(
                "{id} exited before serving:\n{}",
                log.lock().expect("log").join("\n")
            )
        });
        let reader = keep_lines(lines, log.clone());
        Replica {
            id: id.to_owned(),
            child,
            listen,
            log,
            reader: Some(reader),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// Every line the process logged, once it has exited (the reader ends at EOF, which
    /// the exit causes). Call it after the child has been waited for.
    pub fn log_to_end(&mut self) -> Vec<String> {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the log reader");
        }
        self.log.lock().expect("log").clone()
    }

    /// Stops the process with SIGTERM and returns everything it logged.
    pub fn stop(mut self) -> Vec<String> {
        stop(&mut self.child, Duration::from_secs(10));
        self.log_to_end()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
