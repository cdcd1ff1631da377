//! What only the Redis bus does: its channel names, its errors, and living through Redis
//! going away.

use std::time::Duration;

use herd_bus::{Bus, BusError, Delivery};
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

use crate::harness::{eventually, message, next, redis_url, RedisServer, WAIT};

#[tokio::test]
async fn a_malformed_url_is_invalid() {
    let err = Bus::redis("http://127.0.0.1:6379")
        .await
        .expect_err("an HTTP URL");
    assert!(matches!(err, BusError::InvalidUrl(_)), "{err:?}");
}

#[tokio::test]
async fn no_redis_at_start_up_is_unavailable_promptly() {
    // Port 1 on the loopback refuses connections.
    let started = Instant::now();
    let err = Bus::redis("redis://127.0.0.1:1")
        .await
        .expect_err("a port nobody listens on");
    assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: set HERD_TEST_REDIS"]
async fn channels_are_the_topic_prefixed_with_herd() {
    let url = redis_url();
    let bus = Bus::redis(&url).await.expect("connecting to Redis");
    let topic = format!("prefix-test-{}", std::process::id());
    let mut subscription = bus.subscribe(&topic).await;

    let client = redis::Client::open(url).expect("a valid URL");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("connecting to Redis");
    for channel in [topic.clone(), format!("herd:{topic}")] {
        redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(channel.as_bytes())
            .query_async::<i64>(&mut raw)
            .await
            .expect("publishing without the bus");
    }
    // The unprefixed channel's message, published first, never arrives.
    assert_eq!(
        message(&mut subscription).await,
        format!("herd:{topic}").as_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: set HERD_TEST_REDIS"]
async fn dropping_a_topic_s_last_subscription_unsubscribes_from_redis() {
    let url = redis_url();
    let bus = Bus::redis(&url).await.expect("connecting to Redis");
    let topic = format!("unsubscribe-test-{}", std::process::id());
    let channel = format!("herd:{topic}");
    let client = redis::Client::open(url).expect("a valid URL");
    let raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("connecting to Redis");

    let first = bus.subscribe(&topic).await;
    let second = bus.subscribe(&topic).await;
    // One subscribed connection per bus, however many subscriptions it has.
    assert_eq!(subscribers(raw.clone(), &channel).await, 1);
    drop(first);
    drop(second);
    eventually("unsubscribed from Redis", || {
        let (raw, channel) = (raw.clone(), &channel);
        async move { subscribers(raw, channel).await == 0 }
    })
    .await;
}

/// How many connections are subscribed to `channel`.
async fn subscribers(mut raw: MultiplexedConnection, channel: &str) -> i64 {
    let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut raw)
        .await
        .expect("PUBSUB NUMSUB");
    counts[0].1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: set HERD_TEST_REDIS"]
async fn a_redis_outage_is_a_gap_and_delivery_resumes_after_it() {
    // The test runs a server of its own, but only where Redis tests were asked for.
    redis_url();
    let mut server = RedisServer::start();
    let a = Bus::redis(&server.url())
        .await
        .expect("connecting to Redis");
    let b = Bus::redis(&server.url())
        .await
        .expect("connecting to Redis");
    let mut first = b.subscribe("first").await;
    let mut second = b.subscribe("second").await;
    a.publish("first", b"before").await.expect("publishing");
    assert_eq!(message(&mut first).await, b"before");

    server.kill();

    let started = Instant::now();
    let err = a
        .publish("first", b"lost")
        .await
        .expect_err("publishing with Redis down");
    assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "publish took {:?}",
        started.elapsed()
    );
    assert_eq!(next(&mut first).await, Delivery::Gap);
    assert_eq!(next(&mut second).await, Delivery::Gap);
    assert!(!a.healthy().await);
    assert!(!b.healthy().await);

    // A subscription made during the outage does not wait for its end.
    let started = Instant::now();
    let mut during = b.subscribe("during").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "subscribe took {:?}",
        started.elapsed()
    );

    server.restart();

    // Publish until something gets through: A's publisher and B's subscriber reconnect
    // on their own schedules.
    let deadline = Instant::now() + WAIT;
    let mut gaps = 0;
    for attempt in 0.. {
        assert!(
            Instant::now() < deadline,
            "nothing got through within {WAIT:?} of Redis coming back"
        );
        let _ = a
            .publish("first", format!("after {attempt}").as_bytes())
            .await;
        match tokio::time::timeout(Duration::from_millis(200), first.recv()).await {
            Ok(Some(Delivery::Gap)) => gaps += 1,
            Ok(Some(Delivery::Message { payload, .. })) => {
                assert!(payload.starts_with(b"after "), "{payload:?}");
                break;
            }
            Ok(None) => panic!("the subscription ended"),
            Err(_) => {}
        }
    }
    // The second gap marks the moment from which a resync covers the outage; nothing
    // published on the new connection comes before it.
    assert_eq!(
        gaps, 1,
        "the restored connection was not announced by one gap"
    );

    // Every topic was subscribed again, the one subscribed during the outage included.
    for (topic, subscription) in [("second", &mut second), ("during", &mut during)] {
        a.publish(topic, topic.as_bytes())
            .await
            .expect("publishing");
        assert_eq!(next(subscription).await, Delivery::Gap);
        assert_eq!(message(subscription).await, topic.as_bytes());
    }
    eventually("healthy again", || async {
        a.healthy().await && b.healthy().await
    })
    .await;
}
