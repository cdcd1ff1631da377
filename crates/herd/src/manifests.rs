//! Checks that the Kubernetes manifests in `deploy/kubernetes/` configure herd the way
//! `herd` reads its configuration: every `HERD_*` variable they set is one the command
//! their container runs accepts (asked of clap itself), and the ConfigMap's and Secret's
//! values pass `herd serve`'s validation.
//!
//! The manifests are read with a line scan rather than a YAML parser: they are written as
//! plain block YAML, and every line that mentions `HERD_` must have one of three shapes,
//! which is what makes the scan sound (any other shape fails the test rather than being
//! skipped):
//! - `- name: HERD_X` an `env:` entry of a container;
//! - `HERD_X: "value"` a key of the ConfigMap's `data` or the Secret's `stringData`;
//! - `key: HERD_X` a `configMapKeyRef`/`secretKeyRef` naming such a key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{CommandFactory as _, Parser as _};

use crate::config::{Cli, Command};

/// One `HERD_*` mention in a manifest.
#[derive(Debug)]
enum Mention {
    /// `- name: HERD_X` in a container's `env`.
    Env(String),
    /// `HERD_X: "value"` in a ConfigMap or Secret.
    Key(String, String),
    /// `key: HERD_X`, a reference to a ConfigMap or Secret key.
    Ref(String),
}

#[derive(Debug)]
struct Manifest {
    file: String,
    kind: String,
    /// The container's `args: [...]`: the herd subcommand it runs.
    args: Vec<String>,
    mentions: Vec<Mention>,
}

fn manifest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn read_manifests() -> Vec<Manifest> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifest_dir())
        .expect("deploy/kubernetes exists")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in deploy/kubernetes");
    files.iter().map(|path| scan(path)).collect()
}

fn scan(path: &Path) -> Manifest {
    let file = path
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned();
    let text = std::fs::read_to_string(path).expect("readable manifest");
    assert!(
        !text.lines().any(|l| l.trim() == "---"),
        "{file}: one resource a file, so each file's container runs one command"
    );
    let mut manifest = Manifest {
        file: file.clone(),
        kind: String::new(),
        args: Vec::new(),
        mentions: Vec::new(),
    };
    for (n, raw) in text.lines().enumerate() {
        // Comments may mention variables freely; none of these files has a `#` in a value.
        let line = raw.split('#').next().unwrap_or("").trim_end();
        let trimmed = line.trim_start();
        if let Some(kind) = line.strip_prefix("kind: ") {
            manifest.kind = kind.trim().to_owned();
        }
        if let Some(args) = trimmed.strip_prefix("args: ") {
            let inner = args.trim().trim_start_matches('[').trim_end_matches(']');
            manifest.args = inner
                .split(',')
                .map(|a| a.trim().trim_matches('"').to_owned())
                .collect();
        }
        if !line.contains("HERD_") {
            continue;
        }
        let at = format!("{file}:{}: {raw:?}", n + 1);
        let mention = if let Some(name) = trimmed.strip_prefix("- name: ") {
            Mention::Env(name.trim().to_owned())
        } else if let Some(name) = trimmed.strip_prefix("key: ") {
            Mention::Ref(name.trim().to_owned())
        } else if let Some((key, value)) = trimmed.split_once(": ") {
            let value = value.trim();
            assert!(
                value.len() >= 2 && value.starts_with('"') && value.ends_with('"'),
                "{at}: write the value double-quoted, with no escapes"
            );
            Mention::Key(key.to_owned(), value[1..value.len() - 1].to_owned())
        } else {
            panic!("{at}: a HERD_ variable in a form this scan cannot read");
        };
        let name = match &mention {
            Mention::Env(name) | Mention::Key(name, _) | Mention::Ref(name) => name,
        };
        assert!(
            name.starts_with("HERD_")
                && name[5..]
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
            "{at}: {name:?} is not one plain HERD_ variable name"
        );
        manifest.mentions.push(mention);
    }
    manifest
}

/// The variables a subcommand (a path such as `["keys", "rotate"]`) reads, each with its
/// long flag, as clap defines them, global ones included.
fn accepted(path: &[String]) -> BTreeMap<String, String> {
    let mut command = Cli::command();
    command.build();
    let mut names = BTreeMap::new();
    let mut collect = |command: &clap::Command| {
        for arg in command.get_arguments() {
            if let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) {
                names.insert(env.to_string_lossy().into_owned(), long.to_owned());
            }
        }
    };
    collect(&command);
    let mut current = &command;
    for name in path {
        current = current
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("herd has no subcommand {name:?} (in {path:?})"));
        collect(current);
    }
    names
}

#[test]
fn kubernetes_manifests_set_only_variables_herd_accepts() {
    let manifests = read_manifests();
    let serve = accepted(&["serve".to_owned()]);
    assert!(serve.contains_key("HERD_DATABASE") && serve.contains_key("HERD_LOG_FORMAT"));

    // The ConfigMap's and Secret's keys reach `herd serve` through envFrom.
    let mut keys = BTreeMap::new();
    for m in manifests
        .iter()
        .filter(|m| m.kind == "ConfigMap" || m.kind == "Secret")
    {
        for mention in &m.mentions {
            let Mention::Key(name, value) = mention else {
                panic!("{}: {mention:?} outside a data key", m.file);
            };
            assert!(
                serve.contains_key(name),
                "{}: {name} is not a variable `herd serve` reads",
                m.file
            );
            assert!(
                keys.insert(name.clone(), value.clone()).is_none(),
                "{}: {name} is set twice",
                m.file
            );
        }
    }
    for name in ["HERD_DATABASE", "HERD_REDIS_URL", "HERD_ISSUER"] {
        assert!(
            keys.contains_key(name),
            "no ConfigMap or Secret sets {name}"
        );
    }
    assert_eq!(
        keys.get("HERD_MIGRATE").map(String::as_str),
        Some("false"),
        "the migrate Job migrates; replicas must not race it"
    );

    // Every container's own `env` names a variable its command reads, and every key
    // reference names a key the ConfigMap or Secret has.
    let mut commands = Vec::new();
    for m in manifests.iter().filter(|m| !m.args.is_empty()) {
        let reads = accepted(&m.args);
        for mention in &m.mentions {
            match mention {
                Mention::Env(name) => assert!(
                    reads.contains_key(name),
                    "{}: `herd {}` does not read {name}",
                    m.file,
                    m.args.join(" ")
                ),
                Mention::Ref(name) => assert!(
                    keys.contains_key(name),
                    "{}: no ConfigMap or Secret key {name}",
                    m.file
                ),
                Mention::Key(..) => panic!("{}: {mention:?} in a workload", m.file),
            }
        }
        commands.push(m.args.join(" "));
    }
    commands.sort();
    assert_eq!(commands, ["keys rotate", "migrate", "serve"]);
    let job = manifests
        .iter()
        .find(|m| m.args == ["migrate"])
        .expect("a migrate Job");
    assert!(
        job.mentions
            .iter()
            .any(|m| matches!(m, Mention::Env(n) if n == "HERD_DATABASE")),
        "{}: the migrate Job must be given HERD_DATABASE",
        job.file
    );

    // The values pass the validation `herd serve` runs before it starts. clap reads the
    // environment itself; handing the same settings over as flags checks them without
    // touching this process's environment, which other tests share.
    let mut argv = vec!["herd".to_owned(), "serve".to_owned()];
    for (name, value) in &keys {
        argv.push(format!("--{}={value}", serve[name]));
    }
    let cli = Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("the manifests' settings are refused: {e}"));
    let Command::Serve(args) = cli.command else {
        panic!("serve")
    };
    args.auth_config()
        .expect("the ConfigMap's identity settings are valid");
    args.chat_limits()
        .expect("the ConfigMap's chat limits are valid");
    assert!(
        args.listen.ip().is_unspecified(),
        "replicas must listen on every interface of the pod"
    );
}

#[test]
fn the_scan_refuses_a_variable_it_cannot_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("x.yaml");
    std::fs::write(&path, "env: [{name: HERD_LISTEN, value: x}]\n").expect("write");
    let refused = std::panic::catch_unwind(|| scan(&path));
    assert!(refused.is_err(), "a flow mapping must not be skipped");
    std::fs::write(&path, "data:\n  HERD_LISTEN: \"0.0.0.0:8080\"\n").expect("write");
    let read = scan(&path);
    assert!(
        matches!(&read.mentions[..], [Mention::Key(k, v)] if k == "HERD_LISTEN" && v == "0.0.0.0:8080")
    );
}
