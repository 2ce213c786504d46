//! The call store: SQLite (file or memory) with numbered migrations.
//!
//! A call is one row (indexed columns plus the whole record as JSON) and its
//! events are an append-only table keyed by `(call_id, sequence)`. An event and
//! the record change it causes are written in one transaction, so the log and
//! the record never disagree, and the primary key makes a duplicate or a gap
//! impossible to store. SQLite calls are blocking: they run on the blocking
//! pool, one connection behind a mutex (WAL mode; writes are per event, never
//! per audio frame, so this is far from the bottleneck).

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::call::{CallEvent, CallId, CallRecord, CallStatus, EventKind};
use crate::config::DatabaseLocation;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
];

/// The SQLite call store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// How many events each [`Store::events_after`] returned (tests check the paging).
    #[cfg(test)]
    pages: Arc<Mutex<Vec<usize>>>,
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

impl Store {
    /// Opens (creating if needed) and migrates the store.
    pub fn open(location: &DatabaseLocation) -> Result<Self, StoreError> {
        let conn = match location {
            DatabaseLocation::Memory => Connection::open_in_memory()?,
            DatabaseLocation::File(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                open_file(path)?
            }
        };
        conn.execute_batch("PRAGMA foreign_keys = ON;")?;
        migrate(&conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            #[cfg(test)]
            pages: Arc::default(),
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

    /// Stores a new call (before anything is dialled).
    pub async fn insert_call(&self, record: CallRecord) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO calls (call_id, provider_call_id, status, created_at, record) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    record.call_id.as_str(),
                    record.provider_call_id,
                    status_text(record.status),
                    record.created_at.to_rfc3339(),
                    serde_json::to_string(&record)?
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Writes a changed record together with the events it came with (their
    /// sequences must continue the log; the primary key enforces it).
    pub async fn commit(&self, record: CallRecord, events: Vec<CallEvent>) -> Result<(), StoreError> {
        self.with(move |c| {
            let tx = c.transaction()?;
            for ev in &events {
                tx.execute(
                    "INSERT INTO events (call_id, sequence, time, kind) VALUES (?1, ?2, ?3, ?4)",
                    params![
                        record.call_id.as_str(),
                        ev.sequence as i64,
                        ev.time.to_rfc3339(),
                        serde_json::to_string(&ev.kind)?
                    ],
                )?;
            }
            let n = tx.execute(
                "UPDATE calls SET provider_call_id = ?2, status = ?3, record = ?4 WHERE call_id = ?1",
                params![
                    record.call_id.as_str(),
                    record.provider_call_id,
                    status_text(record.status),
                    serde_json::to_string(&record)?
                ],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// One call record.
    pub async fn get_call(&self, id: &CallId) -> Result<Option<CallRecord>, StoreError> {
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

    /// The events of a call with a sequence above `after`, in order, at most `limit` of them.
    pub async fn events_after(&self, id: &CallId, after: u64, limit: usize) -> Result<Vec<CallEvent>, StoreError> {
        let id = id.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let events = self.with(move |c| {
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
        })
        .await?;
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
    /// digits), and in that form text order is time order ('+' sorts before
    /// '.' and the digits). The bounds are written the same way.
    pub async fn list_calls_matching(
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
            let next = if calls.len() > page_size {
                calls.truncate(page_size);
                seqs.get(page_size - 1).copied()
            } else {
                None
            };
            Ok(CallPage { calls, next })
        })
        .await
    }

    /// Calls that were live when the server last stopped.
    pub async fn unfinished_calls(&self) -> Result<Vec<CallRecord>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT record FROM calls WHERE status IN ('queued', 'initiated', 'ringing', 'in_progress') ORDER BY seq",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(serde_json::from_str(&row?)?);
            }
            Ok(out)
        })
        .await
    }

    /// Answers when the database does: one read of the calls table (the
    /// readiness probe; cheap, and it fails when the file has gone or is locked).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| {
            c.query_row("SELECT count(*) FROM (SELECT 1 FROM calls LIMIT 1)", [], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(())
        })
        .await
    }

    /// Checkpoints the WAL so the file is complete on its own (graceful shutdown).
    pub async fn close(&self) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
            Ok(())
        })
        .await
    }
}

fn open_file(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    // WAL lets readers run beside the writer; NORMAL sync is durable across
    // process crashes (only an OS crash can lose the last transactions).
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;")?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        conn.execute_batch(&format!("BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;", i + 1))?;
    }
    Ok(())
}

fn status_text(s: CallStatus) -> String {
    // The serde spelling, so SQL filters and the JSON record agree.
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Join(format!("bad stored time {s:?}: {e}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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

    fn ev(seq: u64) -> CallEvent {
        CallEvent {
            sequence: seq,
            time: Utc::now(),
            kind: EventKind::Dtmf { digit: "1".into() },
        }
    }

    #[tokio::test]
    async fn events_are_gapless_and_duplicates_are_refused() {
        let store = Store::open(&DatabaseLocation::Memory).unwrap();
        let id = CallId::new();
        store.insert_call(record(&id)).await.unwrap();
        let mut rec = record(&id);
        rec.event_count = 2;
        store.commit(rec.clone(), vec![ev(1), ev(2)]).await.unwrap();
        assert!(store.commit(rec, vec![ev(2)]).await.is_err(), "sequence 2 twice");
        let evs = store.events_after(&id, 1, 10).await.unwrap();
        assert_eq!(evs.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![2]);
        assert_eq!(store.get_call(&id).await.unwrap().unwrap().event_count, 2);
    }

    #[tokio::test]
    async fn list_pages_newest_first() {
        let store = Store::open(&DatabaseLocation::Memory).unwrap();
        let mut ids = vec![];
        for _ in 0..5 {
            let id = CallId::new();
            store.insert_call(record(&id)).await.unwrap();
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

    #[tokio::test]
    async fn filtered_listings_page_through_exactly_the_matching_calls() {
        let store = Store::open(&DatabaseLocation::Memory).unwrap();
        let t0 = DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z").unwrap().to_utc();
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
            store.insert_call(rec.clone()).await.unwrap();
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

    #[tokio::test]
    async fn file_store_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("va-store-{}", uuid::Uuid::new_v4()));
        let loc = DatabaseLocation::File(dir.join("nested/calls.db"));
        let id = CallId::new();
        {
            let store = Store::open(&loc).unwrap();
            store.insert_call(record(&id)).await.unwrap();
            store.close().await.unwrap();
        }
        let store = Store::open(&loc).unwrap();
        assert!(store.get_call(&id).await.unwrap().is_some());
        assert_eq!(store.unfinished_calls().await.unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
