//! deploy/kubernetes/, checked against the Kubernetes API schemas by a real validator,
//! `kubernetes-validate --strict` (PyPI; `.ci/run` installs a pinned version), named by
//! `HERD_TEST_KUBEVAL`. Whether the manifests set only variables herd reads is checked
//! by `crates/herd/src/manifests.rs`, which needs no tool.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const IGNORED: &str = "needs kubernetes-validate: set HERD_TEST_KUBEVAL=kubernetes-validate";

/// The Kubernetes version the manifests target: the preStop `sleep` action they use is
/// there from 1.30 on, and the validator's own default moves with its releases.
const KUBERNETES_VERSION: &str = "1.31.0";

fn validate(files: &[PathBuf]) -> Output {
    let validator = match std::env::var_os("HERD_TEST_KUBEVAL") {
        Some(v) if !v.is_empty() => v,
        _ => panic!("HERD_TEST_KUBEVAL is not set: {IGNORED}"),
    };
    Command::new(&validator)
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("running {validator:?} (is HERD_TEST_KUBEVAL right?): {e}"))
}

fn manifests() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
#[ignore = "needs kubernetes-validate: set HERD_TEST_KUBEVAL=kubernetes-validate"]
fn every_manifest_passes_strict_schema_validation() {
    let files = manifests();
    let kinds: Vec<String> = files
        .iter()
        .filter_map(|f| {
            std::fs::read_to_string(f)
                .expect("readable")
                .lines()
                .find_map(|l| l.strip_prefix("kind: ").map(str::to_owned))
        })
        .collect();
    for kind in [
        "ConfigMap",
        "CronJob",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Job",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} in deploy/kubernetes"
        );
    }
    let out = validate(&files);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate refused:\n{report}"
    );
    // One "passed" line a file: a file the validator skipped (not recognised as a
    // resource) would not fail it, but must fail this test.
    for file in &files {
        let name = file.file_name().expect("a name").to_string_lossy();
        assert!(
            report
                .lines()
                .any(|l| l.contains(&*name) && l.contains("passed")),
            "{name} was not validated:\n{report}"
        );
    }
}

/// The validator really is strict: a field the schema does not have fails it, so the
/// test above cannot pass by validating nothing.
#[test]
#[ignore = "needs kubernetes-validate: set HERD_TEST_KUBEVAL=kubernetes-validate"]
fn the_validator_refuses_an_unknown_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let deployment = std::fs::read_to_string(
        manifests()
            .into_iter()
            .find(|f| f.ends_with("deployment.yaml"))
            .expect("deployment.yaml"),
    )
    .expect("readable");
    let broken = deployment.replace("maxSurge: 1", "maxSurge: 1\n      maxSurgee: 2");
    assert_ne!(broken, deployment);
    let path = dir.path().join("deployment.yaml");
    std::fs::write(&path, broken).expect("write");
    let out = validate(&[path]);
    assert!(
        !out.status.success(),
        "an unknown field passed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
