//! The SQLite engine of the call store (file or memory): one process.
//!
//! SQLite calls are blocking: they run on the blocking pool, one connection
//! behind a mutex (WAL mode; writes are per event, never per audio frame, so
//! this is far from the bottleneck). A change runs in one `BEGIN IMMEDIATE`
//! transaction, which takes the database's write lock before it reads, so
//! even two processes on one file would not interleave a read and a write.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    AttemptRecord, CallFilter, CallPage, Delivery, DeliveryState, Inserted, LIVE_STATUSES, Lease, MAX_DELIVERIES_SHOWN,
    OutboxCounts, RequestKey, StoreError, from_millis, millis, parse_time, status_text,
};
use crate::call::{CallEvent, CallId, CallRecord, EventKind};
use crate::webhook::payload;

/// Migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: calls and their event log.
    "CREATE TABLE calls (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        call_id TEXT NOT NULL UNIQUE,
        provider_call_id TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX calls_provider ON calls(provider_call_id);
    CREATE TABLE events (
        call_id TEXT NOT NULL REFERENCES calls(call_id),
        sequence INTEGER NOT NULL,
        time TEXT NOT NULL,
        kind TEXT NOT NULL,
        PRIMARY KEY (call_id, sequence)
    ) WITHOUT ROWID;",
    // 2: idempotent PlaceCall, and who holds a call's media stream (and until
    // when, in Unix milliseconds; see `Lease`).
    "ALTER TABLE calls ADD COLUMN request_id TEXT;
    ALTER TABLE calls ADD COLUMN request_fingerprint TEXT;
    CREATE UNIQUE INDEX calls_request ON calls(request_id) WHERE request_id IS NOT NULL;
    ALTER TABLE calls ADD COLUMN media_owner TEXT;
    ALTER TABLE calls ADD COLUMN lease_until INTEGER;",
    // 3: the outbox of outcome webhooks (times in Unix milliseconds; the
    // lease is the claim of the worker sending it).
    "CREATE TABLE webhook_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT NOT NULL,
        call_id TEXT NOT NULL REFERENCES calls(call_id),
        url TEXT NOT NULL,
        event_type TEXT NOT NULL,
        body TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_status INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        next_attempt_at INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        lease_owner TEXT,
        lease_until INTEGER
    );
    CREATE INDEX webhook_outbox_call ON webhook_outbox(call_id, id);
    CREATE INDEX webhook_outbox_state ON webhook_outbox(state, next_attempt_at);",
];

/// The columns of a [`Delivery`], in the order [`delivery_row`] reads them.
const DELIVERY_COLUMNS: &str = "id, message_id, call_id, url, event_type, body, state, attempts, last_status, last_error, next_attempt_at, created_at";

fn delivery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        message_id: r.get(1)?,
        call_id: CallId::parse(&r.get::<_, String>(2)?).unwrap_or_default(),
        url: r.get(3)?,
        event_type: r.get(4)?,
        body: r.get(5)?,
        state: DeliveryState::parse(&r.get::<_, String>(6)?),
        attempts: r.get::<_, i64>(7)?.clamp(0, u32::MAX as i64) as u32,
        last_status: r.get::<_, i64>(8)?.clamp(0, u16::MAX as i64) as u16,
        last_error: r.get(9)?,
        next_attempt_at: from_millis(r.get(10)?),
        created_at: from_millis(r.get(11)?),
    })
}

/// A call's events above `after`, at most `limit`, in order.
fn read_events(c: &Connection, id: &CallId, after: u64, limit: i64) -> Result<Vec<CallEvent>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT sequence, time, kind FROM events WHERE call_id = ?1 AND sequence > ?2 ORDER BY sequence LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![id.as_str(), after as i64, limit], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (sequence, time, kind) = row?;
        out.push(CallEvent {
            sequence: sequence as u64,
            time: parse_time(&time)?,
            kind: serde_json::from_str::<EventKind>(&kind)?,
        });
    }
    Ok(out)
}

/// The SQLite call store. Cheap to clone.
#[derive(Clone)]
pub(super) struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the store.
    pub(super) fn open(file: Option<&Path>) -> Result<Self, StoreError> {
        let mut conn = match file {
            None => Connection::open_in_memory()?,
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                open_file(path)?
            }
        };
        conn.execute_batch("PRAGMA foreign_keys = ON;")?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock poisons it; the connection itself
            // is still consistent (SQLite rolls back the open transaction).
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }

    pub(super) async fn insert_call(
        &self,
        record: CallRecord,
        key: Option<RequestKey>,
    ) -> Result<Inserted, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(key) = &key {
                let existing: Option<(Option<String>, String)> = tx
                    .query_row(
                        "SELECT request_fingerprint, record FROM calls WHERE request_id = ?1",
                        [&key.id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((fingerprint, json)) = existing {
                    let stored: CallRecord = serde_json::from_str(&json)?;
                    return Ok(if fingerprint.as_deref() == Some(key.fingerprint.as_str()) {
                        Inserted::Existing(Box::new(stored))
                    } else {
                        Inserted::Mismatch(stored.call_id)
                    });
                }
            }
            tx.execute(
                "INSERT INTO calls (call_id, provider_call_id, status, created_at, record, request_id, request_fingerprint)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    record.call_id.as_str(),
                    record.provider_call_id,
                    status_text(record.status),
                    record.created_at.to_rfc3339(),
                    serde_json::to_string(&record)?,
                    key.as_ref().map(|k| k.id.as_str()),
                    key.as_ref().map(|k| k.fingerprint.as_str()),
                ],
            )?;
            tx.commit()?;
            Ok(Inserted::New)
        })
        .await
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
        let id = id.clone();
        self.with(move |c| {
            // IMMEDIATE: the write lock before the read, so nothing changes in between.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row: Option<(String, Option<String>)> = tx
                .query_row(
                    "SELECT record, media_owner FROM calls WHERE call_id = ?1",
                    [id.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (json, owner) = row.ok_or(StoreError::NotFound)?;
            let mut record: CallRecord = serde_json::from_str(&json)?;
            let generation = record.stream_generation;
            let events = f(&mut record);
            let resumed = super::note_resume(&mut record, generation, owner.as_deref());
            {
                let mut insert =
                    tx.prepare_cached("INSERT INTO events (call_id, sequence, time, kind) VALUES (?1, ?2, ?3, ?4)")?;
                for ev in &events {
                    insert.execute(params![
                        id.as_str(),
                        ev.sequence as i64,
                        ev.time.to_rfc3339(),
                        serde_json::to_string(&ev.kind)?
                    ])?;
                }
            }
            // The outcome webhooks of the change, in its transaction: a
            // message exists exactly when the change it reports does.
            if payload::makes_messages(&record, &events) {
                let log = if payload::ends(&events) {
                    read_events(&tx, &id, 0, payload::MAX_LOG_EVENTS as i64)?
                } else {
                    Vec::new()
                };
                let now = millis(Utc::now());
                let mut insert = tx.prepare_cached(
                    "INSERT INTO webhook_outbox (message_id, call_id, url, event_type, body, next_attempt_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                )?;
                for m in payload::messages(&record, &events, &log, &link_base) {
                    insert.execute(params![m.message_id, id.as_str(), m.url, m.event_type, m.body, now])?;
                }
            }
            // An answered call whose media stream nobody claimed yet gets a
            // lease of its own (see `MEDIA_WAIT`).
            let media_wait = Utc::now().timestamp_millis() + super::MEDIA_WAIT.as_millis() as i64;
            tx.execute(
                "UPDATE calls SET provider_call_id = ?2, status = ?3, record = ?4,
                     lease_until = CASE WHEN lease_until IS NULL AND media_owner IS NULL AND ?3 = 'in_progress'
                                        THEN ?5 ELSE lease_until END
                 WHERE call_id = ?1",
                params![
                    id.as_str(),
                    record.provider_call_id,
                    status_text(record.status),
                    serde_json::to_string(&record)?,
                    media_wait
                ],
            )?;
            if resumed {
                // See the PostgreSQL engine: a new stream generation frees the claim.
                tx.execute(
                    "UPDATE calls SET media_owner = NULL, lease_until = ?2 WHERE call_id = ?1",
                    params![id.as_str(), media_wait],
                )?;
            }
            tx.commit()?;
            Ok((record, events))
        })
        .await
    }

    pub(super) async fn get_call(&self, id: &CallId) -> Result<Option<CallRecord>, StoreError> {
        let id = id.clone();
        self.with(move |c| {
            let json: Option<String> = c
                .query_row("SELECT record FROM calls WHERE call_id = ?1", [id.as_str()], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
        })
        .await
    }

    pub(super) async fn events_after(
        &self,
        id: &CallId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<CallEvent>, StoreError> {
        let id = id.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |c| read_events(c, &id, after, limit)).await
    }

    pub(super) async fn list_calls_matching(
        &self,
        filter: &CallFilter,
        page_size: usize,
        after: Option<i64>,
    ) -> Result<CallPage, StoreError> {
        use rusqlite::types::Value;
        let mut clauses = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        if let Some(cursor) = after {
            clauses.push(if filter.oldest_first { "seq > ?" } else { "seq < ?" }.to_string());
            args.push(Value::Integer(cursor));
        }
        if !filter.statuses.is_empty() {
            let marks = vec!["?"; filter.statuses.len()].join(", ");
            clauses.push(format!("status IN ({marks})"));
            args.extend(filter.statuses.iter().map(|s| Value::Text(status_text(*s))));
        }
        if let Some(to) = &filter.to {
            // `to` is not a column: it is read from the stored record.
            clauses.push("json_extract(record, '$.to') = ?".to_string());
            args.push(Value::Text(to.clone()));
        }
        if let Some(t) = filter.created_after {
            clauses.push("created_at >= ?".to_string());
            args.push(Value::Text(t.to_rfc3339()));
        }
        if let Some(t) = filter.created_before {
            clauses.push("created_at < ?".to_string());
            args.push(Value::Text(t.to_rfc3339()));
        }
        let sql = format!(
            "SELECT seq, record FROM calls {} ORDER BY seq {} LIMIT ?",
            if clauses.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", clauses.join(" AND "))
            },
            if filter.oldest_first { "ASC" } else { "DESC" }
        );
        args.push(Value::Integer(i64::try_from(page_size).unwrap_or(i64::MAX - 1) + 1));
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut calls = Vec::new();
            let mut seqs = Vec::new();
            for row in rows {
                let (seq, json) = row?;
                seqs.push(seq);
                calls.push(serde_json::from_str::<CallRecord>(&json)?);
            }
            Ok(CallPage::cut(calls, seqs, page_size))
        })
        .await
    }

    pub(super) async fn unfinished_calls(&self) -> Result<Vec<CallRecord>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT record FROM calls WHERE status IN {LIVE_STATUSES} ORDER BY seq"
            ))?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(serde_json::from_str(&row?)?);
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn claim_media(&self, id: &CallId, lease: &Lease) -> Result<bool, StoreError> {
        let (id, owner, until) = (id.clone(), lease.owner.clone(), lease_until(lease));
        self.with(move |c| {
            let n = c.execute(
                &format!(
                    "UPDATE calls SET media_owner = ?2, lease_until = ?3
                     WHERE call_id = ?1 AND media_owner IS NULL AND status IN {LIVE_STATUSES}"
                ),
                params![id.as_str(), owner, until],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub(super) async fn renew_leases(&self, ids: &[CallId], lease: &Lease) -> Result<(), StoreError> {
        let (ids, owner, until) = (ids.to_vec(), lease.owner.clone(), lease_until(lease));
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt =
                    tx.prepare_cached("UPDATE calls SET lease_until = ?3 WHERE call_id = ?1 AND media_owner = ?2")?;
                for id in &ids {
                    stmt.execute(params![id.as_str(), owner, until])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub(super) async fn take_expired(&self, lease: &Lease, limit: usize) -> Result<Vec<CallRecord>, StoreError> {
        let (owner, until) = (lease.owner.clone(), lease_until(lease));
        let now = Utc::now().timestamp_millis();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut out = Vec::new();
            {
                let mut stmt = tx.prepare(&format!(
                    "UPDATE calls SET media_owner = ?1, lease_until = ?2
                     WHERE call_id IN (SELECT call_id FROM calls WHERE status IN {LIVE_STATUSES}
                                       AND lease_until IS NOT NULL AND lease_until < ?3 ORDER BY seq LIMIT ?4)
                     RETURNING record"
                ))?;
                let rows = stmt.query_map(params![owner, until, now, limit as i64], |r| r.get::<_, String>(0))?;
                for row in rows {
                    out.push(serde_json::from_str(&row?)?);
                }
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    pub(super) async fn take_unplaced(
        &self,
        lease: &Lease,
        older_than: Duration,
        limit: usize,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let (owner, until) = (lease.owner.clone(), lease_until(lease));
        let cutoff = Utc::now() - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut out = Vec::new();
            {
                // The queued calls are few (the live ones); their age is
                // judged here, created_at being RFC 3339 text.
                let mut stmt = tx.prepare(
                    "SELECT call_id, created_at, record FROM calls
                     WHERE status = 'queued' AND media_owner IS NULL AND provider_call_id = '' ORDER BY seq",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                })?;
                let mut take =
                    tx.prepare_cached("UPDATE calls SET media_owner = ?2, lease_until = ?3 WHERE call_id = ?1")?;
                for row in rows {
                    let (id, created_at, record) = row?;
                    let old = chrono::DateTime::parse_from_rfc3339(&created_at).is_ok_and(|t| t < cutoff);
                    if old && out.len() < limit {
                        take.execute(params![id, owner, until])?;
                        out.push(serde_json::from_str(&record)?);
                    }
                }
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    pub(super) async fn claim_deliveries(
        &self,
        owner: &str,
        lease: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let owner = owner.to_string();
        let now = millis(Utc::now());
        let until = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = {
                let mut stmt = tx.prepare_cached(&format!(
                    "UPDATE webhook_outbox SET lease_owner = ?1, lease_until = ?2
                     WHERE id IN (SELECT o.id FROM webhook_outbox o
                                  WHERE o.state = 'pending' AND o.next_attempt_at <= ?3
                                    AND (o.lease_until IS NULL OR o.lease_until < ?3)
                                    AND NOT EXISTS (SELECT 1 FROM webhook_outbox p
                                                    WHERE p.call_id = o.call_id AND p.url = o.url
                                                      AND p.state = 'pending' AND p.id < o.id)
                                  ORDER BY o.id LIMIT ?4)
                     RETURNING {DELIVERY_COLUMNS}"
                ))?;
                let rows = stmt.query_map(params![owner, until, now, limit as i64], delivery_row)?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            tx.commit()?;
            let mut out = out;
            out.sort_by_key(|d| d.id);
            Ok(out)
        })
        .await
    }

    pub(super) async fn record_attempt(&self, id: i64, owner: &str, a: &AttemptRecord) -> Result<bool, StoreError> {
        let (owner, a) = (owner.to_string(), a.clone());
        self.with(move |c| {
            let n = c.execute(
                "UPDATE webhook_outbox SET state = ?3, attempts = attempts + 1, last_status = ?4, last_error = ?5,
                     next_attempt_at = ?6, lease_owner = NULL, lease_until = NULL
                 WHERE id = ?1 AND lease_owner = ?2 AND state = 'pending'",
                params![
                    id,
                    owner,
                    a.state.as_str(),
                    i64::from(a.http_status),
                    a.error,
                    millis(a.next_attempt_at)
                ],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub(super) async fn deliveries(&self, id: &CallId) -> Result<Vec<Delivery>, StoreError> {
        let id = id.clone();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_outbox WHERE call_id = ?1 ORDER BY id LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![id.as_str(), MAX_DELIVERIES_SHOWN as i64], delivery_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub(super) async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        self.with(|c| {
            let (pending, dead) = c.query_row(
                "SELECT (SELECT count(*) FROM webhook_outbox WHERE state = 'pending'),
                        (SELECT count(*) FROM webhook_outbox WHERE state = 'dead')",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )?;
            Ok(OutboxCounts {
                pending: pending.max(0) as u64,
                dead: dead.max(0) as u64,
            })
        })
        .await
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| {
            // One read of the calls table: cheap, and it fails when the file
            // has gone, is locked, or lost its tables.
            c.query_row("SELECT count(*) FROM (SELECT 1 FROM calls LIMIT 1)", [], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(())
        })
        .await
    }

    /// Checkpoints the WAL so the file is complete on its own (graceful shutdown).
    pub(super) async fn close(&self) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
            Ok(())
        })
        .await
    }
}

/// When a lease taken now ends, in Unix milliseconds.
fn lease_until(lease: &Lease) -> i64 {
    Utc::now().timestamp_millis() + i64::try_from(lease.ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

fn open_file(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    // WAL lets readers run beside the writer; NORMAL sync is durable across
    // process crashes (only an OS crash can lose the last transactions).
    conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // IMMEDIATE: the write lock before the version is read, so two
    // processes opening one file at once apply each migration once.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.execute_batch(&format!("{sql}; PRAGMA user_version = {};", i + 1))?;
    }
    tx.commit()?;
    Ok(())
}
