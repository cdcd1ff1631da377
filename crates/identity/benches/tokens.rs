//! Token signing and verification, with and without the verified-token cache.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use herd_identity::{Auth, AuthConfig, HashParams, SystemClock};

fn tokens(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let make = |cache_capacity| {
        rt.block_on(async {
            let store = herd_store::Store::connect(&url).await.expect("store");
            let mut config = AuthConfig::new("http://bench", "herd");
            config.hash = HashParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            };
            config.cache_capacity = cache_capacity;
            Auth::start(store, Arc::new(SystemClock), config)
                .await
                .expect("auth")
        })
    };
    let cached = make(100_000);
    let uncached = make(0);
    let pair = rt.block_on(async {
        let name = herd_identity::Username::parse("bench").expect("name");
        let pw = herd_identity::Password::parse("bench-password").expect("pw");
        cached.signup(&name, &pw, None).await.expect("signup");
        cached
            .login("bench", "bench-password", None, None, None)
            .await
            .expect("login")
    });

    let key = herd_identity::keyring::SigningKey::generate();
    let claims = cached.verify_now(&pair.access_token).expect("valid");

    let mut group = c.benchmark_group("access_token");
    group.bench_function("sign", |b| {
        b.iter(|| herd_identity::jwt::sign(&claims, &key))
    });
    group.bench_function("verify uncached", |b| {
        b.iter(|| uncached.verify_now(&pair.access_token).expect("valid"));
    });
    group.bench_function("verify cached", |b| {
        b.iter(|| cached.verify_now(&pair.access_token).expect("valid"));
    });
    group.finish();
}

criterion_group!(benches, tokens);
criterion_main!(benches);
