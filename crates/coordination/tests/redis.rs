//! The Redis backend against a real `redis-server` (started on loopback by pstar-testbed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pstar_coordination::{
    CancelTarget, Control, Coordination, CoordinationError, Event, PilotEvent, PilotRecord,
    RedisOptions, RedisStore, UnitEvent,
};
use pstar_model::{
    ComputeUnitDescription, PilotComputeDescription, PilotId, PilotState, Timestamp, UnitId,
    UnitState,
};
use pstar_testbed::RedisServer;

fn options(server: &RedisServer) -> RedisOptions {
    RedisOptions {
        password: Some(server.password().to_owned()),
        retry_for: Duration::from_secs(20),
        ..Default::default()
    }
}

async fn store(server: &RedisServer, session: &str) -> Arc<RedisStore> {
    RedisStore::connect(&server.url(), session, options(server))
        .await
        .expect("connect to the test redis-server")
}

fn units(first: UnitId, n: u64) -> Vec<(UnitId, Arc<ComputeUnitDescription>)> {
    (0..n)
        .map(|i| {
            let d = ComputeUnitDescription::new("/bin/echo").with_arguments([i.to_string()]);
            (UnitId::new(first.get() + i), Arc::new(d))
        })
        .collect()
}

fn done(unit: UnitId) -> Event {
    Event::Unit(UnitEvent {
        unit,
        pilot: Some(PilotId::new(0)),
        state: UnitState::Done,
        at: Timestamp::now(),
        exit_code: Some(0),
        detail: None,
        lost_run: None,
        failed_run: false,
        result: None,
    })
}

#[tokio::test]
async fn units_flow_from_queue_to_claim_in_order() {
    let server = RedisServer::start();
    let s = store(&server, "s1").await;
    let first = s.reserve_unit_ids(10).await.unwrap();
    assert_eq!(first, UnitId::new(0));
    assert_eq!(s.reserve_unit_ids(1).await.unwrap(), UnitId::new(10));
    s.put_units(&units(first, 10)).await.unwrap();
    let pilot = s.reserve_pilot_id().await.unwrap();
    let ids: Vec<UnitId> = (0..10).map(UnitId::new).collect();
    s.enqueue(pilot, &ids).await.unwrap();

    let got = s.claim(pilot, 4, Duration::ZERO).await.unwrap();
    let got_ids: Vec<UnitId> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(got_ids, ids[..4]);
    assert_eq!(got[1].1.arguments, ["1"]);

    // Withdraw some, then the rest.
    let back = s
        .withdraw(
            pilot,
            Some(&[UnitId::new(5), UnitId::new(2), UnitId::new(7)]),
        )
        .await
        .unwrap();
    assert_eq!(back, [UnitId::new(5), UnitId::new(7)]);
    let rest = s.withdraw(pilot, None).await.unwrap();
    assert_eq!(rest, [4, 6, 8, 9].map(UnitId::new));
    assert!(s.claim(pilot, 4, Duration::ZERO).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_waiting_claim_wakes_when_units_arrive() {
    let server = RedisServer::start();
    let s = store(&server, "s1").await;
    s.put_units(&units(UnitId::new(0), 3)).await.unwrap();
    let pilot = PilotId::new(0);
    let claimer = {
        let s = s.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let got = s.claim(pilot, 8, Duration::from_secs(10)).await.unwrap();
            (got.len(), t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.enqueue(pilot, &[UnitId::new(0), UnitId::new(1), UnitId::new(2)])
        .await
        .unwrap();
    let (n, waited) = claimer.await.unwrap();
    assert_eq!(n, 3);
    assert!(waited < Duration::from_secs(5), "claim waited {waited:?}");

    // Nothing comes: the claim returns empty after its wait.
    let t = Instant::now();
    assert!(
        s.claim(pilot, 8, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(t.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn subscribers_see_every_batch_in_order_and_history_replays() {
    let server = RedisServer::start();
    let s = store(&server, "s1").await;
    s.publish(vec![done(UnitId::new(0))]).await.unwrap();
    let mut live = s.subscribe().await.unwrap();
    s.publish_and_enqueue(
        vec![done(UnitId::new(1)), done(UnitId::new(2))],
        vec![(PilotId::new(3), vec![UnitId::new(9)])],
    )
    .await
    .unwrap();
    s.publish(vec![done(UnitId::new(3))]).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let batch = live.next_batch().await.unwrap().unwrap();
        seen.extend(batch.iter().cloned());
    }
    let unit_of = |e: &Event| match e {
        Event::Unit(u) => u.unit.get(),
        _ => u64::MAX,
    };
    assert_eq!(seen.iter().map(unit_of).collect::<Vec<_>>(), [1, 2, 3]);
    // The binding went into the pilot's queue with the events.
    assert_eq!(
        s.withdraw(PilotId::new(3), None).await.unwrap(),
        [UnitId::new(9)]
    );

    let mut replay = s.subscribe_from_start().await.unwrap();
    let mut all = Vec::new();
    while all.len() < 4 {
        all.extend(
            replay
                .next_batch()
                .await
                .unwrap()
                .unwrap()
                .iter()
                .map(unit_of),
        );
    }
    assert_eq!(all, [0, 1, 2, 3]);
}

#[tokio::test]
async fn control_messages_heartbeats_and_records() {
    let server = RedisServer::start();
    let s = store(&server, "s1").await;
    let pilot = PilotId::new(2);
    s.send_control(pilot, Control::CancelUnit(UnitId::new(4)))
        .await
        .unwrap();
    s.send_control(pilot, Control::CancelPilot).await.unwrap();
    assert_eq!(
        s.recv_control(pilot, Duration::from_secs(1)).await.unwrap(),
        [Control::CancelUnit(UnitId::new(4)), Control::CancelPilot]
    );
    assert!(
        s.recv_control(pilot, Duration::from_millis(100))
            .await
            .unwrap()
            .is_empty()
    );

    let at = Timestamp::from_micros(1_700_000_000_123_456);
    s.heartbeat(pilot, at).await.unwrap();
    assert_eq!(s.heartbeats().await.unwrap(), [(pilot, at)]);

    let record = PilotRecord {
        id: pilot,
        description: PilotComputeDescription {
            cores: 3,
            ..Default::default()
        },
        sandbox: "/tmp/x".into(),
        job: Some("local:42".into()),
        agent: pstar_model::AgentSettings {
            drain_margin: Some(std::time::Duration::from_secs(90)),
            ..Default::default()
        },
        restart_of: None,
    };
    s.put_pilot(record.clone()).await.unwrap();
    assert_eq!(s.pilot(pilot).await.unwrap(), record);
    assert_eq!(s.all_pilots().await.unwrap(), [record]);
    assert!(matches!(
        s.pilot(PilotId::new(9)).await,
        Err(CoordinationError::UnknownPilot(_))
    ));
}

#[tokio::test]
async fn sessions_share_a_redis_without_touching_each_other() {
    let server = RedisServer::start();
    let a = store(&server, "session-a").await;
    let b = store(&server, "session-b").await;
    a.put_units(&units(UnitId::new(0), 2)).await.unwrap();
    b.put_units(&units(UnitId::new(0), 5)).await.unwrap();
    a.enqueue(PilotId::new(0), &[UnitId::new(0)]).await.unwrap();
    assert!(
        b.claim(PilotId::new(0), 8, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(a.all_units().await.unwrap().len(), 2);
    assert_eq!(b.all_units().await.unwrap().len(), 5);

    let listed: Vec<String> = a
        .sessions()
        .await
        .unwrap()
        .into_iter()
        .map(|(e, present)| {
            assert!(present);
            e.session
        })
        .collect();
    assert_eq!(listed, ["session-a", "session-b"]);

    assert!(a.remove_session("session-b").await.unwrap() >= 1);
    assert_eq!(a.all_units().await.unwrap().len(), 2);
    assert!(b.all_units().await.unwrap().is_empty());
    let left: Vec<String> = a
        .sessions()
        .await
        .unwrap()
        .into_iter()
        .map(|(e, _)| e.session)
        .collect();
    assert_eq!(left, ["session-a"]);

    // A finished session's keys expire.
    a.finish(Duration::from_secs(100)).await.unwrap();
    let out = std::process::Command::new("redis-cli")
        .args(["--no-auth-warning", "-p", &server.port().to_string()])
        .args(["-a", server.password(), "TTL", "pstar:session-a:units"])
        .output()
        .unwrap();
    let ttl: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!((1..=100).contains(&ttl), "ttl {ttl}");
    assert!(a.session_entry().await.unwrap().finished.is_some());
}

#[tokio::test]
async fn a_wrong_password_fails_at_once() {
    let server = RedisServer::start();
    let t = Instant::now();
    let err = RedisStore::connect(
        &server.url(),
        "s",
        RedisOptions {
            password: Some("not-the-password".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, CoordinationError::Unauthorized(_)),
        "got {err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let none = RedisStore::connect(&server.url(), "s", RedisOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(none, CoordinationError::Unauthorized(_)),
        "got {none}"
    );
}

#[tokio::test]
async fn an_unreachable_redis_fails_after_bounded_retries() {
    let port = pstar_testbed::free_port();
    let t = Instant::now();
    let err = RedisStore::connect(
        &format!("redis://127.0.0.1:{port}/0"),
        "s",
        RedisOptions {
            retry_for: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, CoordinationError::Unreachable(_)),
        "got {err}"
    );
    assert!(err.to_string().contains(&port.to_string()));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_restarted_redis_is_reconnected_and_keeps_the_data() {
    let mut server = RedisServer::start();
    let s = store(&server, "s1").await;
    s.put_units(&units(UnitId::new(0), 4)).await.unwrap();
    s.enqueue(PilotId::new(0), &[UnitId::new(0), UnitId::new(1)])
        .await
        .unwrap();
    let mut live = s.subscribe().await.unwrap();

    server.restart();

    // Calls made while it was away or right after go through once it is back.
    s.publish(vec![done(UnitId::new(0))]).await.unwrap();
    let got = s.claim(PilotId::new(0), 8, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 2);
    let batch = tokio::time::timeout(Duration::from_secs(30), live.next_batch())
        .await
        .expect("the subscription resumes after the restart")
        .unwrap()
        .unwrap();
    assert_eq!(batch.len(), 1);
}

#[tokio::test]
async fn a_subscription_ends_with_an_error_when_redis_is_gone_for_good() {
    let mut server = RedisServer::start();
    let s = RedisStore::connect(
        &server.url(),
        "s1",
        RedisOptions {
            retry_for: Duration::from_secs(2),
            ..options(&server)
        },
    )
    .await
    .unwrap();
    let mut live = s.subscribe().await.unwrap();
    server.stop();
    let end = tokio::time::timeout(Duration::from_secs(30), live.next_batch())
        .await
        .expect("the subscription ends instead of hanging");
    assert!(
        matches!(end, Some(Err(CoordinationError::Unreachable(_)))),
        "got {end:?}"
    );
    let err = s.reserve_unit_ids(1).await.unwrap_err();
    assert!(
        matches!(err, CoordinationError::Unreachable(_)),
        "got {err}"
    );
}

#[tokio::test]
async fn rediss_speaks_tls_and_checks_the_server_certificate() {
    let server = RedisServer::start_tls();
    assert!(server.url().starts_with("rediss://"));
    let s = RedisStore::connect(
        &server.url(),
        "tls",
        RedisOptions {
            ca_file: Some(server.ca_file()),
            ..options(&server)
        },
    )
    .await
    .expect("a TLS connection trusting the server's CA");
    s.put_units(&units(UnitId::new(0), 2)).await.unwrap();
    s.enqueue(PilotId::new(0), &[UnitId::new(1)]).await.unwrap();
    let got = s.claim(PilotId::new(0), 4, Duration::ZERO).await.unwrap();
    assert_eq!(got[0].0, UnitId::new(1));
    assert_eq!(
        s.agent_environment(),
        [
            (
                "PSTAR_REDIS_PASSWORD".to_owned(),
                server.password().to_owned()
            ),
            (
                "PSTAR_REDIS_CA".to_owned(),
                server.ca_file().display().to_string()
            ),
        ]
    );

    // Without the CA, the server's certificate is not trusted: refused, not retried.
    let t = Instant::now();
    let err = RedisStore::connect(
        &server.url(),
        "tls",
        RedisOptions {
            retry_for: Duration::from_secs(20),
            ..options(&server)
        },
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "got {err}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_second_session_with_the_same_id_is_refused() {
    let server = RedisServer::start();
    let first = store(&server, "twice").await;
    first.put_units(&units(UnitId::new(0), 1)).await.unwrap();
    let err = RedisStore::connect(&server.url(), "twice", options(&server))
        .await
        .expect_err("a clash of session ids is refused");
    assert!(
        matches!(err, CoordinationError::SessionExists(_)),
        "got {err}"
    );
    assert!(err.to_string().contains("twice"), "{err}");
    // Looking at it (or resuming it) is not registering it.
    RedisStore::connect(
        &server.url(),
        "twice",
        RedisOptions {
            register: false,
            ..options(&server)
        },
    )
    .await
    .expect("a look at an existing session");
}

#[tokio::test]
async fn hostile_session_names_are_refused_before_anything_is_written() {
    let server = RedisServer::start();
    for name in [
        "*",
        "a*",
        "?",
        "[a-z]*",
        "../x",
        "-x",
        ".x",
        "a:b",
        "a b",
        "\u{1b}[2J",
        "",
    ] {
        for register in [true, false] {
            let err = RedisStore::connect(
                &server.url(),
                name,
                RedisOptions {
                    register,
                    ..options(&server)
                },
            )
            .await
            .expect_err("a hostile session name is refused");
            assert!(
                err.to_string().contains("invalid session name"),
                "{name:?}: {err}"
            );
        }
    }
    assert_eq!(server.keys(), Vec::<String>::new());
}

#[tokio::test]
async fn removing_a_session_deletes_its_keys_and_no_other() {
    let server = RedisServer::start();
    let a = store(&server, "a").await;
    let ab = store(&server, "a.b").await;
    let other = store(&server, "other").await;
    for s in [&a, &ab, &other] {
        s.put_units(&units(UnitId::new(0), 1)).await.unwrap();
        s.enqueue(PilotId::new(3), &[UnitId::new(0)]).await.unwrap();
        s.publish(vec![done(UnitId::new(0))]).await.unwrap();
    }
    server.cli(&["SET", "pstar:unrelated", "1"]);
    server.cli(&["SET", "pstar:a", "1"]);
    let before = server.keys();

    // A pattern for a name is refused, not matched.
    for pattern in ["*", "a*", "?", "[ao]*"] {
        let err = other.remove_session(pattern).await.expect_err(pattern);
        assert!(err.to_string().contains("invalid session name"), "{err}");
    }
    assert_eq!(server.keys(), before);

    assert!(other.remove_session("a").await.unwrap() >= 3);
    let left = server.keys();
    let gone: Vec<&String> = before.iter().filter(|k| !left.contains(k)).collect();
    assert!(
        gone.iter().all(|k| k.starts_with("pstar:a:")),
        "removed more than session a: {gone:?}"
    );
    assert!(!left.iter().any(|k| k.starts_with("pstar:a:")), "{left:?}");
    for kept in [
        "pstar:unrelated",
        "pstar:a",
        "pstar:a.b:units",
        "pstar:other:units",
    ] {
        assert!(
            left.iter().any(|k| k == kept),
            "{kept} was removed: {left:?}"
        );
    }
    let listed: Vec<String> = other
        .sessions()
        .await
        .unwrap()
        .into_iter()
        .map(|(e, _)| e.session)
        .collect();
    assert_eq!(listed, ["a.b", "other"]);
}

#[tokio::test]
async fn a_malformed_redis_url_never_shows_its_password() {
    for url in [
        "redis://user:s3cret-pw@127.0.0.1:notaport/0",
        "redis://:s3cret-pw@[::1/0",
        "http://user:s3cret-pw@127.0.0.1:6379/0",
        "redis://user:s3cret-pw@127.0.0.1:6379/notadb",
        "user:s3cret-pw@127.0.0.1:6379",
        "redis://us%er:s3cret-pw@host name:1/0",
    ] {
        let err = RedisStore::connect(
            url,
            "s",
            RedisOptions {
                retry_for: Duration::from_millis(200),
                ..Default::default()
            },
        )
        .await
        .expect_err(url);
        let text = err.to_string();
        assert!(
            !text.contains("s3cret"),
            "{url}: the password shows in: {text}"
        );
    }
}

#[tokio::test]
async fn a_missing_password_says_where_to_give_it() {
    let server = RedisServer::start();
    let err = RedisStore::connect(&server.url(), "s", RedisOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoordinationError::Unauthorized(_)),
        "got {err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("PSTAR_REDIS_PASSWORD") && text.contains("PSTAR_REDIS_PASSWORD_FILE"),
        "{text}"
    );
    let wrong = RedisStore::connect(
        &server.url(),
        "s",
        RedisOptions {
            password: Some("wrong".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        wrong.to_string().contains("PSTAR_REDIS_PASSWORD"),
        "{wrong}"
    );
}

#[tokio::test]
async fn a_claimed_unit_without_a_description_means_the_session_is_lost() {
    let server = RedisServer::start();
    let s = store(&server, "wiped").await;
    let pilot = s.reserve_pilot_id().await.unwrap();
    // What a store that lost its keys but got a queue entry back (a late enqueue) holds.
    s.enqueue(pilot, &[UnitId::new(0)]).await.unwrap();
    let err = s.claim(pilot, 4, Duration::ZERO).await.unwrap_err();
    assert!(matches!(err, CoordinationError::SessionLost(_)), "{err}");
    assert!(err.to_string().contains("unit.000000"), "{err}");

    // The same when the unit comes while the claim waits.
    let waiting = {
        let s = s.clone();
        tokio::spawn(async move { s.claim(pilot, 4, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.enqueue(pilot, &[UnitId::new(1)]).await.unwrap();
    let err = waiting.await.unwrap().unwrap_err();
    assert!(matches!(err, CoordinationError::SessionLost(_)), "{err}");
}

#[tokio::test]
async fn batched_withdraws_and_controls_answer_per_pilot_as_the_single_calls() {
    let server = RedisServer::start();
    let s = store(&server, "batch").await;
    s.put_units(&units(UnitId::new(0), 12)).await.unwrap();
    let id = |n: u64| UnitId::new(n);
    let (p0, p1, p2, p3) = (
        PilotId::new(0),
        PilotId::new(1),
        PilotId::new(2),
        PilotId::new(3),
    );
    s.enqueue(p0, &[0, 1, 2, 3].map(id)).await.unwrap();
    s.enqueue(p1, &[4, 5, 6, 7].map(id)).await.unwrap();
    s.enqueue(p2, &[8, 9, 10].map(id)).await.unwrap();
    // Some units are claimed already: those cannot be withdrawn.
    assert_eq!(s.claim(p0, 2, Duration::ZERO).await.unwrap().len(), 2);
    assert_eq!(s.claim(p1, 1, Duration::ZERO).await.unwrap().len(), 1);

    let got = s
        .withdraw_batch(vec![
            // Asked out of order, one claimed and one never queued: queue order back.
            (p0, Some(vec![id(3), id(1), id(2)])),
            (p1, None),
            (p2, Some(vec![id(11), id(10), id(8)])),
            (p3, None),
            (p2, Some(vec![])),
            // The same pilot twice: the second sees what the first left.
            (p0, None),
        ])
        .await
        .unwrap();
    assert_eq!(
        got,
        [
            (p0, vec![id(2), id(3)]),
            (p1, vec![id(5), id(6), id(7)]),
            (p2, vec![id(8), id(10)]),
            (p3, vec![]),
            (p2, vec![]),
            (p0, vec![]),
        ]
    );
    // What was not withdrawn is still queued, in order.
    let left = s.claim(p2, 8, Duration::ZERO).await.unwrap();
    assert_eq!(left.iter().map(|c| c.0).collect::<Vec<_>>(), [id(9)]);
    assert!(s.withdraw_batch(Vec::new()).await.unwrap().is_empty());

    // Many at once (the queue is rewritten): the rest keeps its order.
    let many: Vec<UnitId> = (100..300).map(id).collect();
    s.enqueue(p3, &many).await.unwrap();
    let odd: Vec<UnitId> = many
        .iter()
        .rev()
        .filter(|u| u.get() % 2 == 1)
        .copied()
        .collect();
    let got = s.withdraw_batch(vec![(p3, Some(odd))]).await.unwrap();
    let want: Vec<UnitId> = many.iter().filter(|u| u.get() % 2 == 1).copied().collect();
    assert_eq!(got, [(p3, want)]);
    let even: Vec<UnitId> = many.iter().filter(|u| u.get() % 2 == 0).copied().collect();
    assert_eq!(s.withdraw(p3, None).await.unwrap(), even);

    // The single call keeps queue order too.
    s.enqueue(p3, &[4, 5, 6].map(id)).await.unwrap();
    assert_eq!(
        s.withdraw(p3, Some(&[id(6), id(4)])).await.unwrap(),
        [id(4), id(6)]
    );

    s.send_controls(vec![
        (p1, Control::CancelUnit(id(4))),
        (p2, Control::CancelPilot),
        (p1, Control::CancelPilot),
    ])
    .await
    .unwrap();
    s.send_controls(Vec::new()).await.unwrap();
    assert_eq!(
        s.recv_control(p1, Duration::from_secs(1)).await.unwrap(),
        [Control::CancelUnit(id(4)), Control::CancelPilot]
    );
    assert_eq!(
        s.recv_control(p2, Duration::from_secs(1)).await.unwrap(),
        [Control::CancelPilot]
    );
    assert!(
        s.recv_control(p0, Duration::from_millis(100))
            .await
            .unwrap()
            .is_empty()
    );
}

/// A raw connection to the test server, to write values as another pstar would.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let url = format!(
        "redis://:{}@127.0.0.1:{}/0",
        server.password(),
        server.port()
    );
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn look(server: &RedisServer, session: &str) -> Result<Arc<RedisStore>, CoordinationError> {
    let options = RedisOptions {
        register: false,
        ..options(server)
    };
    RedisStore::connect(&server.url(), session, options).await
}

#[tokio::test]
async fn a_session_written_in_another_store_format_is_refused_when_opened() {
    let server = RedisServer::start();
    let mut c = raw(&server).await;
    // A session as pstar wrote it before its values carried a format: plain JSON.
    let unit = serde_json::to_string(&ComputeUnitDescription::new("/bin/true")).unwrap();
    let events = serde_json::to_string(&[done(UnitId::new(0))]).unwrap();
    let entry = r#"{"session":"old","owner":"o","host":"h","created":1700000000.0}"#;
    redis::pipe()
        .hset("pstar:sessions", "old", entry)
        .hset("pstar:old:units", 0, &unit)
        .cmd("XADD")
        .arg("pstar:old:events")
        .arg("*")
        .arg("e")
        .arg(&events)
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    // One a newer pstar wrote.
    redis::pipe()
        .set("pstar:new:format", 99)
        .hset("pstar:new:units", 0, format!("v99:{unit}"))
        .query_async::<()>(&mut c)
        .await
        .unwrap();

    for (session, found) in [("old", "v0 (unversioned)"), ("new", "v99")] {
        let err = look(&server, session).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("session `{session}`"))
                && text.contains(&format!("store format {found}"))
                && text.contains("this pstar reads v1"),
            "{text}"
        );
        assert!(
            matches!(err, CoordinationError::Incompatible { .. }),
            "{err:?}"
        );
    }
    // A session the store does not hold is not refused for its format (whoever opens it
    // says it is missing), and its registry is still listed whatever the formats.
    look(&server, "absent").await.unwrap();
    // One whose keys were deleted, some written again since by whoever still worked in
    // it: lost, not of another format.
    let current = store(&server, "flushed").await;
    redis::cmd("DEL")
        .arg("pstar:flushed:format")
        .arg("pstar:sessions")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    current.publish(vec![done(UnitId::new(0))]).await.unwrap();
    let err = look(&server, "flushed").await.unwrap_err();
    assert!(matches!(err, CoordinationError::SessionLost(_)), "{err:?}");
    let entry = r#"{"session":"old","owner":"o","host":"h","created":1700000000.0}"#;
    redis::cmd("HSET")
        .arg("pstar:sessions")
        .arg("old")
        .arg(entry)
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    let registry = RedisStore::connect_registry(&server.url(), options(&server))
        .await
        .unwrap();
    let listed: Vec<String> = registry
        .sessions()
        .await
        .unwrap()
        .into_iter()
        .map(|(e, _)| e.session)
        .collect();
    assert_eq!(listed, ["old"]);
}

/// What an error says, with a check that it is the store-format one.
fn incompatible(err: CoordinationError) -> String {
    assert!(
        matches!(err, CoordinationError::Incompatible { .. }),
        "{err:?}"
    );
    err.to_string()
}

#[tokio::test]
async fn a_value_of_another_store_format_is_refused_where_it_is_read() {
    let server = RedisServer::start();
    let s = store(&server, "cur").await;
    let pilot = s.reserve_pilot_id().await.unwrap();
    s.put_units(&units(UnitId::new(0), 2)).await.unwrap();
    s.publish(vec![done(UnitId::new(0))]).await.unwrap();
    let mut c = raw(&server).await;
    // What a newer pstar (format 2) or an older one (no format) would have left in it.
    let unit = serde_json::to_string(&ComputeUnitDescription::new("/bin/true")).unwrap();
    let record = PilotRecord {
        id: pilot,
        description: PilotComputeDescription::default(),
        sandbox: "/tmp/x".into(),
        job: None,
        agent: Default::default(),
        restart_of: None,
    };
    redis::pipe()
        .hset("pstar:cur:units", 1, format!("v2:{unit}"))
        .hset(
            "pstar:cur:pilots",
            pilot.get(),
            serde_json::to_string(&record).unwrap(),
        )
        .rpush(format!("pstar:cur:control:{}", pilot.get()), "v2:\x00")
        .rpush(format!("pstar:cur:queue:{}", pilot.get()), 1)
        .cmd("XADD")
        .arg("pstar:cur:events")
        .arg("*")
        .arg("e")
        .arg("v2:whatever a newer pstar writes")
        .query_async::<()>(&mut c)
        .await
        .unwrap();

    let text = incompatible(s.claim(pilot, 4, Duration::ZERO).await.unwrap_err());
    assert_eq!(
        text,
        "unit.000001's description in session `cur` was written in pstar store format v2; \
         this pstar reads v1"
    );
    let text = incompatible(s.all_units().await.unwrap_err());
    assert!(text.contains("unit.000001's description"), "{text}");
    let text = incompatible(s.pilot(pilot).await.unwrap_err());
    assert_eq!(
        text,
        "pilot.0000's record in session `cur` was written in pstar store format v0 \
         (unversioned); this pstar reads v1"
    );
    incompatible(s.all_pilots().await.unwrap_err());
    let text = incompatible(s.recv_control(pilot, Duration::ZERO).await.unwrap_err());
    assert!(text.contains("a control message for pilot.0000"), "{text}");
    let text = incompatible(s.history().await.unwrap_err());
    assert!(
        text.contains("event batch") && text.contains("v2"),
        "{text}"
    );
    // A follower gets the events before it, then the error: it never goes on without it.
    let mut replay = s.subscribe_from_start().await.unwrap();
    let mut seen = 0;
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(20), replay.next_batch()).await {
            Ok(Some(Ok(batch))) => seen += batch.len(),
            Ok(Some(Err(e))) => break e,
            other => panic!("the subscription ended without the error: {other:?}"),
        }
    };
    assert_eq!(seen, 1);
    assert!(incompatible(err).contains("event batch"));

    // The registry entry carries the format too.
    let entry = r#"{"format":3,"session":"cur","owner":"o","host":"h","created":1.0}"#;
    redis::cmd("HSET")
        .arg("pstar:sessions")
        .arg("cur")
        .arg(entry)
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    let text = incompatible(s.session_entry().await.unwrap_err());
    assert!(
        text.contains("registry entry of session `cur`") && text.contains("format v3"),
        "{text}"
    );
}

#[tokio::test]
async fn every_stored_value_round_trips_in_the_current_store_format() {
    let server = RedisServer::start();
    let s = store(&server, "trip").await;
    let at = Timestamp::from_micros(1_700_000_000_250_000);
    let (p0, p1) = (PilotId::new(0), PilotId::new(1));
    let unit = |n: u64| UnitId::new(n);
    let events = vec![
        Event::Unit(UnitEvent {
            unit: unit(0),
            pilot: None,
            state: UnitState::Scheduled,
            at,
            exit_code: None,
            detail: None,
            lost_run: None,
            failed_run: false,
            result: None,
        }),
        Event::Unit(UnitEvent {
            unit: unit(1),
            pilot: Some(p1),
            state: UnitState::Failed,
            at,
            exit_code: Some(-9),
            detail: Some("lost with pilot.0001: \"ü\"".into()),
            lost_run: Some(pstar_coordination::LostRun {
                attempt: 2,
                of: 3,
                reason: "lost with pilot.0001: \"ü\"".into(),
            }),
            failed_run: false,
            result: None,
        }),
        Event::Pilot(PilotEvent {
            pilot: p0,
            state: PilotState::Running,
            at,
            detail: None,
        }),
        Event::Pilot(PilotEvent {
            pilot: p1,
            state: PilotState::Failed,
            at,
            detail: Some("walltime".into()),
        }),
        Event::PilotDraining { pilot: p0, at },
        Event::Resumed {
            token: u64::MAX,
            at,
        },
        Event::CancelRequested {
            target: CancelTarget::Units(vec![unit(0), unit(1)]),
            reason: "by hand".into(),
            at,
        },
        Event::CancelRequested {
            target: CancelTarget::Pilot(p1),
            reason: String::new(),
            at,
        },
        Event::CancelRequested {
            target: CancelTarget::Session,
            reason: "r".into(),
            at,
        },
    ];
    s.publish(events.clone()).await.unwrap();
    let mut full = ComputeUnitDescription::new("/bin/sh")
        .with_arguments(["-c", "echo $X"])
        .with_cores(3);
    full.name = Some("n".into());
    full.environment.insert("X".into(), "1".into());
    full.time_request = Some(Duration::from_secs(90));
    full.pilot = Some(p1);
    full.mpi = true;
    full.tags = vec!["t".into()];
    let descriptions = vec![
        (unit(0), Arc::new(ComputeUnitDescription::new("/bin/true"))),
        (unit(1), Arc::new(full)),
    ];
    s.put_units(&descriptions).await.unwrap();
    let mut described = PilotComputeDescription {
        cores: 16,
        nodes: Some(2),
        walltime: Duration::from_secs(5400),
        queue: Some("q".into()),
        scheduler_options: vec!["--x".into()],
        tunnel: true,
        ..Default::default()
    };
    described.environment.insert("A".into(), "b".into());
    let records = vec![
        PilotRecord {
            id: p0,
            description: PilotComputeDescription::default(),
            sandbox: "/tmp/a".into(),
            job: None,
            agent: Default::default(),
            restart_of: None,
        },
        PilotRecord {
            id: p1,
            description: described,
            sandbox: "/tmp/b".into(),
            job: Some("slurm:42".into()),
            agent: pstar_model::AgentSettings {
                drain_margin: Some(std::time::Duration::from_secs(90)),
                ..Default::default()
            },
            restart_of: Some(p0),
        },
    ];
    for r in &records {
        s.put_pilot(r.clone()).await.unwrap();
    }
    let controls = vec![Control::CancelUnit(unit(1)), Control::CancelPilot];
    s.send_controls(controls.iter().map(|c| (p1, c.clone())).collect())
        .await
        .unwrap();

    // Read back by another connection, as an agent or `pstar status` would.
    let other = look(&server, "trip").await.unwrap();
    assert_eq!(other.history().await.unwrap(), events);
    let mut replay = other.subscribe_from_start().await.unwrap();
    let replayed = replay.next_batch().await.unwrap().unwrap();
    assert_eq!(&replayed[..], &events[..]);
    assert_eq!(other.all_units().await.unwrap(), descriptions);
    assert_eq!(other.all_pilots().await.unwrap(), records);
    assert_eq!(other.pilot(p1).await.unwrap(), records[1]);
    assert_eq!(
        other
            .recv_control(p1, Duration::from_secs(1))
            .await
            .unwrap(),
        controls
    );
    other.enqueue(p0, &[unit(1)]).await.unwrap();
    let claimed = other.claim(p0, 4, Duration::ZERO).await.unwrap();
    assert_eq!(claimed, descriptions[1..]);
    assert_eq!(other.session_entry().await.unwrap().session, "trip");
}

/// A unit whose stored description cannot be read (written by hand into the store, or by
/// someone holding its password) is out of its queue once claimed: it fails on the
/// stream with the reason, and the units claimed with it are handed out as usual. It
/// never waits for ever, half claimed.
#[tokio::test]
async fn a_claimed_unit_whose_description_cannot_be_read_fails_with_the_reason() {
    let server = RedisServer::start();
    let s = store(&server, "bad").await;
    let pilot = s.reserve_pilot_id().await.unwrap();
    s.put_units(&units(UnitId::new(0), 2)).await.unwrap();
    let mut c = raw(&server).await;
    redis::pipe()
        .hset("pstar:bad:units", 1, "v1:{\"executable\": 42}")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    s.enqueue(pilot, &[UnitId::new(0), UnitId::new(1)])
        .await
        .unwrap();
    let mut events = s.subscribe_from_start().await.unwrap();
    let claimed = s.claim(pilot, 4, Duration::ZERO).await.unwrap();
    assert_eq!(
        claimed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [UnitId::new(0)]
    );
    let batch = tokio::time::timeout(Duration::from_secs(10), events.next_batch())
        .await
        .expect("an event in time")
        .expect("a batch")
        .expect("no error");
    match &batch[..] {
        [Event::Unit(e)] => {
            assert_eq!(
                (e.unit, e.pilot, e.state),
                (UnitId::new(1), Some(pilot), UnitState::Failed)
            );
            let detail = e.detail.as_deref().unwrap_or_default();
            assert!(
                detail.starts_with("its description in the coordination store cannot be read"),
                "{detail}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A Redis without any pstar session lists none (an empty pipeline was refused).
#[tokio::test]
async fn an_empty_redis_lists_no_session() {
    let server = RedisServer::start();
    let looking = RedisOptions {
        register: false,
        ..options(&server)
    };
    let s = RedisStore::connect(&server.url(), "nothing-here", looking)
        .await
        .unwrap();
    assert_eq!(s.sessions().await.unwrap(), Vec::new());
}

fn lease(token: u64) -> pstar_coordination::AgentLease {
    pstar_coordination::AgentLease {
        token,
        host: "here".into(),
        pid: 100 + token as u32,
        since: Timestamp::now(),
    }
}

/// One live agent per pilot, as every store keeps it.
async fn leases_hold_one_agent_per_pilot(s: Arc<dyn Coordination>) {
    let (pilot, other_pilot) = (PilotId::new(0), PilotId::new(1));
    let (a, b) = (lease(1), lease(2));
    let long = Duration::from_secs(60);
    // Free: taken. Held by another: refused, naming the holder. Held by the asker: renewed.
    assert_eq!(s.hold_agent_lease(pilot, &a, long).await.unwrap(), None);
    assert_eq!(
        s.hold_agent_lease(pilot, &b, long).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(s.hold_agent_lease(pilot, &a, long).await.unwrap(), None);
    assert_eq!(
        s.hold_agent_lease(other_pilot, &b, long).await.unwrap(),
        None
    );
    // Only its holder releases it.
    s.release_agent_lease(pilot, &b).await.unwrap();
    assert_eq!(
        s.hold_agent_lease(pilot, &b, long).await.unwrap(),
        Some(a.clone())
    );
    s.release_agent_lease(pilot, &a).await.unwrap();
    assert_eq!(s.hold_agent_lease(pilot, &b, long).await.unwrap(), None);
    // One not renewed in time is free.
    let short = Duration::from_millis(200);
    assert_eq!(
        s.hold_agent_lease(other_pilot, &b, short).await.unwrap(),
        None
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while s
        .hold_agent_lease(other_pilot, &a, long)
        .await
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        s.hold_agent_lease(other_pilot, &b, long).await.unwrap(),
        Some(a)
    );
}

#[tokio::test]
async fn an_agent_lease_is_held_by_one_agent_at_a_time() {
    let server = RedisServer::start();
    let s = store(&server, "leases").await;
    leases_hold_one_agent_per_pilot(s.clone()).await;
    leases_hold_one_agent_per_pilot(pstar_coordination::Embedded::new("leases")).await;
    // A lease of another store format is refused, not taken over.
    server.cli(&["SET", "pstar:leases:lease:7", "v9:{}"]);
    let err = s
        .hold_agent_lease(PilotId::new(7), &lease(1), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoordinationError::Incompatible { .. }),
        "{err}"
    );
}
