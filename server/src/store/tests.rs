//! One test suite for both engines: each test runs on SQLite and on
//! PostgreSQL (a database of its own, see [`ScratchDatabase`]).

use std::time::Duration;

use chrono::Utc;

use super::*;
use crate::call::{CallEvent, CallId, CallRecord, CallStatus, EventKind};
use crate::config::{DatabaseLocation, Secret};

pub(crate) fn record(id: &CallId) -> CallRecord {
    CallRecord {
        call_id: id.clone(),
        to: "+15550100".into(),
        emulated: true,
        instructions: "i".into(),
        voice: "v".into(),
        ..CallRecord::for_tests()
    }
}

/// Appends `kinds` after the record's last event, as the hub stamps them.
fn append(kinds: Vec<EventKind>) -> impl FnOnce(&mut CallRecord) -> Vec<CallEvent> + Send + 'static {
    move |rec| {
        kinds
            .into_iter()
            .map(|kind| {
                rec.apply(&kind, Utc::now());
                CallEvent {
                    sequence: rec.event_count,
                    time: Utc::now(),
                    kind,
                }
            })
            .collect()
    }
}

fn dtmf(d: &str) -> EventKind {
    EventKind::Dtmf { digit: d.into() }
}

/// Where a test's store lives; `open` opens another connection to it (a
/// second replica, or a second process on the SQLite file).
enum Place {
    Sqlite(std::path::PathBuf),
    Postgres(Box<ScratchDatabase>),
}

impl Place {
    async fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("va-store-{}", uuid::Uuid::new_v4()));
        Self::Sqlite(dir.join("calls.db"))
    }

    async fn postgres() -> Self {
        Self::Postgres(Box::new(ScratchDatabase::create().await))
    }

    fn location(&self) -> DatabaseLocation {
        match self {
            Self::Sqlite(path) => DatabaseLocation::File(path.clone()),
            Self::Postgres(db) => DatabaseLocation::Postgres(Secret::new(db.url.clone())),
        }
    }

    async fn open(&self) -> Store {
        Store::open(&self.location()).await.unwrap()
    }

    async fn remove(self) {
        match self {
            Self::Sqlite(path) => {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
            Self::Postgres(db) => (*db).drop_database().await,
        }
    }
}

/// Runs `$name(place)` once per engine.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let place = super::Place::sqlite().await;
                super::$name(&place).await;
                place.remove().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let place = super::Place::postgres().await;
                super::$name(&place).await;
                place.remove().await;
            }
        }
    };
}

both!(an_update_stores_the_record_and_its_events_together);
async fn an_update_stores_the_record_and_its_events_together(place: &Place) {
    let store = place.open().await;
    let id = CallId::new();
    assert!(matches!(
        store.insert_call(record(&id), None).await.unwrap(),
        Inserted::New
    ));
    let (rec, events) = store.update(&id, append(vec![dtmf("1"), dtmf("2")])).await.unwrap();
    assert_eq!(rec.event_count, 2);
    assert_eq!(events.iter().map(|e| e.sequence).collect::<Vec<_>>(), [1, 2]);
    let evs = store.events_after(&id, 1, 10).await.unwrap();
    assert_eq!(evs.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![2]);
    assert_eq!(evs[0].kind, dtmf("2"));
    assert_eq!(store.get_call(&id).await.unwrap().unwrap().event_count, 2);
    // A writer that repeats a sequence is refused, and nothing of it is kept.
    let repeat = |rec: &mut CallRecord| {
        rec.to = "+15550199".into();
        vec![CallEvent {
            sequence: 2,
            time: Utc::now(),
            kind: dtmf("9"),
        }]
    };
    assert!(store.update(&id, repeat).await.is_err(), "sequence 2 twice");
    assert_eq!(store.get_call(&id).await.unwrap().unwrap().to, "+15550100");
    assert!(matches!(
        store.update(&CallId::new(), append(vec![])).await,
        Err(StoreError::NotFound)
    ));
}

both!(concurrent_writers_on_two_connections_keep_the_log_gapless);
async fn concurrent_writers_on_two_connections_keep_the_log_gapless(place: &Place) {
    // Two stores on one database: two replicas (or two processes on one file).
    let (a, b) = (place.open().await, place.open().await);
    let id = CallId::new();
    a.insert_call(record(&id), None).await.unwrap();
    const N: usize = 60;
    let writers: Vec<_> = (0..N)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = id.clone();
            tokio::spawn(async move { store.update(&id, append(vec![dtmf(&(i % 10).to_string())])).await })
        })
        .collect();
    for w in writers {
        w.await.unwrap().unwrap();
    }
    let events = b.events_after(&id, 0, 1000).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=N as u64).collect::<Vec<_>>()
    );
    assert_eq!(a.get_call(&id).await.unwrap().unwrap().event_count, N as u64);
}

both!(list_pages_newest_first);
async fn list_pages_newest_first(place: &Place) {
    let store = place.open().await;
    let mut ids = vec![];
    for _ in 0..5 {
        let id = CallId::new();
        store.insert_call(record(&id), None).await.unwrap();
        ids.push(id);
    }
    let p1 = store.list_calls(2, None).await.unwrap();
    assert_eq!(
        p1.calls.iter().map(|c| c.call_id.clone()).collect::<Vec<_>>(),
        vec![ids[4].clone(), ids[3].clone()]
    );
    let p2 = store.list_calls(2, p1.next).await.unwrap();
    assert_eq!(p2.calls[0].call_id, ids[2]);
    let p3 = store.list_calls(2, p2.next).await.unwrap();
    assert_eq!(p3.calls.len(), 1);
    assert!(p3.next.is_none());
}

both!(a_request_key_makes_one_call);
async fn a_request_key_makes_one_call(place: &Place) {
    let (a, b) = (place.open().await, place.open().await);
    let key = |fingerprint: &str| RequestKey {
        id: "req-1".into(),
        fingerprint: fingerprint.into(),
    };
    // The same key on two connections at once: one call.
    let (first, second) = (CallId::new(), CallId::new());
    let (x, y) = tokio::join!(
        a.insert_call(record(&first), Some(key("f1"))),
        b.insert_call(record(&second), Some(key("f1")))
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let winner = match (&x, &y) {
        (Inserted::New, Inserted::Existing(rec)) => {
            assert_eq!(rec.call_id, first);
            first
        }
        (Inserted::Existing(rec), Inserted::New) => {
            assert_eq!(rec.call_id, second);
            second
        }
        other => panic!("not one new call and one retry: {other:?}"),
    };
    assert_eq!(a.list_calls(10, None).await.unwrap().calls.len(), 1);
    // Another request under the key is refused, naming the call that has it.
    match b.insert_call(record(&CallId::new()), Some(key("f2"))).await.unwrap() {
        Inserted::Mismatch(id) => assert_eq!(id, winner),
        other => panic!("{other:?}"),
    }
    // Calls without a key are never confused.
    for _ in 0..2 {
        assert!(matches!(
            a.insert_call(record(&CallId::new()), None).await.unwrap(),
            Inserted::New
        ));
    }
}

both!(media_is_claimed_once_and_leases_expire_to_one_survivor);
async fn media_is_claimed_once_and_leases_expire_to_one_survivor(place: &Place) {
    let (a, b) = (place.open().await, place.open().await);
    let lease = |owner: &str, ttl_ms: u64| Lease {
        owner: owner.into(),
        ttl: Duration::from_millis(ttl_ms),
    };
    let id = CallId::new();
    a.insert_call(record(&id), None).await.unwrap();
    let (la, lb) = (lease("A", 200), lease("B", 200));
    let (x, y) = tokio::join!(a.claim_media(&id, &la), b.claim_media(&id, &lb));
    assert!(x.unwrap() ^ y.unwrap(), "exactly one claim wins");
    assert!(
        !a.claim_media(&id, &lease("A", 200)).await.unwrap(),
        "never claimed twice"
    );
    // Renewed: not expired.
    a.renew_leases(std::slice::from_ref(&id), &lease("A", 60_000))
        .await
        .unwrap();
    b.renew_leases(std::slice::from_ref(&id), &lease("B", 60_000))
        .await
        .unwrap();
    assert!(b.take_expired(&lease("C", 60_000), 10).await.unwrap().is_empty());
    // Not renewed (a tiny ttl): expired, and taken by exactly one sweeper.
    a.renew_leases(std::slice::from_ref(&id), &lease("A", 1)).await.unwrap();
    b.renew_leases(std::slice::from_ref(&id), &lease("B", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (lc, ld) = (lease("C", 60_000), lease("D", 60_000));
    let (x, y) = tokio::join!(a.take_expired(&lc, 10), b.take_expired(&ld, 10));
    let taken: Vec<CallId> = x.unwrap().into_iter().chain(y.unwrap()).map(|r| r.call_id).collect();
    assert_eq!(taken, std::slice::from_ref(&id));
    // The old owner's renewal no longer extends it: the call is the taker's.
    a.renew_leases(std::slice::from_ref(&id), &lease("A", 1)).await.unwrap();
    b.renew_leases(std::slice::from_ref(&id), &lease("B", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(a.take_expired(&lease("E", 60_000), 10).await.unwrap().is_empty());
    // Calls nobody claimed (queued, ringing) have no lease to expire; ended calls are never taken.
    let ringing = CallId::new();
    a.insert_call(record(&ringing), None).await.unwrap();
    let ended = CallId::new();
    a.insert_call(record(&ended), None).await.unwrap();
    a.claim_media(&ended, &lease("A", 1)).await.unwrap();
    a.update(&ended, |r| {
        r.status = CallStatus::Completed;
        vec![]
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(a.take_expired(&lease("F", 60_000), 10).await.unwrap().is_empty());
    assert!(
        !a.claim_media(&ended, &lease("A", 1)).await.unwrap(),
        "an ended call has no media to claim"
    );
}

both!(a_new_stream_generation_frees_the_media_claim_in_its_commit);
async fn a_new_stream_generation_frees_the_media_claim_in_its_commit(place: &Place) {
    let (a, b) = (place.open().await, place.open().await);
    let lease = |owner: &str| Lease {
        owner: owner.into(),
        ttl: Duration::from_secs(60),
    };
    let id = CallId::new();
    a.insert_call(record(&id), None).await.unwrap();
    assert!(a.claim_media(&id, &lease("A")).await.unwrap());
    // An edit that leaves the generation alone frees nothing.
    b.update(&id, |r| {
        r.end_reason.clear();
        vec![]
    })
    .await
    .unwrap();
    assert!(!b.claim_media(&id, &lease("B")).await.unwrap());
    // A resume: the claim is free for any replica, and the record names
    // the replica that held it.
    let (rec, _) = b
        .update(&id, |r| {
            crate::call::lifecycle::resume_stream(r, "fresh".into(), chrono::Utc::now());
            vec![]
        })
        .await
        .unwrap();
    assert_eq!(rec.stream_generation, 1);
    assert_eq!(rec.resuming.as_ref().map(|r| r.from.as_str()), Some("A"));
    let stored = a.get_call(&id).await.unwrap().unwrap();
    assert_eq!(stored.resuming, rec.resuming, "stored as returned");
    // The old owner's renewal no longer holds it; exactly one new stream claims it.
    a.renew_leases(std::slice::from_ref(&id), &lease("A")).await.unwrap();
    let (la, lb) = (lease("A2"), lease("B"));
    let (x, y) = tokio::join!(a.claim_media(&id, &la), b.claim_media(&id, &lb));
    assert!(x.unwrap() ^ y.unwrap(), "exactly one claim wins");
}

both!(calls_left_queued_are_taken_by_one_survivor);
async fn calls_left_queued_are_taken_by_one_survivor(place: &Place) {
    let (a, b) = (place.open().await, place.open().await);
    let lease = |owner: &str| Lease {
        owner: owner.into(),
        ttl: Duration::from_secs(60),
    };
    let queued = CallId::new();
    a.insert_call(record(&queued), None).await.unwrap();
    // Dialled (a provider id): the provider drives it now, never taken.
    let dialled = CallId::new();
    a.insert_call(record(&dialled), None).await.unwrap();
    a.update(&dialled, |r| {
        r.provider_call_id = "CA0123".into();
        vec![]
    })
    .await
    .unwrap();
    // Not old enough yet.
    assert!(
        a.take_unplaced(&lease("A"), Duration::from_secs(3600), 10)
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (la, lb) = (lease("A"), lease("B"));
    let (x, y) = tokio::join!(
        a.take_unplaced(&la, Duration::from_millis(1), 10),
        b.take_unplaced(&lb, Duration::from_millis(1), 10)
    );
    let taken: Vec<CallId> = x.unwrap().into_iter().chain(y.unwrap()).map(|r| r.call_id).collect();
    assert_eq!(
        taken,
        std::slice::from_ref(&queued),
        "taken once, and only the undialled call"
    );
    assert!(
        a.take_unplaced(&lease("C"), Duration::from_millis(1), 10)
            .await
            .unwrap()
            .is_empty(),
        "never taken twice"
    );
    // Its media can no longer be claimed: the taker ends it.
    assert!(!a.claim_media(&queued, &lease("D")).await.unwrap());
}

both!(replicas_starting_at_once_migrate_once);
async fn replicas_starting_at_once_migrate_once(place: &Place) {
    let location = place.location();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let location = location.clone();
            tokio::spawn(async move { Store::open(&location).await.map(|_| ()) })
        })
        .collect();
    for o in opens {
        o.await.unwrap().unwrap();
    }
    let store = place.open().await;
    let id = CallId::new();
    store.insert_call(record(&id), None).await.unwrap();
    store.close().await.unwrap();
    // Reopened: the call is there, live.
    let store = place.open().await;
    assert!(store.get_call(&id).await.unwrap().is_some());
    assert_eq!(store.unfinished_calls().await.unwrap().len(), 1);
    store.ping().await.unwrap();
}

#[tokio::test]
async fn notices_reach_every_replica_in_commit_order() {
    let place = Place::postgres().await;
    let (a, b) = (place.open().await, place.open().await);
    let stop = tokio_util::sync::CancellationToken::new();
    let mut heard = b.notices(stop.clone()).expect("PostgreSQL carries notices");
    // The LISTEN is up once a notice of its own arrives.
    loop {
        a.notify(&Notice::Resync).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(200), heard.recv()).await {
            Ok(Some(Notice::Resync)) => break,
            Ok(other) => panic!("{other:?}"),
            Err(_) => continue,
        }
    }
    let id = CallId::new();
    a.insert_call(record(&id), None).await.unwrap();
    a.update(&id, append(vec![dtmf("1"), dtmf("2")])).await.unwrap();
    a.update(&id, append(vec![])).await.unwrap();
    a.notify(&Notice::StopMedia(id.clone())).await.unwrap();
    a.update(&id, |r| {
        let ev = crate::call::lifecycle::end(r, crate::call::lifecycle::Ending::Failed, "test");
        append(ev)(r)
    })
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(heard.recv().await.unwrap());
    }
    assert_eq!(
        got,
        [
            Notice::Committed {
                call_id: id.clone(),
                sequence: 2,
                terminal: false
            },
            Notice::StopMedia(id.clone()),
            Notice::Committed {
                call_id: id.clone(),
                sequence: 3,
                terminal: true
            },
        ],
        "an update without events says nothing"
    );
    stop.cancel();
    place.remove().await;
}

#[test]
fn notice_payloads_round_trip_and_junk_is_refused() {
    let id = CallId::new();
    for n in [
        Notice::Committed {
            call_id: id.clone(),
            sequence: 42,
            terminal: true,
        },
        Notice::StopMedia(id.clone()),
        Notice::Resync,
    ] {
        assert_eq!(parse_notice(&notice_payload(&n)), Some(n));
    }
    for junk in [
        "",
        "c",
        "c x 1 0",
        &format!("c {id} -1 0"),
        &format!("s {id} extra"),
        "z",
    ] {
        assert_eq!(parse_notice(junk), None, "{junk:?}");
    }
}

both!(filtered_listings_page_through_exactly_the_matching_calls);
async fn filtered_listings_page_through_exactly_the_matching_calls(place: &Place) {
    let store = place.open().await;
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
        .unwrap()
        .to_utc();
    // 12 calls, 0.5 s apart (sub-second times, to check the text
    // comparison), alternately to two numbers, every third one busy.
    let mut all = Vec::new();
    for i in 0..12i64 {
        let id = CallId::new();
        let mut rec = record(&id);
        rec.to = if i % 2 == 0 { "+15550100" } else { "+15550199" }.into();
        rec.status = if i % 3 == 0 {
            CallStatus::Busy
        } else {
            CallStatus::Completed
        };
        rec.created_at = t0 + chrono::Duration::milliseconds(500 * i);
        store.insert_call(rec.clone(), None).await.unwrap();
        all.push(rec);
    }
    let cases = [
        CallFilter::default(),
        CallFilter {
            oldest_first: true,
            ..Default::default()
        },
        CallFilter {
            statuses: vec![CallStatus::Busy],
            ..Default::default()
        },
        CallFilter {
            statuses: vec![CallStatus::Busy, CallStatus::Failed],
            to: Some("+15550100".into()),
            oldest_first: true,
            ..Default::default()
        },
        CallFilter {
            // From 10:00:01.000 (call 2) to before 10:00:04.500 (call 9).
            created_after: Some(t0 + chrono::Duration::milliseconds(1000)),
            created_before: Some(t0 + chrono::Duration::milliseconds(4500)),
            ..Default::default()
        },
        CallFilter {
            created_after: Some(t0 + chrono::Duration::milliseconds(1250)),
            to: Some("+15550199".into()),
            oldest_first: true,
            ..Default::default()
        },
        CallFilter {
            to: Some("+15550000".into()),
            ..Default::default()
        },
    ];
    for filter in cases {
        let mut expected: Vec<CallId> = all
            .iter()
            .filter(|r| filter.statuses.is_empty() || filter.statuses.contains(&r.status))
            .filter(|r| filter.to.as_ref().is_none_or(|to| &r.to == to))
            .filter(|r| filter.created_after.is_none_or(|t| r.created_at >= t))
            .filter(|r| filter.created_before.is_none_or(|t| r.created_at < t))
            .map(|r| r.call_id.clone())
            .collect();
        if !filter.oldest_first {
            expected.reverse();
        }
        // Page sizes that do and do not divide the count.
        for size in [1, 2, 5, 100] {
            let mut got = Vec::new();
            let mut cursor = None;
            loop {
                let page = store.list_calls_matching(&filter, size, cursor).await.unwrap();
                assert!(page.calls.len() <= size);
                got.extend(page.calls.into_iter().map(|c| c.call_id));
                match page.next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
            assert_eq!(got, expected, "{filter:?}, pages of {size}");
        }
    }
}

fn status(s: CallStatus) -> EventKind {
    EventKind::Status {
        status: s,
        detail: String::new(),
    }
}

fn attempt(state: DeliveryState, after: Duration) -> AttemptRecord {
    AttemptRecord {
        state,
        http_status: if state == DeliveryState::Delivered { 204 } else { 503 },
        error: if state == DeliveryState::Delivered {
            String::new()
        } else {
            "the receiver answered HTTP 503".into()
        },
        next_attempt_at: Utc::now() + chrono::Duration::from_std(after).unwrap(),
    }
}

const LONG: Duration = Duration::from_secs(60);

both!(outcome_webhooks_are_stored_with_their_change_and_handed_out_in_order);
async fn outcome_webhooks_are_stored_with_their_change_and_handed_out_in_order(place: &Place) {
    let store = place.open().await;
    let id = CallId::new();
    let rec = CallRecord {
        webhooks: vec!["http://127.0.0.1:9/a".into(), "http://127.0.0.1:9/b?t=1".into()],
        ..record(&id)
    };
    store.insert_call(rec, None).await.unwrap();
    // No status change, no message.
    store.update(&id, append(vec![dtmf("1")])).await.unwrap();
    assert!(store.deliveries(&id).await.unwrap().is_empty());
    store
        .update(&id, append(vec![status(CallStatus::Ringing)]))
        .await
        .unwrap();
    // A change that fails stores no message either.
    let repeat = |_: &mut CallRecord| {
        vec![CallEvent {
            sequence: 1,
            time: Utc::now(),
            kind: status(CallStatus::InProgress),
        }]
    };
    assert!(store.update(&id, repeat).await.is_err());
    store
        .update(
            &id,
            append(vec![
                EventKind::Transcript {
                    speaker: crate::call::Speaker::Callee,
                    text: "hi".into(),
                    interrupted: false,
                },
                status(CallStatus::Completed),
            ]),
        )
        .await
        .unwrap();
    let all = store.deliveries(&id).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|d| (d.event_type.as_str(), d.url.ends_with('a')))
            .collect::<Vec<_>>(),
        [
            ("call.status_changed", true),
            ("call.status_changed", false),
            ("call.status_changed", true),
            ("call.status_changed", false),
            ("call.ended", true),
            ("call.ended", false),
        ]
    );
    assert!(all.iter().all(|d| d.state == DeliveryState::Pending && d.attempts == 0));
    assert_eq!(all[0].message_id, all[1].message_id, "one message, two receivers");
    let ended: serde_json::Value = serde_json::from_str(&all[4].body).unwrap();
    assert_eq!(ended["data"]["transcript"][0]["text"], "hi");
    assert_eq!(store.outbox_counts().await.unwrap().pending, 6);

    // Only the oldest pending message of each URL is handed out, once.
    let first = store.claim_deliveries("w1", LONG, 10).await.unwrap();
    assert_eq!(first.iter().map(|d| d.id).collect::<Vec<_>>(), [all[0].id, all[1].id]);
    assert!(store.claim_deliveries("w2", LONG, 10).await.unwrap().is_empty());
    assert!(
        !store
            .record_attempt(first[0].id, "w2", &attempt(DeliveryState::Delivered, Duration::ZERO))
            .await
            .unwrap(),
        "not w2's claim"
    );
    // a: delivered, so its next one is due; b: failed, retried later, and its
    // next waits behind it.
    assert!(
        store
            .record_attempt(first[0].id, "w1", &attempt(DeliveryState::Delivered, Duration::ZERO))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_attempt(first[1].id, "w1", &attempt(DeliveryState::Pending, LONG))
            .await
            .unwrap()
    );
    let next = store.claim_deliveries("w2", LONG, 10).await.unwrap();
    assert_eq!(next.iter().map(|d| d.id).collect::<Vec<_>>(), [all[2].id]);
    // Dead lets the next one go.
    store
        .record_attempt(next[0].id, "w2", &attempt(DeliveryState::Dead, Duration::ZERO))
        .await
        .unwrap();
    let next = store.claim_deliveries("w2", LONG, 10).await.unwrap();
    assert_eq!(next.iter().map(|d| d.id).collect::<Vec<_>>(), [all[4].id]);
    let shown = store.deliveries(&id).await.unwrap();
    assert_eq!(
        shown.iter().map(|d| (d.state, d.attempts)).collect::<Vec<_>>(),
        [
            (DeliveryState::Delivered, 1),
            (DeliveryState::Pending, 1),
            (DeliveryState::Dead, 1),
            (DeliveryState::Pending, 0),
            (DeliveryState::Pending, 0),
            (DeliveryState::Pending, 0),
        ]
    );
    assert_eq!(
        (shown[1].last_status, shown[1].last_error.as_str()),
        (503, "the receiver answered HTTP 503")
    );
    assert_eq!(
        store.outbox_counts().await.unwrap(),
        OutboxCounts { pending: 4, dead: 1 }
    );
    // A claim whose lease expired is handed out again (its worker died).
    let short = store.claim_deliveries("w3", Duration::ZERO, 10).await;
    assert!(short.unwrap().is_empty(), "a: its ended message is w2's; b: not due");
    drop(store);
    // The outbox outlives the process.
    let again = place.open().await;
    assert_eq!(again.deliveries(&id).await.unwrap(), shown);
}

both!(an_expired_claim_is_handed_out_again);
async fn an_expired_claim_is_handed_out_again(place: &Place) {
    let store = place.open().await;
    let id = CallId::new();
    let rec = CallRecord {
        webhooks: vec!["http://127.0.0.1:9/a".into()],
        ..record(&id)
    };
    store.insert_call(rec, None).await.unwrap();
    store
        .update(&id, append(vec![status(CallStatus::Ringing)]))
        .await
        .unwrap();
    let first = store.claim_deliveries("dead-worker", Duration::ZERO, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = store.claim_deliveries("w2", LONG, 10).await.unwrap();
    assert_eq!(again.iter().map(|d| d.id).collect::<Vec<_>>(), [first[0].id]);
    assert!(
        !store
            .record_attempt(
                first[0].id,
                "dead-worker",
                &attempt(DeliveryState::Delivered, Duration::ZERO)
            )
            .await
            .unwrap(),
        "the claim moved on"
    );
}

both!(workers_on_two_connections_never_claim_one_delivery_twice);
async fn workers_on_two_connections_never_claim_one_delivery_twice(place: &Place) {
    let (a, b) = (place.open().await, place.open().await);
    let mut ids = Vec::new();
    for _ in 0..20 {
        let id = CallId::new();
        let rec = CallRecord {
            webhooks: vec!["http://127.0.0.1:9/a".into()],
            ..record(&id)
        };
        a.insert_call(rec, None).await.unwrap();
        a.update(&id, append(vec![status(CallStatus::Ringing)])).await.unwrap();
        ids.push(id);
    }
    let claim = |store: Store, owner: &'static str| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..10 {
                for d in store.claim_deliveries(owner, LONG, 3).await.unwrap() {
                    got.push(d.id);
                }
            }
            got
        })
    };
    let (x, y) = (claim(a.clone(), "x"), claim(b.clone(), "y"));
    let mut all = x.await.unwrap();
    all.extend(y.await.unwrap());
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!((n, all.len()), (20, 20), "every delivery claimed exactly once");
}
