//! The call store seam: one [`Store`] with two engines of the same meaning.
//!
//! - **SQLite** (`sqlite://path`, the default): one process, embedded.
//! - **PostgreSQL** (`postgres://…`): several replicas on one database
//!   (docs/deploy.md). Besides storing, it carries what replicas tell each
//!   other: a notice per commit (LISTEN/NOTIFY, see [`Notice`]) and commands
//!   for the replica that runs a call's media bridge.
//!
//! What both guarantee (one test suite, `store/tests.rs`, runs against both):
//! a call is one row (indexed columns plus the whole record as JSON) and its
//! events an append-only log keyed by `(call_id, sequence)`. A change is
//! applied by [`Store::update`] inside one transaction that first locks the
//! call's row, so under concurrent writers (tasks of one process, or
//! replicas) each change sees the one before it, sequences stay gapless, and
//! the log and the record never disagree; the primary key makes a duplicate
//! impossible to store. Migrations are numbered and applied under a lock, so
//! replicas starting at once apply each exactly once.

mod postgres;
mod sqlite;
#[cfg(test)]
pub(crate) mod tests;

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::call::{CallEvent, CallId, CallRecord, CallStatus};
use crate::config::DatabaseLocation;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused or could not be reached.
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had from the pool.
    #[error("database unavailable: {0}")]
    Pool(String),
    /// A stored JSON value did not decode (corruption or a newer schema).
    #[error("stored data is unreadable: {0}")]
    Decode(#[from] serde_json::Error),
    /// Creating the database directory failed.
    #[error("cannot create the database directory: {0}")]
    Io(#[from] std::io::Error),
    /// The blocking task died.
    #[error("database task failed: {0}")]
    Join(String),
    /// The call does not exist.
    #[error("no such call")]
    NotFound,
}

impl StoreError {
    /// True when the same request may succeed if tried again: no connection
    /// could be had in time, the connection broke, the server is going
    /// away or refused for load, or the database was busy (SQLite's lock).
    /// Callers retry these a bounded number of times; a client sees
    /// `UNAVAILABLE` for them, not `INTERNAL`.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Pool(_) => true,
            Self::Postgres(e) => {
                if e.is_closed() {
                    return true;
                }
                match e.code() {
                    // SQLSTATE class 08 (connection exception), 40001
                    // (serialization failure), 40P01 (deadlock detected),
                    // 53300 (too many connections), 57P01..57P03 (the
                    // server is shutting down or cannot connect now).
                    Some(code) => {
                        let code = code.code();
                        code.starts_with("08")
                            || matches!(code, "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03")
                    }
                    // No SQLSTATE: the error came from the socket, not the server.
                    None => e.as_db_error().is_none(),
                }
            }
            Self::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }
}

/// Which calls a listing returns, and in which order (ListCalls' filters).
/// The default is every call, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Only calls in one of these statuses; empty = any.
    pub statuses: Vec<CallStatus>,
    /// Only calls to exactly this number.
    pub to: Option<String>,
    /// Only calls created at or after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Only calls created before this time.
    pub created_before: Option<DateTime<Utc>>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
}

impl CallFilter {
    /// True for every call, newest first.
    pub fn is_plain(&self) -> bool {
        *self == Self::default()
    }

    /// The filter as one text, the same for equal filters (statuses in any
    /// order, no duplicates): what a page token's fingerprint is taken of.
    pub fn canonical(&self) -> String {
        let mut statuses: Vec<String> = self.statuses.iter().map(|s| status_text(*s)).collect();
        statuses.sort();
        statuses.dedup();
        format!(
            "statuses={};to={};after={};before={};oldest_first={}",
            statuses.join(","),
            self.to.as_deref().unwrap_or_default(),
            self.created_after.map(|t| t.to_rfc3339()).unwrap_or_default(),
            self.created_before.map(|t| t.to_rfc3339()).unwrap_or_default(),
            self.oldest_first
        )
    }
}

/// One page of calls, in the order asked for.
pub struct CallPage {
    /// The calls.
    pub calls: Vec<CallRecord>,
    /// Cursor for the next page, if any.
    pub next: Option<i64>,
}

impl CallPage {
    /// A page of at most `page_size` from `calls` (read with one more than
    /// that, so a next page is known to exist) and their positions `seqs`.
    fn cut(mut calls: Vec<CallRecord>, seqs: Vec<i64>, page_size: usize) -> Self {
        let next = if calls.len() > page_size {
            calls.truncate(page_size);
            seqs.get(page_size.wrapping_sub(1)).copied()
        } else {
            None
        };
        Self { calls, next }
    }
}

/// A client's idempotency key for a new call (`PlaceCallRequest.request_id`)
/// and a digest of what it asked for, so a different request under a reused
/// key is told apart from a retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestKey {
    /// The client's id.
    pub id: String,
    /// Digest of the request's fields.
    pub fingerprint: String,
}

/// What [`Store::insert_call`] did.
#[derive(Debug)]
pub enum Inserted {
    /// The call is stored: the caller dials it.
    New,
    /// A call was stored under the same request key and the same request
    /// before: this is a retry (nothing is dialled again).
    Existing(Box<CallRecord>),
    /// The request key belongs to a different request.
    Mismatch(CallId),
}

/// What one replica tells the others, through the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Events up to `sequence` of the call are committed; `terminal` when the
    /// call ended with them.
    Committed {
        /// The call.
        call_id: CallId,
        /// Its last committed sequence.
        sequence: u64,
        /// The call reached a terminal status.
        terminal: bool,
    },
    /// Stop the media bridge of the call, wherever it runs (HangUpCall).
    StopMedia(CallId),
    /// The notice channel was re-established: notices may have been missed,
    /// so every watcher re-reads the store.
    Resync,
}

/// The replica that runs a call's media bridge holds a lease on the call in
/// the store and renews it; a call whose lease expired lost its bridge.
#[derive(Clone, Debug)]
pub struct Lease {
    /// Who holds it (a replica's id).
    pub owner: String,
    /// How long it lasts unless renewed.
    pub ttl: Duration,
}

/// How long an answered call may wait for its media stream to reach a
/// replica: the store gives it a lease without an owner for that long when it
/// is answered, so a stream that never arrives (its upgrade refused by a
/// replica going away, say) and a lost final status leave no call live for
/// ever: the sweep ends it. Twilio opens the stream right after the TwiML.
pub const MEDIA_WAIT: Duration = Duration::from_secs(30);

/// Where an outcome webhook delivery is ([`Store::deliveries`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its (next) attempt.
    Pending,
    /// A 2xx answer was had.
    Delivered,
    /// Given up on (the dead letters): kept, visible in GetCall and /metrics.
    Dead,
}

impl DeliveryState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "delivered" => Self::Delivered,
            "dead" => Self::Dead,
            _ => Self::Pending,
        }
    }
}

/// One outcome webhook message to one URL, as the outbox holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The outbox row (its order is the order of delivery per call and URL).
    pub id: i64,
    /// `webhook-id`.
    pub message_id: String,
    /// The call it reports on.
    pub call_id: CallId,
    /// Where it goes.
    pub url: String,
    /// `call.status_changed` or `call.ended`.
    pub event_type: String,
    /// The JSON body.
    pub body: String,
    /// Where it is.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// HTTP status of the last answer (0: none yet, or no answer).
    pub last_status: u16,
    /// Why the last attempt failed (empty when none failed; no URL, no secret).
    pub last_error: String,
    /// When the next attempt is due (pending ones).
    pub next_attempt_at: DateTime<Utc>,
    /// When it was stored (with the status change it reports).
    pub created_at: DateTime<Utc>,
}

/// What an attempt made of a delivery ([`Store::record_attempt`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    /// Its state after the attempt.
    pub state: DeliveryState,
    /// The answer's HTTP status (0: none).
    pub http_status: u16,
    /// Why it failed (empty on success).
    pub error: String,
    /// When to try again (pending).
    pub next_attempt_at: DateTime<Utc>,
}

/// How many deliveries wait, and how many are dead, in the whole store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Pending.
    pub pending: u64,
    /// Dead.
    pub dead: u64,
}

/// Most deliveries [`Store::deliveries`] returns for one call.
pub const MAX_DELIVERIES_SHOWN: usize = 100;

#[derive(Clone)]
enum Engine {
    Sqlite(sqlite::SqliteStore),
    // Boxed: the pool's configuration is large, and a Store is cloned per task.
    Postgres(Box<postgres::PgStore>),
}

/// The call store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    engine: Engine,
    /// Wakes the webhook worker when a change stored messages, and the
    /// base URL their links are made absolute with.
    outbox: std::sync::Arc<OutboxShared>,
    /// How many events each [`Store::events_after`] returned (tests check the paging).
    #[cfg(test)]
    pages: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
}

/// Calls in these statuses are live (the SQL spelling of
/// [`crate::call::CallStatus::is_terminal`]'s complement).
pub(crate) const LIVE_STATUSES: &str = "('queued', 'initiated', 'ringing', 'in_progress')";

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match &$self.engine {
            Engine::Sqlite($s) => $e,
            Engine::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Opens (creating if needed) and migrates the store.
    pub async fn open(location: &DatabaseLocation) -> Result<Self, StoreError> {
        let engine = match location {
            DatabaseLocation::Memory => Engine::Sqlite(sqlite::SqliteStore::open(None)?),
            DatabaseLocation::File(path) => Engine::Sqlite(sqlite::SqliteStore::open(Some(path))?),
            DatabaseLocation::Postgres(url) => Engine::Postgres(Box::new(postgres::PgStore::open(url.expose()).await?)),
        };
        Ok(Self {
            engine,
            outbox: Default::default(),
            #[cfg(test)]
            pages: Default::default(),
        })
    }

    /// The store with `base` (PUBLIC_URL) as the base of the links in the
    /// outcome webhooks it stores (call it before cloning the store).
    pub fn with_link_base(mut self, base: &str) -> Self {
        self.outbox = std::sync::Arc::new(OutboxShared {
            wake: Default::default(),
            link_base: base.to_string(),
        });
        self
    }

    /// Notified when a change stored outcome webhook messages (in this process).
    pub fn outbox_wake(&self) -> std::sync::Arc<OutboxShared> {
        self.outbox.clone()
    }

    /// True on an engine several replicas share (PostgreSQL).
    pub fn shared(&self) -> bool {
        matches!(self.engine, Engine::Postgres(_))
    }

    /// Stores a new call (before anything is dialled). With a request key,
    /// the database's unique index decides whether this is a new call, a
    /// retry of one stored before, or a reused key.
    pub async fn insert_call(&self, record: CallRecord, key: Option<RequestKey>) -> Result<Inserted, StoreError> {
        dispatch!(self, s => s.insert_call(record, key).await)
    }

    /// Changes a call in one transaction: locks its row, reads the record,
    /// lets `f` edit it and return the events that describe the change (their
    /// sequences continuing the log), stores both, and returns them. An edit
    /// that bumps the record's `stream_generation` (a resumed media stream)
    /// also frees the call's media claim, giving it a lease of
    /// [`MEDIA_WAIT`] with no owner, and notes the replica that held the
    /// claim in the record's `resuming`.
    pub async fn update<F>(&self, id: &CallId, f: F) -> Result<(CallRecord, Vec<CallEvent>), StoreError>
    where
        F: FnOnce(&mut CallRecord) -> Vec<CallEvent> + Send + 'static,
    {
        let base = self.outbox.link_base.clone();
        let (record, events) = dispatch!(self, s => s.update(id, f, base).await)?;
        if crate::webhook::payload::makes_messages(&record, &events) {
            self.outbox.wake.notify_one();
        }
        Ok((record, events))
    }

    /// Claims up to `limit` due deliveries for `owner` for `lease`: pending,
    /// due, not claimed by a live lease, and each the oldest pending one of
    /// its call and URL (so a call's messages reach a URL in order: one waits
    /// until the one before it is delivered or dead). On PostgreSQL the rows
    /// are locked `FOR UPDATE SKIP LOCKED` while claimed, so replicas never
    /// claim one delivery at once.
    pub async fn claim_deliveries(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        dispatch!(self, s => s.claim_deliveries(owner, lease, limit).await)
    }

    /// Records an attempt on a delivery `owner` claimed; false when the claim
    /// was lost (its lease expired and another worker took it).
    pub async fn record_attempt(&self, id: i64, owner: &str, attempt: &AttemptRecord) -> Result<bool, StoreError> {
        dispatch!(self, s => s.record_attempt(id, owner, attempt).await)
    }

    /// The deliveries of a call's messages, oldest first (at most [`MAX_DELIVERIES_SHOWN`]).
    pub async fn deliveries(&self, id: &CallId) -> Result<Vec<Delivery>, StoreError> {
        dispatch!(self, s => s.deliveries(id).await)
    }

    /// Pending and dead deliveries in the whole store (every replica's).
    pub async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        dispatch!(self, s => s.outbox_counts().await)
    }

    /// One call record.
    pub async fn get_call(&self, id: &CallId) -> Result<Option<CallRecord>, StoreError> {
        dispatch!(self, s => s.get_call(id).await)
    }

    /// The events of a call with a sequence above `after`, in order, at most `limit` of them.
    pub async fn events_after(&self, id: &CallId, after: u64, limit: usize) -> Result<Vec<CallEvent>, StoreError> {
        let events = dispatch!(self, s => s.events_after(id, after, limit).await)?;
        #[cfg(test)]
        self.pages.lock().unwrap_or_else(|p| p.into_inner()).push(events.len());
        Ok(events)
    }

    /// The sizes of the pages [`Store::events_after`] returned so far.
    #[cfg(test)]
    pub(crate) fn pages_read(&self) -> Vec<usize> {
        self.pages.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A page of calls, newest first; `before` is the cursor from the previous page.
    pub async fn list_calls(&self, page_size: usize, before: Option<i64>) -> Result<CallPage, StoreError> {
        self.list_calls_matching(&CallFilter::default(), page_size, before)
            .await
    }

    /// A page of the calls `filter` selects, in its order; `after` is the
    /// cursor of the previous page (the position of its last call: the next
    /// page starts past it in the listing's order, so the filters are applied
    /// to the same rows on every page and none is skipped or repeated).
    ///
    /// `created_at` is compared as text: every stored one is
    /// `DateTime::to_rfc3339` of a UTC time (`+00:00`, 0/3/6/9 fraction
    /// digits), and in that form byte order is time order ('+' sorts before
    /// '.' and the digits). The bounds are written the same way; PostgreSQL
    /// compares them under the "C" collation (bytes), not the database's.
    pub async fn list_calls_matching(
        &self,
        filter: &CallFilter,
        page_size: usize,
        after: Option<i64>,
    ) -> Result<CallPage, StoreError> {
        dispatch!(self, s => s.list_calls_matching(filter, page_size, after).await)
    }

    /// Calls not ended yet.
    pub async fn unfinished_calls(&self) -> Result<Vec<CallRecord>, StoreError> {
        dispatch!(self, s => s.unfinished_calls().await)
    }

    /// Claims the media stream of a live call for `lease.owner`: false
    /// when the call has ended or a stream claimed it before. It is given
    /// back only by a new stream generation ([`Store::update`]).
    pub async fn claim_media(&self, id: &CallId, lease: &Lease) -> Result<bool, StoreError> {
        dispatch!(self, s => s.claim_media(id, lease).await)
    }

    /// Renews the leases `lease.owner` holds on `ids` (its running bridges).
    pub async fn renew_leases(&self, ids: &[CallId], lease: &Lease) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        dispatch!(self, s => s.renew_leases(ids, lease).await)
    }

    /// Takes over the live calls whose lease expired (their bridge's replica
    /// is gone), at most `limit`: each is given to `lease.owner`, so only one
    /// survivor ends it. Returns their records.
    pub async fn take_expired(&self, lease: &Lease, limit: usize) -> Result<Vec<CallRecord>, StoreError> {
        dispatch!(self, s => s.take_expired(lease, limit).await)
    }

    /// Takes over the calls still queued `older_than` after they were
    /// stored, with no provider id and no media owner, at most `limit`: the
    /// replica placing them stopped before the provider answered its dial
    /// (a live replica's dial ends well within that: `older_than` is longer
    /// than the dial's HTTP timeout). Each is given to `lease.owner`, so only
    /// one survivor ends it. Returns their records.
    pub async fn take_unplaced(
        &self,
        lease: &Lease,
        older_than: Duration,
        limit: usize,
    ) -> Result<Vec<CallRecord>, StoreError> {
        dispatch!(self, s => s.take_unplaced(lease, older_than, limit).await)
    }

    /// Sends `notice` to every replica (PostgreSQL; one process on SQLite
    /// has nobody to tell).
    pub async fn notify(&self, notice: &Notice) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sqlite(_) => Ok(()),
            Engine::Postgres(s) => s.notify(notice).await,
        }
    }

    /// The notices of every replica (this one's included), from a connection
    /// of their own that reconnects; `None` on SQLite.
    pub fn notices(&self, stop: tokio_util::sync::CancellationToken) -> Option<mpsc::Receiver<Notice>> {
        match &self.engine {
            Engine::Sqlite(_) => None,
            Engine::Postgres(s) => Some(s.listen(stop)),
        }
    }

    /// True when the database answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }

    /// Makes the store complete on its own (SQLite: checkpoints the WAL) and
    /// closes the pool (graceful shutdown).
    pub async fn close(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.close().await)
    }
}

/// What the store shares with the webhook worker of its process.
#[derive(Debug, Default)]
pub struct OutboxShared {
    /// Notified after a commit that stored messages.
    pub wake: tokio::sync::Notify,
    /// PUBLIC_URL: links in messages are made absolute with it.
    pub link_base: String,
}

/// Unix milliseconds of a time.
pub(crate) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A time from stored Unix milliseconds.
pub(crate) fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The serde spelling of a status, so SQL filters and the JSON record agree.
pub(crate) fn status_text(s: crate::call::CallStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The payload of a [`Notice`] on the wire (PostgreSQL NOTIFY; ≤ 8000 bytes).
pub(crate) fn notice_payload(n: &Notice) -> String {
    match n {
        Notice::Committed {
            call_id,
            sequence,
            terminal,
        } => format!("c {call_id} {sequence} {}", u8::from(*terminal)),
        Notice::StopMedia(id) => format!("s {id}"),
        Notice::Resync => "r".into(),
    }
}

/// A [`Notice`] from its payload; `None` for anything else.
pub(crate) fn parse_notice(payload: &str) -> Option<Notice> {
    let mut parts = payload.split(' ');
    let notice = match parts.next()? {
        "c" => Notice::Committed {
            call_id: CallId::parse(parts.next()?)?,
            sequence: parts.next()?.parse().ok()?,
            terminal: parts.next()? == "1",
        },
        "s" => Notice::StopMedia(CallId::parse(parts.next()?)?),
        "r" => Notice::Resync,
        _ => return None,
    };
    parts.next().is_none().then_some(notice)
}

/// After an update's edit: whether it began a new media stream generation
/// (`before` was the generation read). If so, the replica that held the
/// media claim (`owner`) is noted as where the call resumes from; the engine
/// then frees the claim in the same transaction.
pub(crate) fn note_resume(record: &mut CallRecord, before: u64, owner: Option<&str>) -> bool {
    if record.stream_generation == before {
        return false;
    }
    if let Some(resuming) = &mut record.resuming
        && resuming.from.is_empty()
    {
        resuming.from = owner.unwrap_or_default().to_string();
    }
    true
}

/// A stored event time (RFC 3339 text in both engines).
pub(crate) fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| StoreError::Join(format!("bad stored time {s:?}: {e}")))
}

/// Where the tests find PostgreSQL (`TEST_DATABASE_URL`; tests/run.sh starts
/// one there when none answers).
pub const TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database of its own for one test on the PostgreSQL the tests are given
/// (`TEST_DATABASE_URL`, default [`TEST_DATABASE_URL`]): created with a unique
/// name, dropped by [`ScratchDatabase::drop_database`]. Test support.
pub struct ScratchDatabase {
    /// `postgres://…/<the new database>`.
    pub url: String,
    admin: tokio_postgres::Config,
    name: String,
}

impl ScratchDatabase {
    /// Creates the database; panics, saying how to get one, when PostgreSQL
    /// does not answer.
    pub async fn create() -> Self {
        let admin_url = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| TEST_DATABASE_URL.to_string());
        let admin: tokio_postgres::Config = admin_url.parse().expect("TEST_DATABASE_URL is a PostgreSQL URL");
        let name = format!("va_test_{}", uuid::Uuid::new_v4().simple());
        Self::admin(&admin, &admin_url, &format!("CREATE DATABASE {name}")).await;
        let url = match admin.get_dbname() {
            Some(db) if admin_url.contains(&format!("/{db}")) => {
                admin_url.replacen(&format!("/{db}"), &format!("/{name}"), 1)
            }
            _ => panic!("TEST_DATABASE_URL must name its database (…/test): {admin_url}"),
        };
        Self { url, admin, name }
    }

    async fn admin(admin: &tokio_postgres::Config, shown: &str, sql: &str) {
        let (client, connection) = admin.connect(tokio_postgres::NoTls).await.unwrap_or_else(|e| {
            panic!("PostgreSQL does not answer at {shown} ({e}): tests/run.sh starts one; or set TEST_DATABASE_URL")
        });
        let driver = tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        drop(client);
        let _ = driver.await;
    }

    /// Drops the database (closing what is still connected to it).
    pub async fn drop_database(self) {
        Self::admin(
            &self.admin,
            "TEST_DATABASE_URL",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )
        .await;
    }
}
