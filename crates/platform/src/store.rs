//! The gateway's durable state in one SQLite file (WAL): API keys, stored as sha256
//! hashes only, and the usage ledger, one row per request.
//!
//! Every row is its own transaction, committed before the client sees the end of its
//! response, so a SIGKILL of the gateway loses no row a client saw complete; the
//! request id is the primary key, so no row is ever written twice.

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source} (check the path and permissions, or delete a corrupt file)")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("a key named `{0}` already exists (revoke it or pick another name)")]
    KeyExists(String),
    #[error("no key named `{0}`")]
    NoKey(String),
    #[error("cannot read random bytes for a key: {0}")]
    Random(std::io::Error),
}

/// An API key as listed (never the key itself).
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub name: String,
    pub admin: bool,
    /// Requests per minute (None = unlimited).
    pub rpm: Option<u64>,
    /// Prompt + completion tokens per UTC day (None = unlimited).
    pub tokens_per_day: Option<u64>,
    pub created: i64,
    pub revoked: bool,
}

/// One ledger row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UsageRow {
    pub id: String,
    /// Unix milliseconds when the request ended.
    pub time_ms: i64,
    pub key: String,
    pub deployment: String,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    /// Of the completion tokens, those a thinking model spent reasoning (the
    /// replica's `usage.completion_tokens_details.reasoning_tokens`; 0 otherwise).
    pub reasoning_tokens: u64,
    pub compute_ms: u64,
    pub cold_start: bool,
    pub cost: f64,
    /// HTTP status the client got (499 = client went away).
    pub status: u16,
}

/// Totals per key and deployment.
#[derive(Debug, Clone, Serialize)]
pub struct UsageSummary {
    pub key: String,
    pub deployment: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    pub compute_ms: u64,
    pub cold_starts: u64,
    pub errors: u64,
    pub cost: f64,
}

pub struct Store {
    conn: Mutex<Connection>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// sha256 of a key, hex.
pub fn hash_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Store {
    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        // WAL: readers (`thaw usage`) never block the gateway; NORMAL sync keeps every
        // committed transaction across process kills (only power loss can drop the tail).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS keys (
                name TEXT PRIMARY KEY,
                hash TEXT NOT NULL UNIQUE,
                admin INTEGER NOT NULL,
                rpm INTEGER,
                tokens_per_day INTEGER,
                created INTEGER NOT NULL,
                revoked INTEGER NOT NULL DEFAULT 0
             );
             CREATE TABLE IF NOT EXISTS usage (
                id TEXT PRIMARY KEY,
                time_ms INTEGER NOT NULL,
                key TEXT NOT NULL,
                deployment TEXT NOT NULL,
                prompt_tokens INTEGER NOT NULL,
                cached_tokens INTEGER NOT NULL,
                completion_tokens INTEGER NOT NULL,
                reasoning_tokens INTEGER NOT NULL DEFAULT 0,
                compute_ms INTEGER NOT NULL,
                cold_start INTEGER NOT NULL,
                cost REAL NOT NULL,
                status INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS usage_key_time ON usage(key, time_ms);",
        )
        .map_err(open_err)?;
        add_missing_columns(&conn).map_err(open_err)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Create a key; returns the key itself, which is never stored.
    pub fn create_key(
        &self,
        name: &str,
        admin: bool,
        rpm: Option<u64>,
        tokens_per_day: Option<u64>,
    ) -> Result<String, StoreError> {
        let mut bytes = [0u8; 32];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(StoreError::Random)?;
        let key = format!("thaw-{}", hex(&bytes));
        let conn = self.conn();
        let exists: Option<i64> = conn
            .query_row("SELECT 1 FROM keys WHERE name = ?1", [name], |r| r.get(0))
            .optional()?;
        if exists.is_some() {
            return Err(StoreError::KeyExists(name.into()));
        }
        conn.execute(
            "INSERT INTO keys (name, hash, admin, rpm, tokens_per_day, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![name, hash_key(&key), admin, rpm.map(|v| v as i64), tokens_per_day.map(|v| v as i64), now_ms() / 1000],
        )?;
        Ok(key)
    }

    pub fn revoke_key(&self, name: &str) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "UPDATE keys SET revoked = 1 WHERE name = ?1 AND revoked = 0",
            [name],
        )?;
        if n == 0 {
            return Err(StoreError::NoKey(name.into()));
        }
        Ok(())
    }

    pub fn list_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT name, admin, rpm, tokens_per_day, created, revoked FROM keys ORDER BY created, name",
        )?;
        let rows = st.query_map([], key_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The live key whose hash matches `key`.
    pub fn authenticate(&self, key: &str) -> Result<Option<KeyInfo>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name, admin, rpm, tokens_per_day, created, revoked FROM keys WHERE hash = ?1 AND revoked = 0",
                [hash_key(key)],
                key_row,
            )
            .optional()?)
    }

    /// Append one row in its own transaction. A row with an id already present is
    /// left as it is (returns false): retries never double-count.
    pub fn record(&self, r: &UsageRow) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO usage (id, time_ms, key, deployment, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, compute_ms, cold_start, cost, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![r.id, r.time_ms, r.key, r.deployment, r.prompt_tokens as i64, r.cached_tokens as i64,
                    r.completion_tokens as i64, r.reasoning_tokens as i64, r.compute_ms as i64,
                    r.cold_start, r.cost, r.status],
        )?;
        Ok(n == 1)
    }

    /// Tokens `key` used since `since_ms`.
    pub fn tokens_since(&self, key: &str, since_ms: i64) -> Result<u64, StoreError> {
        let n: i64 = self.conn().query_row(
            "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage WHERE key = ?1 AND time_ms >= ?2",
            params![key, since_ms],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Rows since `since_ms`, optionally for one key, newest last.
    pub fn rows(
        &self,
        since_ms: i64,
        key: Option<&str>,
        limit: usize,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, time_ms, key, deployment, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, compute_ms, cold_start, cost, status
             FROM usage WHERE time_ms >= ?1 AND (?2 IS NULL OR key = ?2) ORDER BY time_ms, id LIMIT ?3",
        )?;
        let rows = st.query_map(params![since_ms, key, limit as i64], |r| {
            Ok(UsageRow {
                id: r.get(0)?,
                time_ms: r.get(1)?,
                key: r.get(2)?,
                deployment: r.get(3)?,
                prompt_tokens: r.get::<_, i64>(4)? as u64,
                cached_tokens: r.get::<_, i64>(5)? as u64,
                completion_tokens: r.get::<_, i64>(6)? as u64,
                reasoning_tokens: r.get::<_, i64>(7)? as u64,
                compute_ms: r.get::<_, i64>(8)? as u64,
                cold_start: r.get(9)?,
                cost: r.get(10)?,
                status: r.get(11)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Totals per key and deployment since `since_ms`.
    pub fn summary(
        &self,
        since_ms: i64,
        key: Option<&str>,
    ) -> Result<Vec<UsageSummary>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT key, deployment, COUNT(*), SUM(prompt_tokens), SUM(cached_tokens), SUM(completion_tokens),
                    SUM(reasoning_tokens), SUM(compute_ms), SUM(cold_start), SUM(status >= 400), SUM(cost)
             FROM usage WHERE time_ms >= ?1 AND (?2 IS NULL OR key = ?2)
             GROUP BY key, deployment ORDER BY key, deployment",
        )?;
        let rows = st.query_map(params![since_ms, key], |r| {
            let u = |i| r.get::<_, i64>(i).map(|v| v as u64);
            Ok(UsageSummary {
                key: r.get(0)?,
                deployment: r.get(1)?,
                requests: u(2)?,
                prompt_tokens: u(3)?,
                cached_tokens: u(4)?,
                completion_tokens: u(5)?,
                reasoning_tokens: u(6)?,
                compute_ms: u(7)?,
                cold_starts: u(8)?,
                errors: u(9)?,
                cost: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Columns added to `usage` after its first release, with their defaults: a ledger
/// written by an older thaw gets them on open (its rows keep their values and read
/// the default), so upgrading never needs a manual migration.
const ADDED_USAGE_COLUMNS: [(&str, &str); 1] = [("reasoning_tokens", "INTEGER NOT NULL DEFAULT 0")];

fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    let mut st = conn.prepare("SELECT name FROM pragma_table_info('usage')")?;
    let have: Vec<String> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    for (name, ty) in ADDED_USAGE_COLUMNS {
        if !have.iter().any(|h| h == name) {
            conn.execute_batch(&format!("ALTER TABLE usage ADD COLUMN {name} {ty}"))?;
        }
    }
    Ok(())
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyInfo> {
    Ok(KeyInfo {
        name: r.get(0)?,
        admin: r.get(1)?,
        rpm: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
        tokens_per_day: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
        created: r.get(4)?,
        revoked: r.get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, key: &str, p: u64, c: u64) -> UsageRow {
        UsageRow {
            id: id.into(),
            time_ms: now_ms(),
            key: key.into(),
            deployment: "d".into(),
            prompt_tokens: p,
            cached_tokens: 0,
            completion_tokens: c,
            reasoning_tokens: c / 2,
            compute_ms: 5,
            cold_start: false,
            cost: 0.5,
            status: 200,
        }
    }

    #[test]
    fn keys_are_hashed_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let s = Store::open(&path).unwrap();
        let k = s.create_key("alice", false, Some(5), None).unwrap();
        assert!(k.starts_with("thaw-") && k.len() == 69);
        assert!(matches!(
            s.create_key("alice", false, None, None),
            Err(StoreError::KeyExists(_))
        ));
        assert_eq!(s.authenticate(&k).unwrap().unwrap().name, "alice");
        assert!(s.authenticate("thaw-nope").unwrap().is_none());
        // The key itself is nowhere in the file.
        drop(s);
        let bytes = std::fs::read(&path).unwrap();
        let wal = std::fs::read(dir.path().join("t.db-wal")).unwrap_or_default();
        for b in [bytes, wal] {
            assert!(!b.windows(k.len()).any(|w| w == k.as_bytes()));
        }
        let s = Store::open(&path).unwrap();
        s.revoke_key("alice").unwrap();
        assert!(s.authenticate(&k).unwrap().is_none());
        assert!(s.list_keys().unwrap()[0].revoked);
        assert!(matches!(s.revoke_key("bob"), Err(StoreError::NoKey(_))));
    }

    #[test]
    fn ledger_rows_are_unique_and_summed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.db")).unwrap();
        assert!(s.record(&row("1", "a", 10, 3)).unwrap());
        assert!(!s.record(&row("1", "a", 10, 3)).unwrap());
        assert!(s.record(&row("2", "a", 1, 1)).unwrap());
        assert!(s.record(&row("3", "b", 7, 0)).unwrap());
        assert_eq!(s.tokens_since("a", 0).unwrap(), 15);
        assert_eq!(s.rows(0, Some("a"), 100).unwrap().len(), 2);
        let sum = s.summary(0, None).unwrap();
        assert_eq!(sum.len(), 2);
        assert_eq!(sum[0].requests, 2);
        assert_eq!(sum[0].completion_tokens, 4);
        assert_eq!(sum[0].reasoning_tokens, 1);
        assert!((sum[0].cost - 1.0).abs() < 1e-9);
        assert_eq!(
            s.rows(0, Some("a"), 100).unwrap()[0],
            row("1", "a", 10, 3).with_time(sum_time(&s, "1"))
        );
    }

    fn sum_time(s: &Store, id: &str) -> i64 {
        s.rows(0, None, 100)
            .unwrap()
            .iter()
            .find(|r| r.id == id)
            .unwrap()
            .time_ms
    }

    impl UsageRow {
        fn with_time(mut self, t: i64) -> Self {
            self.time_ms = t;
            self
        }
    }

    #[test]
    fn a_ledger_written_before_reasoning_tokens_is_upgraded_on_open() {
        // The usage table as the first release created it, with one row.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE usage (id TEXT PRIMARY KEY, time_ms INTEGER NOT NULL,
                    key TEXT NOT NULL, deployment TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
                    cached_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
                    compute_ms INTEGER NOT NULL, cold_start INTEGER NOT NULL, cost REAL NOT NULL,
                    status INTEGER NOT NULL);
                 INSERT INTO usage VALUES ('old', 1, 'a', 'd', 4, 0, 2, 9, 0, 0.25, 200);",
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let old = &s.rows(0, None, 10).unwrap()[0];
        assert_eq!((old.completion_tokens, old.reasoning_tokens), (2, 0));
        assert!(s.record(&row("new", "a", 10, 6)).unwrap());
        let sum = s.summary(0, None).unwrap();
        assert_eq!((sum[0].completion_tokens, sum[0].reasoning_tokens), (8, 3));
        // Opening again finds the column and adds nothing.
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.rows(0, None, 10).unwrap().len(), 2);
    }
}
