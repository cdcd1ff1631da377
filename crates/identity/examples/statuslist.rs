//! What herd's Token Status List costs: for a list of N sessions with a share of them
//! revoked, its raw and compressed size, the size of the signed JWT, and how long one
//! build takes (pack the bits, ZLIB at the best level, base64url, sign), the median of a
//! few builds. Prints a markdown table; `bench/status-list.sh` puts it in
//! docs/benchmarks.md.
//!
//! ```text
//! cargo run --release -p herd-identity --example statuslist -- SESSIONS ROUNDS
//! ```
//!
//! The revoked indices are spread by a fixed generator, so two runs build the same lists.
//! The store's part of a build (reading the live revocations' indices) is not in it.

use std::time::{Duration, Instant};

use herd_identity::keyring::SigningKey;
use herd_identity::status_list::{self, StatusList, StatusListClaims};

fn main() {
    let mut args = std::env::args().skip(1);
    let sessions: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5).max(1);
    let key = SigningKey::generate();
    let mut out = String::from(
        "| sessions | revoked | raw bytes | compressed bytes | JWT bytes | build (median) |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for per_mille in [0u64, 1, 10, 100] {
        let revoked = spread(sessions, sessions * per_mille / 1000);
        let mut times = Vec::with_capacity(rounds);
        let mut built = None;
        for _ in 0..rounds {
            let started = Instant::now();
            let bytes = status_list::pack(sessions, &revoked);
            let lst = status_list::encode(&bytes);
            let claims = StatusListClaims {
                iss: "https://herd.example".into(),
                sub: "https://herd.example/v1/auth/status-list".into(),
                iat: 1_800_000_000,
                exp: 1_800_000_060,
                ttl: 60,
                status_list: StatusList { bits: 1, lst },
            };
            let jwt = status_list::sign(&claims, &key);
            times.push(started.elapsed());
            built = Some((bytes.len(), claims.status_list.lst.len() * 3 / 4, jwt.len()));
        }
        times.sort();
        let Some((raw, compressed, jwt)) = built else {
            continue;
        };
        out.push_str(&format!(
            "| {sessions} | {:.1}% ({}) | {raw} | {compressed} | {jwt} | {} |\n",
            per_mille as f64 / 10.0,
            revoked.len(),
            ms(times[times.len() / 2]),
        ));
    }
    // A benchmark's one output is its table.
    #[allow(clippy::print_stdout)]
    {
        print!("{out}");
    }
}

/// `count` distinct indices below `len`, spread by a fixed linear congruential walk.
fn spread(len: u64, count: u64) -> Vec<i64> {
    let mut set = std::collections::BTreeSet::new();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    while (set.len() as u64) < count.min(len) {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        set.insert(i64::try_from((x >> 11) % len).unwrap_or(0));
    }
    set.into_iter().collect()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
