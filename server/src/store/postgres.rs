//! The PostgreSQL engine of the call store: several replicas on one database.
//!
//! A pool of connections (deadpool) for the queries, one connection of its
//! own per replica that LISTENs for the other replicas' notices (see
//! [`super::Notice`]), and one more, the *control* connection, for what must
//! never queue behind a busy pool: renewing this replica's leases (a renewal
//! that waited for a pooled connection under load would let a healthy
//! replica's calls be taken over) and the readiness ping (a saturated pool is
//! load, not a reason to take the replica out of the load balancer, which
//! would move its load onto the others). A change locks the call's row (`SELECT … FOR UPDATE`)
//! in its transaction, so writers on different replicas take turns per call;
//! its NOTIFY is sent in the same transaction, and PostgreSQL delivers
//! notifications only on commit and in commit order, so a notice never
//! announces what a reader cannot see yet.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::{
    AttemptRecord, CallFilter, CallPage, Delivery, DeliveryState, Inserted, LIVE_STATUSES, Lease, MAX_DELIVERIES_SHOWN,
    Notice, OutboxCounts, RequestKey, StoreError, from_millis, millis, notice_payload, parse_notice, parse_time,
    status_text,
};
use crate::call::{CallEvent, CallId, CallRecord, EventKind};
use crate::webhook::payload;

/// Connections per replica. Writes are per event (a few a second per call)
/// and short; watchers read a page at a time.
const POOL_SIZE: usize = 16;
/// How long a query waits for a pooled connection, and a new connection to open.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// The NOTIFY channel of every notice.
const CHANNEL: &str = "voice_agent";
/// Notices buffered for the hub. Policy when full: **drop, then resync**:
/// the listener must keep reading its connection, so it drops what does not
/// fit and later sends [`Notice::Resync`], on which every watcher re-reads
/// the store (nothing is lost: notices only say where to read).
const NOTICE_BUFFER: usize = 1024;
/// Wait before reconnecting the listener.
const RELISTEN_AFTER: Duration = Duration::from_millis(500);
/// Key of the advisory lock migrations run under (any constant; "va" + 1).
const MIGRATION_LOCK: i64 = 0x7661_0001;

/// Migrations, applied in order; the table `voice_agent_migrations` records
/// which ran. They run in one transaction under an advisory lock, so replicas
/// starting at once wait for each other and apply each exactly once.
const MIGRATIONS: &[&str] = &[
    // 1: calls (with the idempotency key and the media lease) and their event log.
    "CREATE TABLE calls (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        call_id TEXT NOT NULL UNIQUE,
        provider_call_id TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        record TEXT NOT NULL,
        request_id TEXT UNIQUE,
        request_fingerprint TEXT,
        media_owner TEXT,
        lease_until TIMESTAMPTZ
    );
    CREATE INDEX calls_provider ON calls(provider_call_id);
    CREATE INDEX calls_live ON calls(lease_until) WHERE status IN ('queued', 'initiated', 'ringing', 'in_progress');
    CREATE TABLE events (
        call_id TEXT NOT NULL REFERENCES calls(call_id),
        sequence BIGINT NOT NULL,
        time TEXT NOT NULL,
        kind TEXT NOT NULL,
        PRIMARY KEY (call_id, sequence)
    );",
    // 2: the outbox of outcome webhooks (times in Unix milliseconds, as on
    // SQLite; the lease is the claim of the worker sending it).
    "CREATE TABLE webhook_outbox (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        message_id TEXT NOT NULL,
        call_id TEXT NOT NULL REFERENCES calls(call_id),
        url TEXT NOT NULL,
        event_type TEXT NOT NULL,
        body TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_status INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        next_attempt_at BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        lease_owner TEXT,
        lease_until BIGINT
    );
    CREATE INDEX webhook_outbox_call ON webhook_outbox(call_id, id);
    CREATE INDEX webhook_outbox_state ON webhook_outbox(state, next_attempt_at);",
];

/// The columns of a [`Delivery`], in the order [`delivery_row`] reads them.
const DELIVERY_COLUMNS: &str = "id, message_id, call_id, url, event_type, body, state, attempts, last_status, last_error, next_attempt_at, created_at";

fn delivery_row(r: &tokio_postgres::Row) -> Delivery {
    Delivery {
        id: r.get(0),
        message_id: r.get(1),
        call_id: CallId::parse(r.get(2)).unwrap_or_default(),
        url: r.get(3),
        event_type: r.get(4),
        body: r.get(5),
        state: DeliveryState::parse(r.get(6)),
        attempts: u32::try_from(r.get::<_, i32>(7)).unwrap_or(0),
        last_status: u16::try_from(r.get::<_, i32>(8)).unwrap_or(0),
        last_error: r.get(9),
        next_attempt_at: from_millis(r.get(10)),
        created_at: from_millis(r.get(11)),
    }
}

/// A call's events above `after`, at most `limit`, in order (on a pooled
/// connection or inside a transaction).
async fn read_events(
    client: &impl deadpool_postgres::GenericClient,
    id: &CallId,
    after: u64,
    limit: usize,
) -> Result<Vec<CallEvent>, StoreError> {
    let stmt = client
        .prepare_cached(
            "SELECT sequence, time, kind FROM events WHERE call_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
        )
        .await?;
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client.query(&stmt, &[&id.as_str(), &after, &limit]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(CallEvent {
            sequence: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            time: parse_time(row.get(1))?,
            kind: serde_json::from_str::<EventKind>(row.get(2))?,
        });
    }
    Ok(out)
}

/// The PostgreSQL call store. Cheap to clone.
#[derive(Clone)]
pub(super) struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    /// The control connection (see the module doc); connected on first use
    /// and again after it fails.
    control: Arc<tokio::sync::Mutex<Option<tokio_postgres::Client>>>,
}

type Client = deadpool_postgres::Object;

impl PgStore {
    /// Connects (the URL is libpq's: `postgres://user@host:port/db?…`) and migrates.
    pub(super) async fn open(url: &str) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_WAIT);
        }
        // A replica that vanishes without closing its sockets holds no
        // connection (and so no row lock) for long.
        config.keepalives(true).keepalives_idle(Duration::from_secs(30));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        let store = Self {
            pool,
            config,
            control: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<Client, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => StoreError::Postgres(e),
            e => StoreError::Pool(e.to_string()),
        })
    }

    /// Runs `query` on the control connection, connecting it first if
    /// needed, within [`POOL_WAIT`]; a failed connection is dropped so the
    /// next use reconnects.
    async fn on_control(
        &self,
        query: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let mut control = self.control.lock().await;
        let run = async {
            if control.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "the database control connection ended");
                    }
                });
                *control = Some(client);
            }
            let client = control.as_ref().expect("connected above");
            Ok::<_, StoreError>(client.execute(query, params).await?)
        };
        match tokio::time::timeout(POOL_WAIT, run).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => {
                *control = None;
                Err(e)
            }
            Err(_) => {
                *control = None;
                Err(StoreError::Pool(format!(
                    "the control connection did not answer within {POOL_WAIT:?}"
                )))
            }
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS voice_agent_migrations (
                version INTEGER PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await?;
        let done: i32 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM voice_agent_migrations", &[])
            .await?
            .get(0);
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
            tx.batch_execute(sql).await?;
            let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
            tx.execute("INSERT INTO voice_agent_migrations (version) VALUES ($1)", &[&version])
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn insert_call(
        &self,
        record: CallRecord,
        key: Option<RequestKey>,
    ) -> Result<Inserted, StoreError> {
        let client = self.client().await?;
        let json = serde_json::to_string(&record)?;
        let (request_id, fingerprint) = match &key {
            Some(k) => (Some(k.id.as_str()), Some(k.fingerprint.as_str())),
            None => (None, None),
        };
        // The unique index on request_id decides: of two inserts with one key
        // (on any replicas), the second waits for the first and inserts nothing.
        let inserted = client
            .execute(
                "INSERT INTO calls (call_id, provider_call_id, status, created_at, record, request_id, request_fingerprint)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (request_id) DO NOTHING",
                &[
                    &record.call_id.as_str(),
                    &record.provider_call_id,
                    &status_text(record.status),
                    &record.created_at.to_rfc3339(),
                    &json,
                    &request_id,
                    &fingerprint,
                ],
            )
            .await?;
        if inserted == 1 {
            return Ok(Inserted::New);
        }
        let Some(key) = key else {
            return Err(StoreError::Join("a call without a request key was not inserted".into()));
        };
        let row = client
            .query_one(
                "SELECT request_fingerprint, record FROM calls WHERE request_id = $1",
                &[&key.id],
            )
            .await?;
        let stored: CallRecord = serde_json::from_str(row.get::<_, &str>(1))?;
        Ok(if row.get::<_, Option<&str>>(0) == Some(key.fingerprint.as_str()) {
            Inserted::Existing(Box::new(stored))
        } else {
            Inserted::Mismatch(stored.call_id)
        })
    }

    pub(super) async fn update<F>(
        &self,
        id: &CallId,
        f: F,
        link_base: String,
    ) -> Result<(CallRecord, Vec<CallEvent>), StoreError>
    where
        F: FnOnce(&mut CallRecord) -> Vec<CallEvent> + Send + 'static,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT record, media_owner FROM calls WHERE call_id = $1 FOR UPDATE",
                &[&id.as_str()],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        let mut record: CallRecord = serde_json::from_str(row.get::<_, &str>(0))?;
        let generation = record.stream_generation;
        let events = f(&mut record);
        let resumed = super::note_resume(&mut record, generation, row.get::<_, Option<&str>>(1));
        if !events.is_empty() {
            let mut sequences = Vec::with_capacity(events.len());
            let mut times = Vec::with_capacity(events.len());
            let mut kinds = Vec::with_capacity(events.len());
            for ev in &events {
                sequences.push(i64::try_from(ev.sequence).unwrap_or(i64::MAX));
                times.push(ev.time.to_rfc3339());
                kinds.push(serde_json::to_string(&ev.kind)?);
            }
            let insert = tx
                .prepare_cached(
                    "INSERT INTO events (call_id, sequence, time, kind)
                     SELECT $1, * FROM unnest($2::BIGINT[], $3::TEXT[], $4::TEXT[])",
                )
                .await?;
            tx.execute(&insert, &[&id.as_str(), &sequences, &times, &kinds]).await?;
        }
        // The outcome webhooks of the change, in its transaction: a message
        // exists exactly when the change it reports does.
        if payload::makes_messages(&record, &events) {
            let log = if payload::ends(&events) {
                read_events(&tx, id, 0, payload::MAX_LOG_EVENTS).await?
            } else {
                Vec::new()
            };
            let now = millis(chrono::Utc::now());
            let insert = tx
                .prepare_cached(
                    "INSERT INTO webhook_outbox (message_id, call_id, url, event_type, body, next_attempt_at, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $6)",
                )
                .await?;
            for m in payload::messages(&record, &events, &log, &link_base) {
                tx.execute(
                    &insert,
                    &[&m.message_id, &id.as_str(), &m.url, &m.event_type, &m.body, &now],
                )
                .await?;
            }
        }
        let set = tx
            // An answered call whose media stream no replica claimed yet gets
            // a lease of its own (see `MEDIA_WAIT`): should the stream never
            // arrive, the sweep ends the call.
            .prepare_cached(
                "UPDATE calls SET provider_call_id = $2, status = $3, record = $4,
                     lease_until = CASE WHEN lease_until IS NULL AND media_owner IS NULL AND $3 = 'in_progress'
                                        THEN now() + $5::FLOAT8 * interval '1 millisecond' ELSE lease_until END
                 WHERE call_id = $1",
            )
            .await?;
        tx.execute(
            &set,
            &[
                &id.as_str(),
                &record.provider_call_id,
                &status_text(record.status),
                &serde_json::to_string(&record)?,
                &(super::MEDIA_WAIT.as_secs_f64() * 1000.0),
            ],
        )
        .await?;
        if resumed {
            // The old stream's claim is freed in the same commit as the new
            // generation: the new stream may claim the call on any replica
            // (the lease of MEDIA_WAIT ends the call if it never comes).
            tx.execute(
                "UPDATE calls SET media_owner = NULL, lease_until = now() + $2::FLOAT8 * interval '1 millisecond'
                 WHERE call_id = $1",
                &[&id.as_str(), &(super::MEDIA_WAIT.as_secs_f64() * 1000.0)],
            )
            .await?;
        }
        if let Some(last) = events.last() {
            let notice = Notice::Committed {
                call_id: id.clone(),
                sequence: last.sequence,
                terminal: record.status.is_terminal(),
            };
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &notice_payload(&notice)])
                .await?;
        }
        tx.commit().await?;
        Ok((record, events))
    }

    pub(super) async fn get_call(&self, id: &CallId) -> Result<Option<CallRecord>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT record FROM calls WHERE call_id = $1")
            .await?;
        let row = client.query_opt(&stmt, &[&id.as_str()]).await?;
        Ok(row.map(|r| serde_json::from_str(r.get::<_, &str>(0))).transpose()?)
    }

    pub(super) async fn events_after(
        &self,
        id: &CallId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<CallEvent>, StoreError> {
        let client = self.client().await?;
        read_events(&client, id, after, limit).await
    }

    pub(super) async fn list_calls_matching(
        &self,
        filter: &CallFilter,
        page_size: usize,
        after: Option<i64>,
    ) -> Result<CallPage, StoreError> {
        use tokio_postgres::types::ToSql;
        let mut clauses = Vec::new();
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut arg = |clauses: &mut Vec<String>, clause: &str, value: Box<dyn ToSql + Sync + Send>| {
            args.push(value);
            clauses.push(clause.replace('?', &format!("${}", args.len())));
        };
        if let Some(cursor) = after {
            arg(
                &mut clauses,
                if filter.oldest_first { "seq > ?" } else { "seq < ?" },
                Box::new(cursor),
            );
        }
        if !filter.statuses.is_empty() {
            let statuses: Vec<String> = filter.statuses.iter().map(|s| status_text(*s)).collect();
            arg(&mut clauses, "status = ANY(?)", Box::new(statuses));
        }
        if let Some(to) = &filter.to {
            // `to` is not a column: it is read from the stored record.
            arg(&mut clauses, "(record::jsonb ->> 'to') = ?", Box::new(to.clone()));
        }
        // Byte order ("C"), not the database's collation: see Store::list_calls_matching.
        if let Some(t) = filter.created_after {
            arg(&mut clauses, "created_at COLLATE \"C\" >= ?", Box::new(t.to_rfc3339()));
        }
        if let Some(t) = filter.created_before {
            arg(&mut clauses, "created_at COLLATE \"C\" < ?", Box::new(t.to_rfc3339()));
        }
        let limit = i64::try_from(page_size).unwrap_or(i64::MAX - 1) + 1;
        args.push(Box::new(limit));
        let sql = format!(
            "SELECT seq, record FROM calls {} ORDER BY seq {} LIMIT ${}",
            if clauses.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", clauses.join(" AND "))
            },
            if filter.oldest_first { "ASC" } else { "DESC" },
            args.len()
        );
        let client = self.client().await?;
        let stmt = client.prepare_cached(&sql).await?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&stmt, &params).await?;
        let mut calls = Vec::new();
        let mut seqs = Vec::new();
        for row in rows {
            seqs.push(row.get::<_, i64>(0));
            calls.push(serde_json::from_str::<CallRecord>(row.get(1))?);
        }
        Ok(CallPage::cut(calls, seqs, page_size))
    }

    pub(super) async fn unfinished_calls(&self) -> Result<Vec<CallRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT record FROM calls WHERE status IN {LIVE_STATUSES} ORDER BY seq"),
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok(serde_json::from_str(r.get::<_, &str>(0))?))
            .collect()
    }

    pub(super) async fn claim_media(&self, id: &CallId, lease: &Lease) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                &format!(
                    "UPDATE calls SET media_owner = $2, lease_until = now() + $3::FLOAT8 * interval '1 millisecond'
                     WHERE call_id = $1 AND media_owner IS NULL AND status IN {LIVE_STATUSES}"
                ),
                &[&id.as_str(), &lease.owner, &ttl_millis(lease)],
            )
            .await?;
        Ok(n == 1)
    }

    pub(super) async fn renew_leases(&self, ids: &[CallId], lease: &Lease) -> Result<(), StoreError> {
        let ids: Vec<&str> = ids.iter().map(CallId::as_str).collect();
        self.on_control(
            "UPDATE calls SET lease_until = now() + $3::FLOAT8 * interval '1 millisecond'
             WHERE call_id = ANY($1) AND media_owner = $2",
            &[&ids, &lease.owner, &ttl_millis(lease)],
        )
        .await?;
        Ok(())
    }

    pub(super) async fn take_expired(&self, lease: &Lease, limit: usize) -> Result<Vec<CallRecord>, StoreError> {
        let client = self.client().await?;
        // SKIP LOCKED: survivors sweeping at once take different calls.
        let rows = client
            .query(
                &format!(
                    "UPDATE calls SET media_owner = $1, lease_until = now() + $2::FLOAT8 * interval '1 millisecond'
                     WHERE call_id IN (
                         SELECT call_id FROM calls
                         WHERE status IN {LIVE_STATUSES} AND lease_until < now()
                         ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED)
                     RETURNING record"
                ),
                &[&lease.owner, &ttl_millis(lease), &(limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|r| Ok(serde_json::from_str(r.get::<_, &str>(0))?))
            .collect()
    }

    pub(super) async fn take_unplaced(
        &self,
        lease: &Lease,
        older_than: Duration,
        limit: usize,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let client = self.client().await?;
        // `status = 'queued'` lets the planner use the partial index of live
        // calls (no scan of the history); created_at is RFC 3339 text.
        let rows = client
            .query(
                "UPDATE calls SET media_owner = $1, lease_until = now() + $2::FLOAT8 * interval '1 millisecond'
                 WHERE call_id IN (
                     SELECT call_id FROM calls
                     WHERE status = 'queued' AND media_owner IS NULL AND provider_call_id = ''
                       AND created_at::timestamptz < now() - $3::FLOAT8 * interval '1 millisecond'
                     ORDER BY seq LIMIT $4 FOR UPDATE SKIP LOCKED)
                 RETURNING record",
                &[
                    &lease.owner,
                    &ttl_millis(lease),
                    &(older_than.as_secs_f64() * 1000.0),
                    &(limit as i64),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| Ok(serde_json::from_str(r.get::<_, &str>(0))?))
            .collect()
    }

    pub(super) async fn notify(&self, notice: &Notice) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &notice_payload(notice)])
            .await?;
        Ok(())
    }

    /// Listens for notices on a connection of its own until `stop`,
    /// reconnecting when it drops (then [`Notice::Resync`]).
    pub(super) fn listen(&self, stop: CancellationToken) -> mpsc::Receiver<Notice> {
        let (tx, rx) = mpsc::channel(NOTICE_BUFFER);
        let config = self.config.clone();
        tokio::spawn(async move {
            let mut first = true;
            while !stop.is_cancelled() && !tx.is_closed() {
                if let Err(e) = listen_once(&config, &tx, &stop, first).await {
                    tracing::warn!(error = %e, "the database notice connection failed; reconnecting");
                }
                first = false;
                tokio::select! {
                    _ = tokio::time::sleep(RELISTEN_AFTER) => {}
                    _ = stop.cancelled() => {}
                }
            }
        });
        rx
    }

    pub(super) async fn claim_deliveries(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let client = self.client().await?;
        let now = millis(chrono::Utc::now());
        let until = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // SKIP LOCKED: a row another replica is claiming right now is left
        // to it; once that claim commits, its lease keeps the row out.
        let stmt = client
            .prepare_cached(&format!(
                "UPDATE webhook_outbox SET lease_owner = $1, lease_until = $2
                 WHERE id IN (SELECT o.id FROM webhook_outbox o
                              WHERE o.state = 'pending' AND o.next_attempt_at <= $3
                                AND (o.lease_until IS NULL OR o.lease_until < $3)
                                AND NOT EXISTS (SELECT 1 FROM webhook_outbox p
                                                WHERE p.call_id = o.call_id AND p.url = o.url
                                                  AND p.state = 'pending' AND p.id < o.id)
                              ORDER BY o.id LIMIT $4
                              FOR UPDATE SKIP LOCKED)
                 RETURNING {DELIVERY_COLUMNS}"
            ))
            .await?;
        let rows = client.query(&stmt, &[&owner, &until, &now, &limit]).await?;
        let mut out: Vec<Delivery> = rows.iter().map(delivery_row).collect();
        out.sort_by_key(|d| d.id);
        Ok(out)
    }

    pub(super) async fn record_attempt(&self, id: i64, owner: &str, a: &AttemptRecord) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE webhook_outbox SET state = $3, attempts = attempts + 1, last_status = $4, last_error = $5,
                     next_attempt_at = $6, lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND lease_owner = $2 AND state = 'pending'",
            )
            .await?;
        let n = client
            .execute(
                &stmt,
                &[
                    &id,
                    &owner,
                    &a.state.as_str(),
                    &i32::from(a.http_status),
                    &a.error,
                    &millis(a.next_attempt_at),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    pub(super) async fn deliveries(&self, id: &CallId) -> Result<Vec<Delivery>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_outbox WHERE call_id = $1 ORDER BY id LIMIT $2"
            ))
            .await?;
        let rows = client
            .query(&stmt, &[&id.as_str(), &(MAX_DELIVERIES_SHOWN as i64)])
            .await?;
        Ok(rows.iter().map(delivery_row).collect())
    }

    pub(super) async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM webhook_outbox WHERE state = 'pending'),
                        (SELECT count(*) FROM webhook_outbox WHERE state = 'dead')",
                &[],
            )
            .await?;
        Ok(OutboxCounts {
            pending: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            dead: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
        })
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        // One read of the calls table, as on SQLite; on the control
        // connection (the module doc says why).
        self.on_control("SELECT 1 FROM calls LIMIT 1", &[]).await?;
        Ok(())
    }

    pub(super) async fn close(&self) -> Result<(), StoreError> {
        self.pool.close();
        *self.control.lock().await = None;
        Ok(())
    }
}

fn ttl_millis(lease: &Lease) -> f64 {
    lease.ttl.as_secs_f64() * 1000.0
}

/// One LISTEN connection, until it fails or `stop`.
async fn listen_once(
    config: &tokio_postgres::Config,
    tx: &mpsc::Sender<Notice>,
    stop: &CancellationToken,
    first: bool,
) -> Result<(), StoreError> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let missed = Arc::new(AtomicBool::new(!first));
    let forward = {
        let tx = tx.clone();
        let missed = missed.clone();
        // The connection must be polled for the LISTEN below to complete, and
        // then it yields the notifications.
        async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                let n = match message {
                    Ok(AsyncMessage::Notification(n)) => n,
                    Ok(_) => continue,
                    Err(e) => return Err(StoreError::Postgres(e)),
                };
                let Some(notice) = parse_notice(n.payload()) else {
                    tracing::warn!("ignored a malformed database notice");
                    continue;
                };
                if missed.load(Ordering::Acquire) {
                    if tx.try_send(Notice::Resync).is_err() {
                        continue;
                    }
                    missed.store(false, Ordering::Release);
                }
                if tx.try_send(notice).is_err() {
                    missed.store(true, Ordering::Release);
                }
            }
            Ok(())
        }
    };
    let mut forward = std::pin::pin!(forward);
    let listen = format!("LISTEN {CHANNEL}");
    tokio::select! {
        r = &mut forward => return r,
        r = client.batch_execute(&listen) => r?,
    }
    // After a reconnect: whatever was committed meanwhile is in the store.
    if missed.load(Ordering::Acquire) && tx.try_send(Notice::Resync).is_ok() {
        missed.store(false, Ordering::Release);
    }
    tokio::select! {
        r = forward => r,
        _ = stop.cancelled() => Ok(()),
    }
}
