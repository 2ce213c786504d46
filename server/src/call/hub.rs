//! The hub of live calls: every change to a call goes through here, is
//! committed to the store, and only then is broadcast to watchers. What a
//! change is, the caller decides (with [`crate::call::lifecycle`]); the hub
//! only applies it.
//!
//! The store orders the changes of a call (each runs in a transaction that
//! locks the call's row and gives its events the next sequences), so writers
//! on any task, or any replica, never interleave. The hub keeps, per call
//! this process is involved in ([`LocalCall`]: placed here, bridged here, or
//! watched here), the tokens of its local tasks and a broadcast channel to
//! its local watchers. The channel carries this process's own commits as
//! events, and, on a shared store (PostgreSQL), the other replicas' commits
//! as notices that say up to which sequence the store holds the call
//! ([`Signal::Committed`]). Watchers subscribe to it *before* they read
//! history from the store, and skip sequences they already sent, so nothing
//! falls in between. A watcher that falls behind (broadcast lag), sees a gap,
//! or hears of another replica's commit re-reads the store from its last
//! sequence: a slow or vanished watcher never slows the call.
//!
//! On a shared store a live call's media bridge holds a lease in the store
//! that its replica renews ([`LEASE_TTL`]); every replica sweeps for expired
//! leases ([`CallHub::spawn_lease_keeping`]) and ends the calls whose
//! bridge's replica is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::call::{CallEvent, CallId, CallRecord, CallStatus, ErrorCode, EventKind, lifecycle, payload_caps};
use crate::metrics::Metrics;
use crate::redact;
use crate::store::{Inserted, Lease, Notice, RequestKey, Store, StoreError};
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
/// How long a media bridge's lease lasts unless its replica renews it. A
/// replica killed mid-call loses its calls to a survivor within this plus
/// [`SWEEP_EVERY`] (issue #13: within 15 s).
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often a replica renews the leases of its bridges (five renewals fit
/// in one lease, so a slow database round trip or a busy pool does not lose
/// one).
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How often a replica looks for expired leases.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// Added to the dial's HTTP timeout: how much longer than a dial may take a
/// call may stay queued before a sweep takes it as lost with the replica
/// placing it (the placing replica stores the provider id as soon as the
/// dial returns).
pub const PLACE_MARGIN: Duration = Duration::from_secs(20);
/// Calls taken over per sweep.
const SWEEP_BATCH: usize = 32;

/// How long a read or write the call cannot do without (a watcher's next
/// page, a bridge's event) is retried while the store fails transiently
/// ([`StoreError::is_transient`]: a pool wait timed out under load, a
/// connection broke, the database restarted). Longer than a pool wait, so
/// a burst that queues every connection for a while costs a delay, not an
/// event or a watcher's stream; short enough that a store that stays away
/// surfaces as an error while the call's lease (and the watcher's client)
/// can still act on it.
pub const STORE_RETRY_FOR: Duration = Duration::from_secs(20);
/// First wait between retries; doubled each time up to [`STORE_RETRY_MAX_WAIT`].
const STORE_RETRY_FIRST_WAIT: Duration = Duration::from_millis(50);
const STORE_RETRY_MAX_WAIT: Duration = Duration::from_secs(2);

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

impl HubError {
    /// See [`StoreError::is_transient`].
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_transient())
    }
}

/// Runs `op` until it succeeds, fails for good, or has failed transiently
/// for [`STORE_RETRY_FOR`], waiting longer between tries (each failure is
/// logged, so a struggling store is visible long before anything gives up).
pub async fn retry_transient<T, F, Fut>(what: &str, mut op: F) -> Result<T, HubError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, HubError>>,
{
    let give_up = tokio::time::Instant::now() + STORE_RETRY_FOR;
    let mut wait = STORE_RETRY_FIRST_WAIT;
    loop {
        match op().await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() + wait < give_up => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what}: the store is unavailable; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(STORE_RETRY_MAX_WAIT);
            }
            result => return result,
        }
    }
}

/// What a watcher hears from the hub.
#[derive(Clone, Debug)]
enum Signal {
    /// An event committed by this process.
    Event(CallEvent),
    /// The store holds the call's events up to this sequence (another
    /// replica's commit, or a resync after notices may have been missed).
    Committed(u64),
}

/// A call this process is involved in.
struct LocalCall {
    tx: broadcast::Sender<Signal>,
    /// Cancelled when the call reaches a terminal status (or the server
    /// stops): the media bridge and every per-call task end with it.
    cancel: CancellationToken,
    /// Child of `cancel`: stops the media bridge alone (HangUpCall, end_call)
    /// while the call waits for the provider's final status.
    media: CancellationToken,
    /// This process runs the call's media bridge (it holds the lease).
    bridged: AtomicBool,
    /// The call's tracing span, from PlaceCall to its terminal status
    /// (docs/observability.md "Traces"); only on the replica that placed
    /// the call; taken and closed when the call ends.
    span: Mutex<Option<tracing::Span>>,
}

/// Live calls and their event fan-out. Cheap to clone.
#[derive(Clone)]
pub struct CallHub {
    store: Store,
    local: Arc<Mutex<HashMap<CallId, Arc<LocalCall>>>>,
    shutdown: CancellationToken,
    /// Cancelled by [`CallHub::end_watchers`]: every WatchCall stream
    /// delivers what is stored and ends. Separate from `shutdown` so that
    /// the calls a shutdown ends can record how they ended first, and the
    /// watchers still see it.
    watchers_end: CancellationToken,
    /// This process's lease (its replica id as the owner).
    lease: Lease,
    /// Where ended calls are counted.
    metrics: Arc<Metrics>,
}

impl CallHub {
    /// A hub over `store`; per-call tokens are children of `shutdown`. On a
    /// shared store it starts listening to the other replicas' notices.
    pub fn new(store: Store, shutdown: CancellationToken) -> Self {
        Self::with_metrics(store, shutdown, Arc::default())
    }

    /// Like [`CallHub::new`], counting ended calls in `metrics`.
    pub fn with_metrics(store: Store, shutdown: CancellationToken, metrics: Arc<Metrics>) -> Self {
        let hub = Self {
            store,
            local: Arc::default(),
            shutdown,
            watchers_end: CancellationToken::new(),
            lease: Lease {
                owner: uuid::Uuid::new_v4().to_string(),
                ttl: LEASE_TTL,
            },
            metrics,
        };
        // Until the watchers end: a bridge here may still wait for a
        // terminal status committed by another replica.
        if let Some(notices) = hub.store.notices(hub.watchers_end.clone()) {
            tokio::spawn(hub.clone().route_notices(notices));
        }
        hub
    }

    /// The tracing span of a live call placed by this process (the parent of
    /// its media bridge's and webhooks' spans); `None` once it has ended, or
    /// when another replica placed it.
    pub fn call_span(&self, id: &CallId) -> Option<tracing::Span> {
        let local = self.local_call(id)?;
        let span = local.span.lock().unwrap_or_else(|p| p.into_inner());
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

    /// This process's id among the replicas (the owner of its leases).
    pub fn replica_id(&self) -> &str {
        &self.lease.owner
    }

    async fn route_notices(self, mut notices: mpsc::Receiver<Notice>) {
        while let Some(notice) = notices.recv().await {
            match notice {
                Notice::Committed {
                    call_id,
                    sequence,
                    terminal,
                } => {
                    if let Some(local) = self.local_call(&call_id) {
                        let _ = local.tx.send(Signal::Committed(sequence));
                    }
                    if terminal {
                        self.end_local(&call_id);
                    }
                }
                Notice::StopMedia(call_id) => {
                    if let Some(local) = self.local_call(&call_id) {
                        local.media.cancel();
                    }
                }
                Notice::Resync => {
                    let calls: Vec<(CallId, Arc<LocalCall>)> = self
                        .local
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .map(|(id, l)| (id.clone(), l.clone()))
                        .collect();
                    for (id, local) in calls {
                        let _ = local.tx.send(Signal::Committed(u64::MAX));
                        // A call that ended while notices were lost ends here too.
                        if let Ok(Some(rec)) = self.store.get_call(&id).await
                            && rec.status.is_terminal()
                        {
                            self.end_local(&id);
                        }
                    }
                }
            }
        }
    }

    /// Forgets a call that ended: its local tasks stop, its watchers' channel closes.
    fn end_local(&self, id: &CallId) {
        let removed = self.local.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        if let Some(local) = removed {
            local.cancel.cancel();
        }
    }

    /// The local entry of a call, made if missing.
    fn local_entry(&self, id: &CallId) -> Arc<LocalCall> {
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.clone())
            .or_insert_with(|| {
                let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
                let cancel = self.shutdown.child_token();
                Arc::new(LocalCall {
                    tx,
                    media: cancel.child_token(),
                    cancel,
                    bridged: AtomicBool::new(false),
                    span: Mutex::new(None),
                })
            })
            .clone()
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

    fn local_call(&self, id: &CallId) -> Option<Arc<LocalCall>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// Number of calls this process is involved in and has not seen end.
    pub fn live_count(&self) -> usize {
        self.local.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Ends the calls left unfinished by a previous run (one process on
    /// SQLite; replicas use leases instead): their media bridge
    /// died with that process, so nobody can carry them on. Each one the
    /// provider has (it has a provider id) is first hung up or cancelled
    /// there, or its callee would stay on a line nobody serves; then it is
    /// marked FAILED with a reason that says so. A refused hang-up is stored
    /// as an error event. Returns how many calls were ended.
    pub async fn recover(&self, telephony: &dyn Telephony) -> Result<usize, HubError> {
        let stale = self.store.unfinished_calls().await?;
        self.end_orphans(telephony, stale, &RESTART).await
    }

    /// Hangs up and fails `calls`, a few at a time (each is a provider
    /// request, bounded by its HTTP timeout).
    async fn end_orphans(
        &self,
        telephony: &dyn Telephony,
        calls: Vec<CallRecord>,
        why: &'static OrphanReasons,
    ) -> Result<usize, HubError> {
        use futures_util::StreamExt as _;
        let mut n = 0;
        let mut ended = futures_util::stream::iter(calls)
            .map(|record| self.end_orphan(telephony, record, why))
            .buffer_unordered(RECOVER_CONCURRENCY);
        while let Some(result) = ended.next().await {
            n += usize::from(result?);
        }
        Ok(n)
    }

    async fn end_orphan(
        &self,
        telephony: &dyn Telephony,
        record: CallRecord,
        why: &'static OrphanReasons,
    ) -> Result<bool, HubError> {
        let id = record.call_id.clone();
        if lifecycle::transfer::in_flight(&record) {
            // Handed to the provider's <Dial>: nobody serves (or needs to
            // serve) its media, and its dial outcome and final status end it.
            // Taken again after each lease: a cheap no-op.
            tracing::info!(call_id = %id, "a call being transferred needs no media bridge; left to the provider");
            return Ok(false);
        }
        if why.end_first {
            // Other replicas are up: the provider's final status (the hang-up
            // below causes it) would reach one of them at once, so the end
            // and its reason are stored before.
            let reason = if record.provider_call_id.is_empty() {
                why.not_placed
            } else {
                why.hung_up
            };
            self.update(&id, move |r| lifecycle::end(r, lifecycle::Ending::Failed, reason))
                .await?;
        }
        let mut error = None;
        let reason = if record.provider_call_id.is_empty() {
            // Never reached the provider: there is nothing to hang up.
            why.not_placed
        } else {
            let answered = record.status == CallStatus::InProgress;
            match telephony.hang_up(&record.provider_call_id, answered).await {
                Ok(()) => why.hung_up,
                Err(e) => {
                    tracing::warn!(call_id = %id, error = %e.message, "{}", why.hang_up_failed);
                    error = Some(EventKind::error(
                        ErrorCode::from_provider(e.provider_code.as_deref()),
                        format!("{}: {}", why.error_prefix, e.message),
                    ));
                    why.hang_up_failed
                }
            }
        };
        // (With `end_first`, the call has ended: only an error is added.)
        self.update(&id, move |r| {
            let mut events: Vec<EventKind> = error.into_iter().collect();
            events.extend(lifecycle::end(r, lifecycle::Ending::Failed, reason));
            events
        })
        .await?;
        Ok(true)
    }

    /// On a shared store: renews the leases of the bridges this process runs,
    /// and ends the live calls whose lease expired (their replica is gone),
    /// until the watchers end (the last step of a shutdown).
    ///
    /// `place_wait` is how long a call may stay queued without a provider id
    /// before a sweep takes it as lost with the replica placing it (longer
    /// than a dial request may take: `TWILIO_HTTP_TIMEOUT` and a margin).
    pub fn spawn_lease_keeping(&self, telephony: Arc<dyn Telephony>, place_wait: Duration) {
        if !self.store.shared() {
            return;
        }
        // Two tasks: a sweep waits for provider requests (taking over many
        // calls can take seconds), and must never delay this replica's own
        // renewals, or its leases would expire under it.
        let hub = self.clone();
        tokio::spawn(async move {
            let mut renew = tokio::time::interval(RENEW_EVERY);
            renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = hub.watchers_end.cancelled() => return,
                    _ = renew.tick() => hub.renew_leases().await,
                }
            }
        });
        let hub = self.clone();
        tokio::spawn(async move {
            let mut sweep = tokio::time::interval(SWEEP_EVERY);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = hub.watchers_end.cancelled() => return,
                    _ = sweep.tick() => hub.sweep(telephony.as_ref(), place_wait).await,
                }
            }
        });
    }

    async fn renew_leases(&self) {
        let bridged: Vec<CallId> = self
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, l)| l.bridged.load(Ordering::Acquire))
            .map(|(id, _)| id.clone())
            .collect();
        if let Err(e) = self.store.renew_leases(&bridged, &self.lease).await {
            tracing::error!(error = %e, calls = bridged.len(), "the leases of this replica's calls were not renewed");
        }
    }

    async fn sweep(&self, telephony: &dyn Telephony, place_wait: Duration) {
        if self.shutdown.is_cancelled() {
            // A replica going away takes nothing over.
            return;
        }
        match self.store.take_unplaced(&self.lease, place_wait, SWEEP_BATCH).await {
            Ok(taken) if !taken.is_empty() => {
                tracing::warn!(
                    calls = taken.len(),
                    "took over calls whose placing replica stopped before the provider accepted them; ending them"
                );
                if let Err(e) = self.end_orphans(telephony, taken, &PLACING_LOST).await {
                    tracing::error!(error = %e, "a call taken over was not ended");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "looking for calls whose placing replica is gone failed"),
        }
        let taken = match self.store.take_expired(&self.lease, SWEEP_BATCH).await {
            Ok(taken) => taken,
            Err(e) => {
                tracing::error!(error = %e, "looking for calls whose replica is gone failed");
                return;
            }
        };
        if taken.is_empty() {
            return;
        }
        tracing::warn!(
            calls = taken.len(),
            "took over calls whose media replica is gone; hanging them up"
        );
        if let Err(e) = self.end_orphans(telephony, taken, &TAKEOVER).await {
            tracing::error!(error = %e, "a call taken over was not ended");
        }
    }

    /// Stores a new call and makes it live. Returns its cancellation token.
    pub async fn create(&self, record: CallRecord) -> Result<CancellationToken, HubError> {
        match self.create_once(record, None).await? {
            (Inserted::New, token) => Ok(token),
            _ => Err(HubError::NotFound),
        }
    }

    /// Stores a new call under the client's request key (if any) and makes it
    /// live; see [`Inserted`] for a retry or a reused key (then nothing is
    /// made live here). Returns the call's cancellation token.
    pub async fn create_once(
        &self,
        record: CallRecord,
        key: Option<RequestKey>,
    ) -> Result<(Inserted, CancellationToken), HubError> {
        let id = record.call_id.clone();
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
        let inserted = self.store.insert_call(record, key).await?;
        let token = match inserted {
            Inserted::New => {
                crate::telemetry::record_trace_id(&span);
                let local = self.local_entry(&id);
                *local.span.lock().unwrap_or_else(|p| p.into_inner()) = Some(span);
                local.cancel.clone()
            }
            _ => CancellationToken::new(),
        };
        Ok((inserted, token))
    }

    /// The records of the calls this process is involved in that are still live.
    pub async fn live_records(&self) -> Vec<CallRecord> {
        let ids: Vec<CallId> = self
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            if let Ok(Some(rec)) = self.store.get_call(&id).await
                && !rec.status.is_terminal()
            {
                records.push(rec);
            }
        }
        records
    }

    /// The cancellation token of a live call this process is involved in.
    pub fn cancel_token(&self, id: &CallId) -> Option<CancellationToken> {
        self.local_call(id).map(|l| l.cancel.clone())
    }

    /// The token the media bridge of a live call runs under (after [`CallHub::claim_media`]).
    pub fn media_token(&self, id: &CallId) -> Option<CancellationToken> {
        self.local_call(id).map(|l| l.media.clone())
    }

    /// Claims the one media stream of a live call for this process; false
    /// when the call is not live or a stream claimed it before (on any
    /// replica: the claim is in the store, with this process's lease). The
    /// upgrade's signature covers only the URL, so it is the same for every
    /// connection to the call: the claim, not the signature, is what keeps a
    /// second connection from reaching the call. It is never given back: a
    /// stream that fails before `start` ends the call (the bridge hangs it
    /// up), so nobody can retry against it and add an event each time.
    pub async fn claim_media(&self, id: &CallId) -> Result<bool, HubError> {
        if !self.store.claim_media(id, &self.lease).await? {
            return Ok(false);
        }
        self.local_entry(id).bridged.store(true, Ordering::Release);
        Ok(true)
    }

    /// Stops the media bridge of a live call, on whichever replica runs it
    /// (the call itself ends when the provider reports its final status).
    pub async fn stop_media(&self, id: &CallId) -> Result<(), HubError> {
        if let Some(local) = self.local_call(id) {
            local.media.cancel();
        }
        self.store.notify(&Notice::StopMedia(id.clone())).await?;
        Ok(())
    }

    /// The current record of a call (as stored: replicas share no memory).
    pub async fn get(&self, id: &CallId) -> Result<CallRecord, HubError> {
        self.store.get_call(id).await?.ok_or(HubError::NotFound)
    }

    /// Changes a call: `f` edits the record and returns the events that
    /// describe the change. The record and events are committed together
    /// (see [`Store::update`]), then broadcast to this process's watchers (the
    /// store tells the other replicas). A terminal status ends the call (its
    /// token is cancelled).
    pub async fn update(
        &self,
        id: &CallId,
        f: impl FnOnce(&mut CallRecord) -> Vec<EventKind> + Send + 'static,
    ) -> Result<Vec<CallEvent>, HubError> {
        Ok(self.update_record(id, f).await?.1)
    }

    /// Like [`CallHub::update`], returning the record as committed too.
    pub async fn update_record(
        &self,
        id: &CallId,
        f: impl FnOnce(&mut CallRecord) -> Vec<EventKind> + Send + 'static,
    ) -> Result<(CallRecord, Vec<CallEvent>), HubError> {
        let (record, events) = self
            .store
            .update(id, move |record| stamp(record, f))
            .await
            .map_err(|e| match e {
                StoreError::NotFound => HubError::NotFound,
                e => HubError::Store(e),
            })?;
        let ended = record.status.is_terminal();
        let local = self.local_call(id);
        // Logged and counted by the replica that committed the change (each
        // status change is committed once, by one replica: a survivor that
        // ends a call taken over comes through here too).
        let span = local.as_ref().and_then(|l| {
            let mut span = l.span.lock().unwrap_or_else(|p| p.into_inner());
            // Closing the span at the end ends it in the trace.
            if ended { span.take() } else { span.clone() }
        });
        self.observe(&record, &events, span.as_ref());
        drop(span);
        if let Some(local) = local {
            for ev in &events {
                // No receivers is fine: the event is stored.
                let _ = local.tx.send(Signal::Event(ev.clone()));
            }
        }
        if ended {
            self.end_local(id);
        }
        Ok((record, events))
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
        let record = retry_transient("reading a watched call", || async {
            Ok(self.store.get_call(id).await?)
        })
        .await?;
        let Some(record) = record else {
            return Err(HubError::NotFound);
        };
        // Subscribe first, then read history: see the module doc. An ended
        // call's history is all there is.
        let rx = (!record.status.is_terminal()).then(|| self.local_entry(id).tx.subscribe());
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

/// How calls nobody serves any more end.
struct OrphanReasons {
    /// Store the end before asking the provider to hang up.
    end_first: bool,
    not_placed: &'static str,
    hung_up: &'static str,
    hang_up_failed: &'static str,
    error_prefix: &'static str,
}

/// Calls found live when the process (one on SQLite) started again.
const RESTART: OrphanReasons = OrphanReasons {
    end_first: false,
    not_placed: lifecycle::RESTART_REASON,
    hung_up: lifecycle::RESTART_HUNG_UP_REASON,
    hang_up_failed: lifecycle::RESTART_HANG_UP_FAILED_REASON,
    error_prefix: "hanging up the call after a restart failed",
};

/// Calls whose media bridge's replica stopped renewing its lease.
const TAKEOVER: OrphanReasons = OrphanReasons {
    end_first: true,
    not_placed: lifecycle::TAKEOVER_HUNG_UP_REASON,
    hung_up: lifecycle::TAKEOVER_HUNG_UP_REASON,
    hang_up_failed: lifecycle::TAKEOVER_HANG_UP_FAILED_REASON,
    error_prefix: "hanging up the call after its replica stopped failed",
};

/// Calls left queued by a replica that stopped while placing them (no
/// provider id: nothing to hang up, so `not_placed` is the reason).
const PLACING_LOST: OrphanReasons = OrphanReasons {
    end_first: true,
    not_placed: lifecycle::PLACING_LOST_REASON,
    hung_up: lifecycle::TAKEOVER_HUNG_UP_REASON,
    hang_up_failed: lifecycle::TAKEOVER_HANG_UP_FAILED_REASON,
    error_prefix: "hanging up the call after its placing replica stopped failed",
};

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
    async fn run(&mut self, rx: Option<broadcast::Receiver<Signal>>, end: CancellationToken) {
        if let Flow::Done = self.catch_up().await {
            return;
        }
        let Some(mut rx) = rx else {
            // The call had ended: its history is all there is.
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
                Ok(Signal::Event(ev)) if ev.sequence <= self.last => Flow::Continue,
                Ok(Signal::Event(ev)) if ev.sequence == self.last + 1 => self.send(ev).await,
                Ok(Signal::Committed(sequence)) if sequence <= self.last => Flow::Continue,
                // Another replica's commit, a gap (two local writers can
                // broadcast out of commit order; never skip) or lag: the
                // store has everything.
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
            let (store, id, last) = (&self.store, &self.id, self.last);
            let read = retry_transient("reading a watched call's events", || async {
                Ok(store.events_after(id, last, WATCH_PAGE).await?)
            });
            let events = match read.await {
                Ok(events) => events,
                Err(e) => {
                    // The client resumes after the last event it got.
                    let _ = self.out.send(Err(e)).await;
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

    async fn hub() -> CallHub {
        CallHub::new(
            Store::open(&DatabaseLocation::Memory).await.unwrap(),
            CancellationToken::new(),
        )
    }

    #[tokio::test]
    async fn watch_replays_a_long_history_in_pages_then_goes_live() {
        let hub = hub().await;
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
        async fn transfer(&self, _: &str, _: &crate::telephony::TransferRequest) -> Result<(), TelephonyError> {
            unreachable!("recovery transfers nothing")
        }
    }

    #[tokio::test]
    async fn a_call_being_transferred_is_neither_hung_up_nor_failed_when_found_without_a_bridge() {
        let hub = hub().await;
        let store = hub.store().clone();
        let id = CallId::new();
        let mut rec = record(&id);
        rec.status = CallStatus::InProgress;
        rec.provider_call_id = "CA1".into();
        rec.transfer = Some(crate::call::TransferInfo {
            target: "+15550120".into(),
            state: crate::call::TransferState::Started,
            by: crate::call::TransferBy::Agent,
            reason: String::new(),
        });
        store.insert_call(rec, None).await.unwrap();
        let telephony = Recorder::default();
        assert_eq!(hub.recover(&telephony).await.unwrap(), 0, "nothing ended");
        assert!(
            telephony.hang_ups.lock().unwrap().is_empty(),
            "the provider's <Dial> runs on"
        );
        let rec = store.get_call(&id).await.unwrap().unwrap();
        assert_eq!((rec.status, rec.end_reason.as_str()), (CallStatus::InProgress, ""));
    }

    #[tokio::test]
    async fn recovery_hangs_up_with_the_provider_before_marking_failed() {
        let hub = hub().await;
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
            store.insert_call(rec, None).await.unwrap();
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

    #[tokio::test(start_paused = true)]
    async fn transient_store_failures_are_retried_and_others_are_not() {
        let tries = std::sync::atomic::AtomicUsize::new(0);
        let result = retry_transient("test", || async {
            if tries.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(HubError::Store(StoreError::Pool("timed out".into())))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(tries.load(Ordering::SeqCst), 4);

        let tries = std::sync::atomic::AtomicUsize::new(0);
        let result: Result<(), _> = retry_transient("test", || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(HubError::NotFound)
        })
        .await;
        assert!(matches!(result, Err(HubError::NotFound)));
        assert_eq!(tries.load(Ordering::SeqCst), 1, "a permanent failure is not retried");

        // A store that stays away: given up after STORE_RETRY_FOR, with its error.
        let started = tokio::time::Instant::now();
        let result: Result<(), _> = retry_transient("test", || async {
            Err(HubError::Store(StoreError::Pool("timed out".into())))
        })
        .await;
        assert!(result.unwrap_err().is_transient());
        assert!(started.elapsed() <= STORE_RETRY_FOR, "{:?}", started.elapsed());
    }
}
