//! The `herd` binary as an operator runs it: bad flags, migrations, key rotation, and a
//! replica that starts, serves and stops on SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

fn herd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herd"));
    // Only the flags a test passes count, whatever the environment running it says.
    for (key, _) in std::env::vars() {
        if key.starts_with("HERD_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn database(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("herd.db").display())
}

#[test]
fn a_bad_flag_value_stops_start_up_naming_the_flag() {
    let out = herd()
        .args(["serve", "--leeway", "2m"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--leeway must be at most 30s"), "{stderr}");

    let out = herd()
        .args(["serve", "--access-ttl", "soon"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--access-ttl"), "{stderr}");

    let out = herd()
        .args(["serve", "--database", "mysql://x"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--database"), "{stderr}");
}

#[test]
fn serve_without_migrating_refuses_a_schema_that_is_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir);
    let out = herd()
        .args([
            "serve",
            "--migrate=false",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &db,
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("run `herd migrate`"), "{stderr}");

    assert!(herd()
        .args(["migrate", "--database", &db])
        .status()
        .expect("run")
        .success());
}

#[test]
fn keys_rotate_adds_a_pending_key_beside_the_active_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir);
    let out = herd()
        .args(["keys", "list", "--database", &db])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = String::from_utf8_lossy(&out.stdout);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(list.contains(" active "), "{list}");

    let out = herd()
        .args(["keys", "rotate", "--database", &db])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = herd()
        .args(["keys", "list", "--database", &db])
        .output()
        .expect("run");
    let list = String::from_utf8_lossy(&out.stdout);
    let states: Vec<&str> = list
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(states, ["active", "pending"], "{list}");
}

#[tokio::test]
async fn serve_answers_then_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = herd()
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--replica-id",
            "cli-1",
        ])
        .args(["--database", &database(&dir)])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let listen = loop {
        let line = lines
            .next()
            .expect("serve logged its address before exiting")
            .expect("line");
        let entry: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        if entry["fields"]["message"] == "herd is serving" {
            break entry["fields"]["listen"]
                .as_str()
                .expect("listen")
                .to_owned();
        }
    };

    let response = reqwest::get(format!("http://{listen}/healthz"))
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-herd-replica"], "cli-1");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "exited with {status}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("\"stopped\"")), "{rest:?}");
}
