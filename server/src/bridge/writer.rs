//! The one path by which a call's media side changes the call's record:
//! a per-call task that applies writes to the hub in the order they were
//! queued. The media path never waits for the store (a commit, or a WAL
//! checkpoint, can take milliseconds, and every frame would wait behind it);
//! it waits ([`CallWriter::settle`]) only before something outside sees the
//! call end (a provider request, closing the media stream), so that the end
//! reason is stored before the provider's status callback can bring another.
//!
//! Every write is fenced by the call's stream generation: it applies only
//! while the record still has the generation the bridge started with. Once
//! the call's stream was resumed (a new bridge, maybe on another replica),
//! what a late bridge of the old stream still had queued is dropped, so it
//! cannot write over the new one (nor end the call it no longer serves).

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::bridge::SHUTDOWN_REASON;
use crate::call::hub::{CallHub, retry_transient};
use crate::call::lifecycle::{self, Ending};
use crate::call::{CallId, CallRecord, EventKind};

/// A write of the call's media side.
enum Write {
    /// Store and broadcast an event.
    Event(EventKind),
    /// Why the call is ending ([`lifecycle::note_end_reason`]: the first reason wins).
    EndReason(String),
    /// The server is stopping under the call: it is over (see [`end_on_shutdown`]).
    EndOnShutdown,
    /// Answered once everything queued before it is applied.
    Settled(oneshot::Sender<()>),
}

/// Writes queued per call before the bridge waits. Events are fed by the
/// peers (the callee's key presses, the AI's transcripts and errors), so the
/// queue is bounded. Policy when full: **block** (backpressure). The bridge
/// waits for room, so it stops reading both sockets and a flooding peer is
/// slowed down by TCP itself; no write is ever dropped. A call makes a few
/// events a second, so 256 absorb a store stall of many seconds without the
/// media path noticing.
pub const WRITE_QUEUE: usize = 256;

/// The queue of one call's writes; its task applies them in order.
pub struct CallWriter {
    tx: mpsc::Sender<Write>,
    task: JoinHandle<()>,
}

impl CallWriter {
    /// Starts the writer of call `id` for the bridge of stream `generation`.
    pub fn spawn(hub: CallHub, id: CallId, generation: u64) -> Self {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let task = tokio::spawn(apply(hub, id, generation, rx));
        Self { tx, task }
    }

    /// Queues `write`, waiting while the queue is full (see [`WRITE_QUEUE`]).
    /// (It borrows nothing while it waits: the bridge holds sockets, which are not `Sync`.)
    fn send(&self, write: Write) -> impl Future<Output = bool> + Send + 'static {
        let tx = self.tx.clone();
        // The task lives until `finish`; a send cannot fail before.
        async move { tx.send(write).await.is_ok() }
    }

    /// Queues an event.
    pub fn event(&self, kind: EventKind) -> impl Future<Output = ()> + Send + 'static {
        let sent = self.send(Write::Event(kind));
        async move {
            sent.await;
        }
    }

    /// Queues why the call ends (the first reason stored wins).
    pub fn end_reason(&self, reason: String) -> impl Future<Output = ()> + Send + 'static {
        let sent = self.send(Write::EndReason(reason));
        async move {
            sent.await;
        }
    }

    /// Queues the end of the call at a server shutdown.
    pub fn end_on_shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        let sent = self.send(Write::EndOnShutdown);
        async move {
            sent.await;
        }
    }

    /// Waits until everything queued so far is stored (and broadcast).
    pub fn settle(&self) -> impl Future<Output = ()> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let queued = self.send(Write::Settled(tx));
        async move {
            if queued.await {
                let _ = rx.await;
            }
        }
    }

    /// Applies what is queued and ends the task.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// Events stored in one transaction at most. A bridge queues events one at
/// a time; under load (a slow store, many calls) they pile up, and storing
/// what is queued together costs one commit instead of one each, so the
/// store catches up instead of falling further behind.
const BATCH: usize = 64;

/// `f`, applied only while the record has stream generation `generation`.
fn fenced(
    id: &CallId,
    generation: u64,
    f: impl FnOnce(&mut CallRecord) -> Vec<EventKind> + Send + 'static,
) -> impl FnOnce(&mut CallRecord) -> Vec<EventKind> + Send + 'static {
    let id = id.clone();
    move |r| {
        if r.stream_generation != generation {
            tracing::warn!(call_id = %id, generation, current = r.stream_generation, "dropped a write of a media bridge whose stream was resumed by a newer one");
            return vec![];
        }
        f(r)
    }
}

async fn apply(hub: CallHub, id: CallId, generation: u64, mut rx: mpsc::Receiver<Write>) {
    let mut next = None;
    loop {
        let Some(write) = next.take() else {
            match rx.recv().await {
                Some(write) => {
                    next = Some(write);
                    continue;
                }
                None => return,
            }
        };
        match write {
            Write::Event(kind) => {
                let mut kinds = vec![kind];
                while kinds.len() < BATCH {
                    match rx.try_recv() {
                        Ok(Write::Event(kind)) => kinds.push(kind),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                store_events(&hub, &id, generation, kinds).await;
            }
            Write::EndReason(reason) => note_end_reason(&hub, &id, generation, &reason).await,
            Write::EndOnShutdown => end_on_shutdown(&hub, &id, generation).await,
            Write::Settled(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Stores events in order, retrying while the store is briefly unavailable
/// (the queue before this task makes the bridge wait meanwhile).
async fn store_events(hub: &CallHub, id: &CallId, generation: u64, kinds: Vec<EventKind>) {
    let count = kinds.len();
    let result = retry_transient("storing a call's events", || {
        let kinds = kinds.clone();
        async move { hub.update(id, fenced(id, generation, move |_| kinds)).await }
    })
    .await;
    if let Err(e) = result {
        tracing::error!(call_id = %id, error = %e, events = count, "events not stored");
    }
}

/// Records why the call is about to end ([`lifecycle::note_end_reason`]: the first reason wins).
async fn note_end_reason(hub: &CallHub, id: &CallId, generation: u64, reason: &str) {
    let result = retry_transient("storing a call's end reason", || {
        let reason = reason.to_string();
        hub.update(
            id,
            fenced(id, generation, move |r| {
                lifecycle::note_end_reason(r, &reason);
                vec![]
            }),
        )
    })
    .await;
    if let Err(e) = result {
        tracing::error!(call_id = %id, error = %e, "end reason not stored");
    }
}

/// The server is stopping under a live call: records why, and that the call
/// is over. The provider's final status callback would say so, but it can no
/// longer reach a server that has stopped accepting connections. What hangs
/// up is closing the media stream, which the bridge does next: nothing
/// follows `<Connect>` in the call's TwiML (protocols.md §4).
async fn end_on_shutdown(hub: &CallHub, id: &CallId, generation: u64) {
    let result = retry_transient("storing a call's end at shutdown", || {
        hub.update(
            id,
            fenced(id, generation, |r| {
                lifecycle::end_with_recorded_reason(r, Ending::Completed, SHUTDOWN_REASON)
            }),
        )
    })
    .await;
    if let Err(e) = result {
        tracing::error!(call_id = %id, error = %e, "the end of the call at shutdown was not stored");
    }
}
