//! The hub of live calls: every change to a call goes through here, is
//! committed to the store, and only then is broadcast to watchers. What a
//! change is, the caller decides (with [`crate::call::lifecycle`]); the hub
//! only applies it.
//!
//! Per live call there is one async mutex around its record, so events get
//! their sequence numbers and reach the store and the broadcast channel in the
//! same order. Watchers subscribe to the broadcast *before* they read history
//! from the store, and skip sequences they already sent, so nothing falls in
//! between. A watcher that falls behind (broadcast lag) re-reads the store: a
//! slow or vanished watcher never slows the call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::call::{CallEvent, CallId, CallRecord, CallStatus, ErrorCode, EventKind, lifecycle, payload_caps};
use crate::metrics::Metrics;
use crate::redact;
use crate::store::{Store, StoreError};
use crate::telephony::Telephony;

/// Events buffered per live call for watchers that are momentarily behind.
/// A call makes a few events a second at most, and a watcher that falls
/// further behind re-reads the store, so a small ring is enough; tokio
/// allocates and initialises every slot up front, so 1024 cost ~110 KiB of
/// resident memory per live call. Policy when full: **drop-oldest** (tokio's
/// broadcast lag); nothing is lost, because a lagging watcher re-reads the
/// store from its last sequence.
const BROADCAST_CAPACITY: usize = 64;
/// Events buffered per watcher stream before the watcher's own task waits.
/// Policy when full: **block** the watcher's task (only it: the call goes on
/// through the broadcast, and the store keeps what it has not sent).
const WATCH_BUFFER: usize = 64;
/// Events read from the store at once when a watcher replays history (or
/// catches up after lagging).
pub const WATCH_PAGE: usize = 256;
/// Calls hung up with the provider at once while recovering from a crash.
const RECOVER_CONCURRENCY: usize = 8;

/// A hub failure.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Unknown call.
    #[error("call not found")]
    NotFound,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct LiveCall {
    record: tokio::sync::Mutex<CallRecord>,
    tx: broadcast::Sender<CallEvent>,
    /// Cancelled when the call reaches a terminal status (or the server
    /// stops): the media bridge and every per-call task end with it.
    cancel: CancellationToken,
    /// Child of `cancel`: stops the media bridge alone (HangUpCall, end_call)
    /// while the call waits for the provider's final status.
    media: CancellationToken,
    /// Set by the first media stream's upgrade: a call has one media stream
    /// for good (see [`CallHub::claim_media`]).
    media_claimed: AtomicBool,
    /// The call's tracing span, from PlaceCall to its terminal status
    /// (docs/observability.md "Traces"); taken and closed when the call ends.
    span: Mutex<Option<tracing::Span>>,
}

/// Live calls and their event fan-out. Cheap to clone.
#[derive(Clone)]
pub struct CallHub {
    store: Store,
    live: Arc<Mutex<HashMap<CallId, Arc<LiveCall>>>>,
    shutdown: CancellationToken,
    /// Cancelled by [`CallHub::end_watchers`]: every WatchCall stream
    /// delivers what is stored and ends. Separate from `shutdown` so that
    /// the calls a shutdown ends can record how they ended first, and the
    /// watchers still see it.
    watchers_end: CancellationToken,
    /// Where ended calls are counted.
    metrics: Arc<Metrics>,
}

impl CallHub {
    /// A hub over `store`; per-call tokens are children of `shutdown`.
    pub fn new(store: Store, shutdown: CancellationToken) -> Self {
        Self::with_metrics(store, shutdown, Arc::default())
    }

    /// Like [`CallHub::new`], counting ended calls in `metrics`.
    pub fn with_metrics(store: Store, shutdown: CancellationToken, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            live: Arc::default(),
            shutdown,
            watchers_end: CancellationToken::new(),
            metrics,
        }
    }

    /// The tracing span of a live call (the parent of its media bridge's and
    /// webhooks' spans); `None` once it has ended.
    pub fn call_span(&self, id: &CallId) -> Option<tracing::Span> {
        let live = self.live_call(id)?;
        let span = live.span.lock().unwrap_or_else(|p| p.into_inner());
        span.clone()
    }

    /// One INFO line per status change, with the call's ids, the status, and
    /// (when it ends) its end reason with phone numbers masked; the count of
    /// ended calls; the same on the call's span. Every status change of
    /// every call passes here (docs/observability.md "Logs").
    fn observe(&self, record: &CallRecord, events: &[CallEvent], span: Option<&tracing::Span>) {
        for ev in events {
            let EventKind::Status { status, .. } = &ev.kind else {
                continue;
            };
            let ended = status.is_terminal();
            let reason = if ended {
                redact::numbers_in_text(&record.end_reason)
            } else {
                String::new()
            };
            let class = lifecycle::EndClass::of(*status, &record.end_reason);
            let entered = span.map(tracing::Span::enter);
            if ended {
                tracing::info!(
                    call_id = %record.call_id,
                    call_sid = %record.provider_call_id,
                    status = status.name(),
                    reason = %reason,
                    class = class.as_str(),
                    "call status changed"
                );
            } else {
                tracing::info!(
                    call_id = %record.call_id,
                    call_sid = %record.provider_call_id,
                    status = status.name(),
                    "call status changed"
                );
            }
            drop(entered);
            if let Some(span) = span {
                span.record("status", status.name());
                if !record.provider_call_id.is_empty() {
                    span.record("call_sid", record.provider_call_id.as_str());
                }
                if ended {
                    span.record("end_class", class.as_str());
                }
            }
            if ended {
                self.metrics.calls_ended.record(*status, &record.end_reason);
            }
        }
    }

    /// Ends every WatchCall stream, present and future, once it has
    /// delivered what is stored: the last step of a shutdown, after the live
    /// calls have wound up.
    pub fn end_watchers(&self) {
        self.watchers_end.cancel();
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn live_call(&self, id: &CallId) -> Option<Arc<LiveCall>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// Number of calls not yet ended.
    pub fn live_count(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Ends the calls left unfinished by a previous run: their media bridge
    /// died with that process, so nobody can carry them on. Each one the
    /// provider has (it has a provider id) is first hung up or cancelled
    /// there, or its callee would stay on a line nobody serves; then it is
    /// marked FAILED with a reason that says so. A refused hang-up is stored
    /// as an error event. Returns how many calls were ended.
    pub async fn recover(&self, telephony: &dyn Telephony) -> Result<usize, HubError> {
        use futures_util::StreamExt as _;
        let stale = self.store.unfinished_calls().await?;
        let n = stale.len();
        // A few at a time: each is a provider request (bounded by its HTTP timeout).
        let mut ended = futures_util::stream::iter(stale)
            .map(|record| self.recover_one(telephony, record))
            .buffer_unordered(RECOVER_CONCURRENCY);
        while let Some(result) = ended.next().await {
            result?;
        }
        Ok(n)
    }

    async fn recover_one(&self, telephony: &dyn Telephony, mut record: CallRecord) -> Result<(), HubError> {
        let mut events = Vec::new();
        let reason = if record.provider_call_id.is_empty() {
            // Never reached the provider: there is nothing to hang up.
            lifecycle::RESTART_REASON
        } else {
            let answered = record.status == CallStatus::InProgress;
            match telephony.hang_up(&record.provider_call_id, answered).await {
                Ok(()) => lifecycle::RESTART_HUNG_UP_REASON,
                Err(e) => {
                    tracing::warn!(call_id = %record.call_id, error = %e.message, "a call left live could not be hung up after a restart");
                    events.extend(stamp(&mut record, |_| {
                        vec![EventKind::error(
                            ErrorCode::from_provider(e.provider_code.as_deref()),
                            format!("hanging up the call after a restart failed: {}", e.message),
                        )]
                    }));
                    lifecycle::RESTART_HANG_UP_FAILED_REASON
                }
            }
        };
        events.extend(stamp(&mut record, |r| {
            lifecycle::end(r, lifecycle::Ending::Failed, reason)
        }));
        self.store.commit(record.clone(), events.clone()).await?;
        self.observe(&record, &events, None);
        Ok(())
    }

    /// Stores a new call and makes it live. Returns its cancellation token.
    pub async fn create(&self, record: CallRecord) -> Result<CancellationToken, HubError> {
        let id = record.call_id.clone();
        self.store.insert_call(record.clone()).await?;
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let cancel = self.shutdown.child_token();
        // A child of the current span (PlaceCall's), so the call is in the
        // trace of the request that placed it.
        let span = tracing::info_span!(
            "call",
            otel.name = "call",
            call_id = %id,
            backend = record.backend.as_str(),
            to = %redact::phone(&record.to),
            emulated = record.emulated,
            call_sid = tracing::field::Empty,
            status = tracing::field::Empty,
            end_class = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        crate::telemetry::record_trace_id(&span);
        let live = Arc::new(LiveCall {
            record: tokio::sync::Mutex::new(record),
            tx,
            media: cancel.child_token(),
            cancel: cancel.clone(),
            media_claimed: AtomicBool::new(false),
            span: Mutex::new(Some(span)),
        });
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(id, live);
        Ok(cancel)
    }

    /// The records of the live calls, as they are now.
    pub async fn live_records(&self) -> Vec<CallRecord> {
        let calls: Vec<Arc<LiveCall>> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut records = Vec::with_capacity(calls.len());
        for call in calls {
            records.push(call.record.lock().await.clone());
        }
        records
    }

    /// The cancellation token of a live call.
    pub fn cancel_token(&self, id: &CallId) -> Option<CancellationToken> {
        self.live_call(id).map(|l| l.cancel.clone())
    }

    /// The token the media bridge of a live call runs under.
    pub fn media_token(&self, id: &CallId) -> Option<CancellationToken> {
        self.live_call(id).map(|l| l.media.clone())
    }

    /// Claims the one media stream of a live call; false when the call is not
    /// live or a stream claimed it before. The upgrade's signature covers
    /// only the URL, so it is the same for every connection to the call: the
    /// claim, not the signature, is what keeps a second connection from
    /// reaching the call. It is never given back: a stream that fails before
    /// `start` ends the call (the bridge hangs it up), so nobody can retry
    /// against it and add an event each time.
    pub fn claim_media(&self, id: &CallId) -> bool {
        self.live_call(id)
            .is_some_and(|l| !l.media_claimed.swap(true, Ordering::AcqRel))
    }

    /// Stops the media bridge of a live call (the call itself ends when the
    /// provider reports its final status).
    pub fn stop_media(&self, id: &CallId) {
        if let Some(live) = self.live_call(id) {
            live.media.cancel();
        }
    }

    /// The current record of a call (live or stored).
    pub async fn get(&self, id: &CallId) -> Result<CallRecord, HubError> {
        if let Some(live) = self.live_call(id) {
            return Ok(live.record.lock().await.clone());
        }
        self.store.get_call(id).await?.ok_or(HubError::NotFound)
    }

    /// Changes a call: `f` edits the record and returns the events that
    /// describe the change. The record and events are committed together, then
    /// broadcast. A terminal status ends the call (its token is cancelled).
    pub async fn update(
        &self,
        id: &CallId,
        f: impl FnOnce(&mut CallRecord) -> Vec<EventKind>,
    ) -> Result<Vec<CallEvent>, HubError> {
        let Some(live) = self.live_call(id) else {
            // Ended (or unknown) calls: apply to the stored record, nobody is
            // subscribed. Terminal statuses are final, so this is rare
            // (late provider data such as CallDuration).
            let Some(mut record) = self.store.get_call(id).await? else {
                return Err(HubError::NotFound);
            };
            let events = stamp(&mut record, f);
            self.store.commit(record.clone(), events.clone()).await?;
            self.observe(&record, &events, None);
            return Ok(events);
        };
        let mut guard = live.record.lock().await;
        let mut record = guard.clone();
        let events = stamp(&mut record, f);
        self.store.commit(record.clone(), events.clone()).await?;
        let ended = record.status.is_terminal();
        {
            let mut span = live.span.lock().unwrap_or_else(|p| p.into_inner());
            self.observe(&record, &events, span.as_ref());
            if ended {
                // Closing the span ends it in the trace.
                span.take();
            }
        }
        *guard = record;
        for ev in &events {
            // No receivers is fine: the event is stored.
            let _ = live.tx.send(ev.clone());
        }
        drop(guard);
        if ended {
            live.cancel.cancel();
            self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        }
        Ok(events)
    }

    /// Appends one event.
    pub async fn publish(&self, id: &CallId, kind: EventKind) -> Result<Option<CallEvent>, HubError> {
        Ok(self.update(id, |_| vec![kind]).await?.into_iter().next())
    }

    /// Streams a call's events after `after`: history, then live, ending after
    /// the terminal status. Unknown call: [`HubError::NotFound`].
    pub async fn watch(
        &self,
        id: &CallId,
        after: u64,
    ) -> Result<mpsc::Receiver<Result<CallEvent, HubError>>, HubError> {
        // Subscribe first, then read history: see the module doc.
        let rx = self.live_call(id).map(|l| l.tx.subscribe());
        if rx.is_none() && self.store.get_call(id).await?.is_none() {
            return Err(HubError::NotFound);
        }
        let (out, out_rx) = mpsc::channel(WATCH_BUFFER);
        let store = self.store.clone();
        let id = id.clone();
        let end = self.watchers_end.clone();
        tokio::spawn(async move {
            let mut w = Watcher {
                store,
                id,
                last: after,
                out,
            };
            w.run(rx, end).await;
        });
        Ok(out_rx)
    }
}

/// Assigns sequence numbers and times to the events `f` produced, applying
/// each to the record.
/// Every text is capped here ([`crate::call::payload_caps`]): this is the one
/// way into the store.
fn stamp(record: &mut CallRecord, f: impl FnOnce(&mut CallRecord) -> Vec<EventKind>) -> Vec<CallEvent> {
    let kinds = f(record);
    payload_caps::cap(&mut record.end_reason, payload_caps::DETAIL);
    let now = Utc::now();
    kinds
        .into_iter()
        .map(|kind| {
            let kind = kind.capped();
            record.apply(&kind, now);
            CallEvent {
                sequence: record.event_count,
                time: now,
                kind,
            }
        })
        .collect()
}

struct Watcher {
    store: Store,
    id: CallId,
    last: u64,
    out: mpsc::Sender<Result<CallEvent, HubError>>,
}

enum Flow {
    Continue,
    Done,
}

impl Watcher {
    async fn run(&mut self, rx: Option<broadcast::Receiver<CallEvent>>, end: CancellationToken) {
        if let Flow::Done = self.catch_up().await {
            return;
        }
        let Some(mut rx) = rx else {
            // Not live and not terminal: only possible for a record written by
            // an older run that `recover` has not seen; nothing more will come.
            return;
        };
        loop {
            let received = tokio::select! {
                r = rx.recv() => r,
                // At the end of a shutdown, deliver what is stored and end.
                _ = end.cancelled() => {
                    let _ = self.catch_up().await;
                    return;
                }
                _ = self.out.closed() => return,
            };
            let flow = match received {
                Ok(ev) if ev.sequence <= self.last => Flow::Continue,
                Ok(ev) if ev.sequence == self.last + 1 => self.send(ev).await,
                // A gap (cannot happen with one sender, but never skip) or lag:
                // the store has everything.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await,
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = self.catch_up().await;
                    return;
                }
            };
            if let Flow::Done = flow {
                return;
            }
        }
    }

    /// Sends what the store holds after `last`, a page at a time: a long
    /// history is never in memory at once (a page here, [`WATCH_BUFFER`] in
    /// the stream), and each page waits for the watcher to take the last.
    async fn catch_up(&mut self) -> Flow {
        loop {
            let events = match self.store.events_after(&self.id, self.last, WATCH_PAGE).await {
                Ok(events) => events,
                Err(e) => {
                    let _ = self.out.send(Err(e.into())).await;
                    return Flow::Done;
                }
            };
            let full = events.len() == WATCH_PAGE;
            for ev in events {
                if let Flow::Done = self.send(ev).await {
                    return Flow::Done;
                }
            }
            if !full {
                return Flow::Continue;
            }
        }
    }

    async fn send(&mut self, ev: CallEvent) -> Flow {
        self.last = ev.sequence;
        let terminal = ev.kind.terminal_status().is_some();
        if self.out.send(Ok(ev)).await.is_err() || terminal {
            return Flow::Done;
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::call::CallStatus;
    use crate::config::DatabaseLocation;
    use crate::store::tests::record;
    use crate::telephony::{DialRequest, Dialed, FailureClass, TelephonyError};

    fn hub() -> CallHub {
        CallHub::new(
            Store::open(&DatabaseLocation::Memory).unwrap(),
            CancellationToken::new(),
        )
    }

    #[tokio::test]
    async fn watch_replays_a_long_history_in_pages_then_goes_live() {
        let hub = hub();
        let id = CallId::new();
        hub.create(record(&id)).await.unwrap();
        const N: u64 = 5000;
        hub.update(&id, |_| {
            (0..N)
                .map(|i| EventKind::Dtmf {
                    digit: (i % 10).to_string(),
                })
                .collect()
        })
        .await
        .unwrap();
        let mut rx = hub.watch(&id, 0).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < N as usize {
            seen.push(rx.recv().await.unwrap().unwrap().sequence);
        }
        // Then live: the next event arrives once, right after the history.
        hub.update(&id, |r| lifecycle::end(r, lifecycle::Ending::Failed, "test"))
            .await
            .unwrap();
        while let Some(ev) = rx.recv().await {
            seen.push(ev.unwrap().sequence);
        }
        assert_eq!(seen, (1..=N + 1).collect::<Vec<_>>());
        let pages = hub.store().pages_read();
        assert!(pages.iter().all(|&p| p <= WATCH_PAGE), "{pages:?}");
        assert!(pages.len() as u64 > N / WATCH_PAGE as u64, "{pages:?}");
    }

    /// A provider that records hang-ups and refuses those of `refused`.
    #[derive(Default)]
    struct Recorder {
        hang_ups: Mutex<Vec<(String, bool)>>,
        refused: String,
    }

    #[async_trait::async_trait]
    impl Telephony for Recorder {
        async fn dial(&self, _: &DialRequest) -> Result<Dialed, TelephonyError> {
            unreachable!("recovery dials nothing")
        }
        async fn hang_up(&self, sid: &str, answered: bool) -> Result<(), TelephonyError> {
            self.hang_ups.lock().unwrap().push((sid.to_string(), answered));
            if sid == self.refused {
                return Err(TelephonyError {
                    class: FailureClass::InvalidArgument,
                    provider_code: Some("20404".into()),
                    message: "not found".into(),
                });
            }
            Ok(())
        }
        async fn say_and_hang_up(&self, _: &str, _: &str) -> Result<(), TelephonyError> {
            unreachable!("recovery says nothing")
        }
    }

    #[tokio::test]
    async fn recovery_hangs_up_with_the_provider_before_marking_failed() {
        let hub = hub();
        let store = hub.store().clone();
        let mut ids = Vec::new();
        for (status, sid) in [
            (CallStatus::InProgress, "CA1"),
            (CallStatus::Ringing, "CA2"),
            (CallStatus::Queued, ""),
            (CallStatus::Ringing, "CA4"),
            (CallStatus::Completed, "CA5"),
        ] {
            let id = CallId::new();
            let mut rec = record(&id);
            rec.status = status;
            rec.provider_call_id = sid.into();
            store.insert_call(rec).await.unwrap();
            ids.push(id);
        }
        let telephony = Recorder {
            refused: "CA4".into(),
            ..Default::default()
        };
        assert_eq!(hub.recover(&telephony).await.unwrap(), 4);
        let mut hang_ups = telephony.hang_ups.lock().unwrap().clone();
        hang_ups.sort();
        assert_eq!(
            hang_ups,
            [("CA1".into(), true), ("CA2".into(), false), ("CA4".into(), false)]
        );
        let reasons = [
            lifecycle::RESTART_HUNG_UP_REASON,
            lifecycle::RESTART_HUNG_UP_REASON,
            lifecycle::RESTART_REASON,
            lifecycle::RESTART_HANG_UP_FAILED_REASON,
        ];
        for (id, reason) in ids.iter().zip(reasons) {
            let rec = store.get_call(id).await.unwrap().unwrap();
            assert_eq!((rec.status, rec.end_reason.as_str()), (CallStatus::Failed, reason));
        }
        let failed = store.events_after(&ids[3], 0, 10).await.unwrap();
        assert!(
            matches!(&failed[0].kind, EventKind::Error { code, message }
                if code == "twilio_20404" && message.contains("after a restart failed")),
            "{failed:?}"
        );
        assert_eq!(failed[1].kind.terminal_status(), Some(CallStatus::Failed));
        let done = store.get_call(&ids[4]).await.unwrap().unwrap();
        assert_eq!(done.status, CallStatus::Completed, "ended calls are left alone");
    }
}
