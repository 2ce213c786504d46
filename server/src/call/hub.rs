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

use crate::call::{CallEvent, CallId, CallRecord, EventKind, lifecycle};
use crate::store::{Store, StoreError};

/// Events buffered per live call for watchers that are momentarily behind.
/// A call makes a few events a second at most, and a watcher that falls
/// further behind re-reads the store, so a small ring is enough; tokio
/// allocates and initialises every slot up front, so 1024 cost ~110 KiB of
/// resident memory per live call.
const BROADCAST_CAPACITY: usize = 64;
/// Events buffered per watcher stream before the watcher's own task waits.
const WATCH_BUFFER: usize = 64;

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
}

impl CallHub {
    /// A hub over `store`; per-call tokens are children of `shutdown`.
    pub fn new(store: Store, shutdown: CancellationToken) -> Self {
        Self {
            store,
            live: Arc::default(),
            shutdown,
            watchers_end: CancellationToken::new(),
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

    /// Marks calls left unfinished by a previous run as failed: their media
    /// bridge died with that process, so nobody can carry them on.
    pub async fn recover(&self) -> Result<usize, HubError> {
        let stale = self.store.unfinished_calls().await?;
        let n = stale.len();
        for mut record in stale {
            let events = stamp(&mut record, |r| {
                lifecycle::end(r, lifecycle::Ending::Failed, lifecycle::RESTART_REASON)
            });
            self.store.commit(record, events).await?;
        }
        Ok(n)
    }

    /// Stores a new call and makes it live. Returns its cancellation token.
    pub async fn create(&self, record: CallRecord) -> Result<CancellationToken, HubError> {
        let id = record.call_id.clone();
        self.store.insert_call(record.clone()).await?;
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let cancel = self.shutdown.child_token();
        let live = Arc::new(LiveCall {
            record: tokio::sync::Mutex::new(record),
            tx,
            media: cancel.child_token(),
            cancel: cancel.clone(),
            media_claimed: AtomicBool::new(false),
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
            self.store.commit(record, events.clone()).await?;
            return Ok(events);
        };
        let mut guard = live.record.lock().await;
        let mut record = guard.clone();
        let events = stamp(&mut record, f);
        self.store.commit(record.clone(), events.clone()).await?;
        *guard = record;
        let ended = guard.status.is_terminal();
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
fn stamp(record: &mut CallRecord, f: impl FnOnce(&mut CallRecord) -> Vec<EventKind>) -> Vec<CallEvent> {
    let kinds = f(record);
    let now = Utc::now();
    kinds
        .into_iter()
        .map(|kind| {
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

    async fn catch_up(&mut self) -> Flow {
        match self.store.events_after(&self.id, self.last).await {
            Ok(events) => {
                for ev in events {
                    if let Flow::Done = self.send(ev).await {
                        return Flow::Done;
                    }
                }
                Flow::Continue
            }
            Err(e) => {
                let _ = self.out.send(Err(e.into())).await;
                Flow::Done
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
