//! Umbra's embedded store: one SQLite file (bundled SQLite, WAL mode) that keeps
//! what must survive a restart.
//!
//! - **alerts**: one row per alert fingerprint, with its state and its full JSON;
//!   `umbra alerts` and `/api/alerts` read them.
//! - **state**: named JSON documents that a component saves whole and restores
//!   whole on start: the analysis baselines, the canary stage, the last weights.
//! - **capacity**: measured capacity curves, one row per run.
//!
//! The store knows nothing of the types it keeps (it depends on no other Umbra
//! crate): callers hand it JSON and a few indexed columns. The schema carries a
//! version (`PRAGMA user_version`) and [`MIGRATIONS`] bring an older file up to
//! date; a file from a newer Umbra is refused rather than misread.

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Schema steps, applied in order; step i takes the file from version i to i + 1.
/// Never edit a released step: add one.
pub const MIGRATIONS: &[&str] = &[
    // 1: alerts, state documents, capacity curves.
    "CREATE TABLE alerts (
         fingerprint TEXT PRIMARY KEY,
         profile     TEXT NOT NULL,
         role        TEXT NOT NULL,
         metric      TEXT NOT NULL,
         state       TEXT NOT NULL,
         started_ms  INTEGER NOT NULL,
         resolved_ms INTEGER,
         updated_ms  INTEGER NOT NULL,
         body        TEXT NOT NULL
     );
     CREATE INDEX alerts_by_state ON alerts (state, started_ms);
     CREATE TABLE state (
         name       TEXT PRIMARY KEY,
         updated_ms INTEGER NOT NULL,
         body       TEXT NOT NULL
     );
     CREATE TABLE capacity (
         id           INTEGER PRIMARY KEY AUTOINCREMENT,
         target       TEXT NOT NULL,
         measured_ms  INTEGER NOT NULL,
         capacity_rps REAL,
         body         TEXT NOT NULL
     );
     CREATE INDEX capacity_by_target ON capacity (target, measured_ms);",
    // 2: window summaries (for reports) and an event log (weight changes, canary decisions).
    "CREATE TABLE windows (
         profile  TEXT NOT NULL,
         role     TEXT NOT NULL,
         start_ms INTEGER NOT NULL,
         end_ms   INTEGER NOT NULL,
         body     TEXT NOT NULL,
         PRIMARY KEY (profile, role, start_ms)
     );
     CREATE INDEX windows_by_time ON windows (start_ms);
     CREATE TABLE events (
         id    INTEGER PRIMARY KEY AUTOINCREMENT,
         kind  TEXT NOT NULL,
         at_ms INTEGER NOT NULL,
         body  TEXT NOT NULL
     );
     CREATE INDEX events_by_kind ON events (kind, at_ms);",
];

/// What went wrong, and with which file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {action}: {source}")]
    Sqlite {
        path: String,
        action: &'static str,
        source: rusqlite::Error,
    },
    #[error(
        "store {path}: schema version {found} is newer than this Umbra knows ({known}); use a newer umbra or another file"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error(
        "store {path}: schema version {found} is older than this Umbra's ({known}) and the file is open read-only; start the proxy on it once to migrate"
    )]
    TooOld {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("store {path}: {what} `{key}` holds JSON this Umbra cannot read: {source}")]
    Json {
        path: String,
        what: &'static str,
        key: String,
        source: serde_json::Error,
    },
}

/// An alert as stored: indexed columns plus the caller's full JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRow {
    pub fingerprint: String,
    pub profile: String,
    pub role: String,
    pub metric: String,
    /// `firing` or `resolved`.
    pub state: String,
    pub started_ms: u64,
    pub resolved_ms: Option<u64>,
    pub updated_ms: u64,
    pub body: serde_json::Value,
}

/// Which alerts to list.
#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    /// Only alerts in this state (`firing`, `resolved`); all when `None`.
    pub state: Option<String>,
    /// Only alerts of this profile.
    pub profile: Option<String>,
    /// At most this many, newest first; all when `None`.
    pub limit: Option<usize>,
}

/// One capacity measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityRow {
    pub target: String,
    pub measured_ms: u64,
    pub capacity_rps: Option<f64>,
    /// The whole result (curve, SLO, mix) as the caller wrote it.
    pub body: serde_json::Value,
}

/// One window summary of one profile and role.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowRow {
    pub profile: String,
    pub role: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub body: serde_json::Value,
}

/// One entry of the event log (a weight change, a canary decision).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    pub kind: String,
    pub at_ms: u64,
    pub body: serde_json::Value,
}

/// The store. Cheap to share behind an `Arc`; calls are serialised on one connection.
pub struct Store {
    path: String,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let name = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Let SQLite report a missing directory in its own words if this fails.
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(sqlite(&name, "opening"))?;
        Store::setup(name, conn, true)
    }

    /// Opens an existing store for reading only (`umbra alerts` beside a running proxy).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let name = path.display().to_string();
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite(&name, "opening"))?;
        Store::setup(name, conn, false)
    }

    /// A store that lives in memory only (tests, `--no-store`).
    pub fn in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory().map_err(sqlite(":memory:", "opening"))?;
        Store::setup(":memory:".to_string(), conn, true)
    }

    fn setup(path: String, mut conn: Connection, write: bool) -> Result<Store, StoreError> {
        // A proxy writing and `umbra alerts` reading at once wait for each other
        // briefly instead of failing with SQLITE_BUSY.
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(sqlite(&path, "setting the busy timeout"))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sqlite(&path, "reading the schema version"))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path,
                found: version,
                known,
            });
        }
        if write {
            // WAL: readers never block the writer, and a crash loses at most the
            // last transaction.
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(sqlite(&path, "switching to WAL"))?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(sqlite(&path, "setting synchronous"))?;
            for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                let tx = conn
                    .transaction()
                    .map_err(sqlite(&path, "starting a migration"))?;
                tx.execute_batch(step)
                    .map_err(sqlite(&path, "migrating the schema"))?;
                tx.pragma_update(None, "user_version", (i + 1) as i64)
                    .map_err(sqlite(&path, "recording the schema version"))?;
                tx.commit()
                    .map_err(sqlite(&path, "committing a migration"))?;
            }
        } else if version < known {
            return Err(StoreError::TooOld {
                path,
                found: version,
                known,
            });
        }
        Ok(Store {
            path,
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions
        // roll back), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts or replaces alerts, in one transaction.
    pub fn put_alerts(&self, rows: &[AlertRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(sqlite(&self.path, "starting a transaction"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO alerts (fingerprint, profile, role, metric, state, started_ms,
                                         resolved_ms, updated_ms, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (fingerprint) DO UPDATE SET
                         profile = ?2, role = ?3, metric = ?4, state = ?5, started_ms = ?6,
                         resolved_ms = ?7, updated_ms = ?8, body = ?9",
                )
                .map_err(sqlite(&self.path, "preparing an alert write"))?;
            for r in rows {
                stmt.execute(params![
                    r.fingerprint,
                    r.profile,
                    r.role,
                    r.metric,
                    r.state,
                    r.started_ms as i64,
                    r.resolved_ms.map(|v| v as i64),
                    r.updated_ms as i64,
                    r.body.to_string(),
                ])
                .map_err(sqlite(&self.path, "writing an alert"))?;
            }
        }
        tx.commit().map_err(sqlite(&self.path, "saving alerts"))
    }

    /// Alerts matching `q`, newest first.
    pub fn alerts(&self, q: &AlertQuery) -> Result<Vec<AlertRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT fingerprint, profile, role, metric, state, started_ms, resolved_ms,
                        updated_ms, body
                 FROM alerts
                 WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR profile = ?2)
                 ORDER BY started_ms DESC, fingerprint
                 LIMIT ?3",
            )
            .map_err(sqlite(&self.path, "preparing an alert query"))?;
        let limit = q.limit.map_or(-1, |l| l.min(i64::MAX as usize) as i64);
        let rows = stmt
            .query_map(params![q.state, q.profile, limit], |r| {
                Ok((
                    AlertRow {
                        fingerprint: r.get(0)?,
                        profile: r.get(1)?,
                        role: r.get(2)?,
                        metric: r.get(3)?,
                        state: r.get(4)?,
                        started_ms: r.get::<_, i64>(5)?.max(0) as u64,
                        resolved_ms: r.get::<_, Option<i64>>(6)?.map(|v| v.max(0) as u64),
                        updated_ms: r.get::<_, i64>(7)?.max(0) as u64,
                        body: serde_json::Value::Null,
                    },
                    r.get::<_, String>(8)?,
                ))
            })
            .map_err(sqlite(&self.path, "listing alerts"))?;
        let mut out = Vec::new();
        for row in rows {
            let (mut row, body) = row.map_err(sqlite(&self.path, "reading an alert"))?;
            row.body = serde_json::from_str(&body).map_err(|source| StoreError::Json {
                path: self.path.clone(),
                what: "alert",
                key: row.fingerprint.clone(),
                source,
            })?;
            out.push(row);
        }
        Ok(out)
    }

    /// Deletes resolved alerts beyond the newest `keep`.
    pub fn prune_resolved(&self, keep: usize) -> Result<usize, StoreError> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM alerts WHERE state = 'resolved' AND fingerprint NOT IN (
                 SELECT fingerprint FROM alerts WHERE state = 'resolved'
                 ORDER BY started_ms DESC LIMIT ?1)",
            params![keep.min(i64::MAX as usize) as i64],
        )
        .map_err(sqlite(&self.path, "pruning resolved alerts"))
    }

    /// Saves a named document whole (replacing the previous one).
    pub fn put_state<T: Serialize + ?Sized>(
        &self,
        name: &str,
        value: &T,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(value).map_err(|source| StoreError::Json {
            path: self.path.clone(),
            what: "state",
            key: name.to_string(),
            source,
        })?;
        self.conn()
            .execute(
                "INSERT INTO state (name, updated_ms, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET updated_ms = ?2, body = ?3",
                params![name, now_ms as i64, body],
            )
            .map_err(sqlite(&self.path, "saving a state document"))?;
        Ok(())
    }

    /// A named document, if one was saved.
    pub fn state<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        let body: Option<String> = self
            .conn()
            .query_row(
                "SELECT body FROM state WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(sqlite(&self.path, "reading a state document"))?;
        body.map(|b| {
            serde_json::from_str(&b).map_err(|source| StoreError::Json {
                path: self.path.clone(),
                what: "state",
                key: name.to_string(),
                source,
            })
        })
        .transpose()
    }

    /// Removes a named document; true when there was one.
    pub fn delete_state(&self, name: &str) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM state WHERE name = ?1", params![name])
            .map_err(sqlite(&self.path, "deleting a state document"))?;
        Ok(n > 0)
    }

    /// Records one capacity measurement.
    pub fn add_capacity(&self, row: &CapacityRow) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO capacity (target, measured_ms, capacity_rps, body)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    row.target,
                    row.measured_ms as i64,
                    row.capacity_rps,
                    row.body.to_string()
                ],
            )
            .map_err(sqlite(&self.path, "saving a capacity curve"))?;
        Ok(())
    }

    /// Capacity measurements, newest first; of one target when given.
    pub fn capacities(&self, target: Option<&str>) -> Result<Vec<CapacityRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT target, measured_ms, capacity_rps, body FROM capacity
                 WHERE (?1 IS NULL OR target = ?1) ORDER BY measured_ms DESC, id DESC",
            )
            .map_err(sqlite(&self.path, "preparing a capacity query"))?;
        let rows = stmt
            .query_map(params![target], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<f64>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(sqlite(&self.path, "listing capacity curves"))?;
        let mut out = Vec::new();
        for row in rows {
            let (target, at, rps, body) =
                row.map_err(sqlite(&self.path, "reading a capacity curve"))?;
            let body = serde_json::from_str(&body).map_err(|source| StoreError::Json {
                path: self.path.clone(),
                what: "capacity curve of",
                key: target.clone(),
                source,
            })?;
            out.push(CapacityRow {
                target,
                measured_ms: at.max(0) as u64,
                capacity_rps: rps,
                body,
            });
        }
        Ok(out)
    }
}

impl Store {
    /// Saves window summaries (replacing one of the same profile, role and start).
    pub fn put_windows(&self, rows: &[WindowRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(sqlite(&self.path, "starting a transaction"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO windows (profile, role, start_ms, end_ms, body)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(sqlite(&self.path, "preparing a window write"))?;
            for r in rows {
                stmt.execute(params![
                    r.profile,
                    r.role,
                    r.start_ms as i64,
                    r.end_ms as i64,
                    r.body.to_string()
                ])
                .map_err(sqlite(&self.path, "writing a window"))?;
            }
        }
        tx.commit().map_err(sqlite(&self.path, "saving windows"))
    }

    /// Window summaries that start in `[from_ms, to_ms)`, oldest first.
    pub fn windows(&self, from_ms: u64, to_ms: u64) -> Result<Vec<WindowRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT profile, role, start_ms, end_ms, body FROM windows
                 WHERE start_ms >= ?1 AND start_ms < ?2 ORDER BY start_ms, profile, role",
            )
            .map_err(sqlite(&self.path, "preparing a window query"))?;
        let rows = stmt
            .query_map(params![clamp(from_ms), clamp(to_ms)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(sqlite(&self.path, "listing windows"))?;
        let mut out = Vec::new();
        for row in rows {
            let (profile, role, start, end, body) =
                row.map_err(sqlite(&self.path, "reading a window"))?;
            let body = serde_json::from_str(&body).map_err(|source| StoreError::Json {
                path: self.path.clone(),
                what: "window of",
                key: profile.clone(),
                source,
            })?;
            out.push(WindowRow {
                profile,
                role,
                start_ms: start.max(0) as u64,
                end_ms: end.max(0) as u64,
                body,
            });
        }
        Ok(out)
    }

    /// Deletes window summaries that started before `before_ms`; returns how many.
    pub fn prune_windows(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.conn()
            .execute(
                "DELETE FROM windows WHERE start_ms < ?1",
                params![clamp(before_ms)],
            )
            .map_err(sqlite(&self.path, "pruning windows"))
    }

    /// Appends to the event log.
    pub fn add_event(&self, e: &EventRow) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO events (kind, at_ms, body) VALUES (?1, ?2, ?3)",
                params![e.kind, clamp(e.at_ms), e.body.to_string()],
            )
            .map_err(sqlite(&self.path, "saving an event"))?;
        Ok(())
    }

    /// Events of `kind` (all kinds when `None`) in `[from_ms, to_ms)`, oldest first.
    pub fn events(
        &self,
        kind: Option<&str>,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<EventRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT kind, at_ms, body FROM events
                 WHERE (?1 IS NULL OR kind = ?1) AND at_ms >= ?2 AND at_ms < ?3
                 ORDER BY at_ms, id",
            )
            .map_err(sqlite(&self.path, "preparing an event query"))?;
        let rows = stmt
            .query_map(params![kind, clamp(from_ms), clamp(to_ms)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(sqlite(&self.path, "listing events"))?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, at, body) = row.map_err(sqlite(&self.path, "reading an event"))?;
            let body = serde_json::from_str(&body).map_err(|source| StoreError::Json {
                path: self.path.clone(),
                what: "event",
                key: kind.clone(),
                source,
            })?;
            out.push(EventRow {
                kind,
                at_ms: at.max(0) as u64,
                body,
            });
        }
        Ok(out)
    }
}

/// Milliseconds as SQLite's signed integer (far-future bounds saturate).
fn clamp(ms: u64) -> i64 {
    ms.min(i64::MAX as u64) as i64
}

fn sqlite(path: &str, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let path = path.to_string();
    move |source| StoreError::Sqlite {
        path,
        action,
        source,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("umbra-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("umbra.db")
    }

    fn alert(fp: &str, state: &str, started: u64) -> AlertRow {
        AlertRow {
            fingerprint: fp.into(),
            profile: "p1".into(),
            role: "shadow".into(),
            metric: "p99".into(),
            state: state.into(),
            started_ms: started,
            resolved_ms: (state == "resolved").then_some(started + 10),
            updated_ms: started + 10,
            body: json!({ "fingerprint": fp, "n": started }),
        }
    }

    #[test]
    fn alerts_survive_reopening_and_upsert_by_fingerprint() {
        let path = temp("alerts");
        {
            let s = Store::open(&path).unwrap();
            s.put_alerts(&[alert("a", "firing", 1), alert("b", "firing", 2)])
                .unwrap();
            s.put_alerts(&[alert("a", "resolved", 1)]).unwrap();
        }
        let s = Store::open(&path).unwrap();
        let all = s.alerts(&AlertQuery::default()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].fingerprint, "b", "newest first");
        let firing = s
            .alerts(&AlertQuery {
                state: Some("firing".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(firing.len(), 1);
        assert_eq!(firing[0].body, json!({ "fingerprint": "b", "n": 2 }));
        let resolved = s
            .alerts(&AlertQuery {
                state: Some("resolved".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(resolved[0].resolved_ms, Some(11));
        // A reader beside the writer sees the same rows.
        let r = Store::open_read_only(&path).unwrap();
        assert_eq!(r.alerts(&AlertQuery::default()).unwrap().len(), 2);
    }

    #[test]
    fn pruning_keeps_the_newest_resolved_and_every_firing_alert() {
        let s = Store::in_memory().unwrap();
        let rows: Vec<AlertRow> = (0..5)
            .map(|i| alert(&format!("r{i}"), "resolved", i))
            .chain([alert("f", "firing", 0)])
            .collect();
        s.put_alerts(&rows).unwrap();
        assert_eq!(s.prune_resolved(2).unwrap(), 3);
        let left: Vec<String> = s
            .alerts(&AlertQuery::default())
            .unwrap()
            .into_iter()
            .map(|r| r.fingerprint)
            .collect();
        assert_eq!(left, ["r4", "r3", "f"]);
    }

    #[test]
    fn state_documents_round_trip_and_replace() {
        let s = Store::in_memory().unwrap();
        assert_eq!(s.state::<Vec<u32>>("canary").unwrap(), None);
        s.put_state("canary", &vec![1u32, 2], 5).unwrap();
        s.put_state("canary", &vec![3u32], 6).unwrap();
        assert_eq!(s.state::<Vec<u32>>("canary").unwrap(), Some(vec![3]));
        let e = s.state::<String>("canary").unwrap_err().to_string();
        assert!(e.contains("state `canary`"), "{e}");
        assert!(s.delete_state("canary").unwrap());
        assert!(!s.delete_state("canary").unwrap());
    }

    #[test]
    fn capacity_curves_are_listed_newest_first() {
        let s = Store::in_memory().unwrap();
        for (t, at) in [("a", 1), ("b", 2), ("a", 3)] {
            s.add_capacity(&CapacityRow {
                target: t.into(),
                measured_ms: at,
                capacity_rps: Some(at as f64 * 100.0),
                body: json!({ "at": at }),
            })
            .unwrap();
        }
        let a = s.capacities(Some("a")).unwrap();
        assert_eq!(a.iter().map(|r| r.measured_ms).collect::<Vec<_>>(), [3, 1]);
        assert_eq!(s.capacities(None).unwrap().len(), 3);
    }

    #[test]
    fn windows_and_events_are_kept_by_time() {
        let s = Store::in_memory().unwrap();
        let w = |profile: &str, start: u64| WindowRow {
            profile: profile.into(),
            role: "shadow".into(),
            start_ms: start,
            end_ms: start + 10,
            body: json!({ "p99_ms": start }),
        };
        s.put_windows(&[w("a", 0), w("b", 10), w("a", 20)]).unwrap();
        s.put_windows(&[w("a", 20)]).unwrap();
        assert_eq!(s.windows(0, 100).unwrap().len(), 3, "same key replaced");
        assert_eq!(s.windows(10, 20).unwrap()[0].profile, "b");
        assert_eq!(s.prune_windows(15).unwrap(), 2);
        for (kind, at) in [("weights", 5), ("canary", 6), ("weights", 7)] {
            s.add_event(&EventRow {
                kind: kind.into(),
                at_ms: at,
                body: json!({ "at": at }),
            })
            .unwrap();
        }
        let weights = s.events(Some("weights"), 0, u64::MAX).unwrap();
        assert_eq!(weights.iter().map(|e| e.at_ms).collect::<Vec<_>>(), [5, 7]);
        assert_eq!(s.events(None, 6, 7).unwrap().len(), 1);
    }

    #[test]
    fn an_older_file_is_migrated_in_place() {
        let path = temp("older");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute(
                "INSERT INTO state (name, updated_ms, body) VALUES ('kept', 1, '[1]')",
                [],
            )
            .unwrap();
        }
        let e = Store::open_read_only(&path).unwrap_err().to_string();
        assert!(e.contains("schema version 1 is older"), "{e}");
        let s = Store::open(&path).unwrap();
        assert_eq!(s.state::<Vec<u8>>("kept").unwrap(), Some(vec![1]));
        s.put_windows(&[]).unwrap();
        assert!(s.windows(0, 10).unwrap().is_empty());
    }

    #[test]
    fn a_file_from_a_newer_umbra_is_refused() {
        let path = temp("newer");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        let e = Store::open(&path).unwrap_err().to_string();
        assert!(e.contains("schema version 99 is newer"), "{e}");
        assert!(e.contains("umbra.db"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_named_in_the_error() {
        let path = temp("garbage");
        std::fs::write(&path, b"this is not sqlite, just text that is long enough").unwrap();
        let e = Store::open(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("store {}", path.display())), "{e}");
    }
}
