//! The `herd` executable as operators and developers run it: one test binary, a module
//! per subject, every process started through the helpers in `common` (`herd()`, one
//! `Replica` for `herd serve`, one `Cluster` for `herd cluster`).
//!
//! - `cli`: flags, migrations, keys, SIGTERM, a replica SIGKILLed mid-flood;
//! - `cluster`, `balance`: `herd cluster` and `herd balance` with their replicas;
//! - `lab`: a short `herd lab` run whose results.json must show the design claims;
//! - `verify`: the example service on `herd-verify` refusing logged-out tokens, with herd
//!   up, away and back;
//! - `security`: logs searched for secrets; clock skew (libfaketime) and third-party
//!   JOSE libraries when their tools are named;
//! - `nginx`, `browser`, `kubernetes`, `partition`: the deployment's own tools (nginx,
//!   headless Chromium, kubernetes-validate, network namespaces), each ignored unless
//!   its `HERD_TEST_*` variable names it.
//!
//! One module, or one test, at a time:
//!
//! ```sh
//! cargo test -p herd --test it security:: -- --include-ignored
//! cargo test -p herd --test it cli::keys_rotate
//! ```

mod balance;
mod browser;
mod cli;
mod cluster;
mod common;
mod kubernetes;
mod lab;
mod nginx;
mod partition;
mod security;
mod verify;
