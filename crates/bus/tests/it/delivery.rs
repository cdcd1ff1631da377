//! What a subscription receives, the same on every backend.

use herd_bus::{Delivery, CAPACITY};

use crate::harness::{message, next, Replicas, WAIT};

backend_tests!(
    a_message_reaches_every_replica_the_publisher_included,
    a_burst_arrives_in_order_exactly_once_per_subscription,
    a_batch_published_at_once_arrives_in_order_between_its_neighbours,
    topics_are_isolated,
    a_subscription_gets_nothing_published_before_it,
    payloads_are_arbitrary_bytes,
    concurrent_publishers_keep_their_order_and_all_see_one_order,
    a_subscription_that_falls_behind_gets_a_gap_then_the_newest_messages,
    dropping_every_bus_ends_its_subscriptions,
    healthy_while_the_backend_is_up,
);

async fn a_message_reaches_every_replica_the_publisher_included(r: Replicas) {
    let topic = r.topic("news");
    let mut on_a = r.a.subscribe(&topic).await;
    let mut on_b = r.b.subscribe(&topic).await;

    r.a.publish(&topic, b"hello").await.expect("publishing");

    assert_eq!(message(&mut on_b).await, b"hello");
    assert_eq!(message(&mut on_a).await, b"hello");
}

async fn a_burst_arrives_in_order_exactly_once_per_subscription(r: Replicas) {
    let topic = r.topic("burst");
    let mut subscriptions = vec![
        r.b.subscribe(&topic).await,
        r.b.subscribe(&topic).await,
        r.a.subscribe(&topic).await,
    ];

    let sent: Vec<Vec<u8>> = (0..500).map(|i| format!("m{i}").into_bytes()).collect();
    for payload in &sent {
        r.a.publish(&topic, payload).await.expect("publishing");
    }
    // Published last, so that anything delivered twice would show up before it.
    r.a.publish(&topic, b"end").await.expect("publishing");

    for subscription in &mut subscriptions {
        let mut received = Vec::with_capacity(sent.len());
        for _ in 0..sent.len() {
            received.push(message(subscription).await);
        }
        assert!(
            received == sent,
            "out of order, or missing or repeated messages"
        );
        assert_eq!(message(subscription).await, b"end");
    }
}

async fn a_batch_published_at_once_arrives_in_order_between_its_neighbours(r: Replicas) {
    let topic = r.topic("batch");
    let mut on_b = r.b.subscribe(&topic).await;
    let mut on_a = r.a.subscribe(&topic).await;

    let batch: Vec<Vec<u8>> = (0..100).map(|i| format!("m{i}").into_bytes()).collect();
    r.a.publish(&topic, b"before").await.expect("publishing");
    r.a.publish_all(&topic, &batch).await.expect("publishing");
    r.a.publish_all(&topic, &[])
        .await
        .expect("publishing nothing");
    r.a.publish(&topic, b"after").await.expect("publishing");

    let mut expected = vec![b"before".to_vec()];
    expected.extend(batch);
    expected.push(b"after".to_vec());
    for subscription in [&mut on_b, &mut on_a] {
        let mut received = Vec::with_capacity(expected.len());
        for _ in 0..expected.len() {
            received.push(message(subscription).await);
        }
        assert!(received == expected, "out of order, or missing or repeated");
    }
}

async fn topics_are_isolated(r: Replicas) {
    let (x, y) = (r.topic("x"), r.topic("y"));
    let mut on_x = r.b.subscribe(&x).await;
    let mut on_y = r.b.subscribe(&y).await;

    r.a.publish(&x, b"x1").await.expect("publishing");
    r.a.publish(&y, b"y1").await.expect("publishing");
    r.a.publish(&x, b"x2").await.expect("publishing");
    r.a.publish(&y, b"y2").await.expect("publishing");

    assert_eq!(message(&mut on_x).await, b"x1");
    assert_eq!(message(&mut on_x).await, b"x2");
    assert_eq!(message(&mut on_y).await, b"y1");
    assert_eq!(message(&mut on_y).await, b"y2");
}

async fn a_subscription_gets_nothing_published_before_it(r: Replicas) {
    // A topic this replica already follows: the old message has reached the earlier
    // subscription, and must not reach the later one.
    let topic = r.topic("followed");
    let mut early = r.b.subscribe(&topic).await;
    r.a.publish(&topic, b"old").await.expect("publishing");
    assert_eq!(message(&mut early).await, b"old");
    let mut late = r.b.subscribe(&topic).await;
    r.a.publish(&topic, b"new").await.expect("publishing");
    assert_eq!(message(&mut late).await, b"new");
    assert_eq!(message(&mut early).await, b"new");

    // A topic nobody follows: on the SQL tail the old message is in the log, possibly
    // not yet read by B's poller when B subscribes.
    let topic = r.topic("unfollowed");
    r.a.publish(&topic, b"old").await.expect("publishing");
    let mut late = r.b.subscribe(&topic).await;
    // A replica started after the publish, whose poller starts after it too.
    let c = r.another().await;
    let mut on_c = c.subscribe(&topic).await;
    r.a.publish(&topic, b"new").await.expect("publishing");
    assert_eq!(message(&mut late).await, b"new");
    assert_eq!(message(&mut on_c).await, b"new");
}

async fn payloads_are_arbitrary_bytes(r: Replicas) {
    let topic = r.topic("bytes");
    let mut on_b = r.b.subscribe(&topic).await;

    let every_byte: Vec<u8> = (0..=255).collect();
    let large: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let payloads: [&[u8]; 5] = [
        b"",
        &[0xff, 0xfe, 0x00, 0x80, 0xc3],
        b"\0\r\n$-1\r\n",
        &every_byte,
        &large,
    ];
    for payload in payloads {
        r.a.publish(&topic, payload).await.expect("publishing");
    }
    for payload in payloads {
        assert_eq!(message(&mut on_b).await, payload);
    }
}

async fn concurrent_publishers_keep_their_order_and_all_see_one_order(r: Replicas) {
    let topic = r.topic("both");
    let mut on_a = r.a.subscribe(&topic).await;
    let mut on_b = r.b.subscribe(&topic).await;

    let per_publisher = 200;
    let publishers: Vec<_> = [("a", r.a.clone()), ("b", r.b.clone())]
        .into_iter()
        .map(|(name, bus)| {
            let topic = topic.clone();
            tokio::spawn(async move {
                for i in 0..per_publisher {
                    let payload = format!("{name}/{i}");
                    bus.publish(&topic, payload.as_bytes())
                        .await
                        .expect("publishing");
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.expect("a publisher task");
    }

    let mut orders = Vec::new();
    for subscription in [&mut on_a, &mut on_b] {
        let mut received = Vec::new();
        for _ in 0..2 * per_publisher {
            received.push(String::from_utf8(message(subscription).await).expect("a UTF-8 payload"));
        }
        for name in ["a", "b"] {
            let from: Vec<&str> = received
                .iter()
                .filter_map(|m| m.strip_prefix(name)?.strip_prefix('/'))
                .collect();
            let expected: Vec<String> = (0..per_publisher).map(|i| i.to_string()).collect();
            assert!(
                from == expected,
                "{name}'s messages out of order or missing"
            );
        }
        orders.push(received);
    }
    assert!(
        orders[0] == orders[1],
        "the two replicas saw different orders"
    );
}

async fn a_subscription_that_falls_behind_gets_a_gap_then_the_newest_messages(r: Replicas) {
    let (flood, marker) = (r.topic("flood"), r.topic("marker"));
    let mut slow = r.b.subscribe(&flood).await;
    let mut on_marker = r.b.subscribe(&marker).await;

    let sent = CAPACITY + 100;
    for i in 0..sent {
        r.a.publish(&flood, i.to_string().as_bytes())
            .await
            .expect("publishing");
    }
    // Each backend hands a replica its messages in publication order, whatever their
    // topic, so once the marker is here, the whole flood has been fanned out on B.
    r.a.publish(&marker, b"").await.expect("publishing");
    assert_eq!(message(&mut on_marker).await, b"");

    assert_eq!(next(&mut slow).await, Delivery::Gap);
    // What is left are the newest messages, in order, up to the last one.
    let first: usize = parse(&message(&mut slow).await);
    assert!(first > 0, "nothing was dropped, yet a gap was reported");
    for expected in first + 1..sent {
        assert_eq!(parse(&message(&mut slow).await), expected);
    }

    // And the subscription goes on.
    r.a.publish(&flood, b"after").await.expect("publishing");
    assert_eq!(message(&mut slow).await, b"after");
}

fn parse(payload: &[u8]) -> usize {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("a number")
}

async fn dropping_every_bus_ends_its_subscriptions(r: Replicas) {
    let topic = r.topic("ending");
    let mut on_b = r.b.subscribe(&topic).await;
    let mut on_a = r.a.subscribe(&topic).await;
    drop(r);

    for subscription in [&mut on_a, &mut on_b] {
        let end = tokio::time::timeout(WAIT, subscription.recv()).await;
        assert_eq!(end, Ok(None), "the subscription outlived its bus");
    }
}

async fn healthy_while_the_backend_is_up(r: Replicas) {
    assert!(r.a.healthy().await);
    assert!(r.b.healthy().await);
}
