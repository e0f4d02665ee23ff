//! The PostgreSQL-wire backend: one `(key bytea primary key, value bytea)` table, `SERIALIZABLE`
//! transactions, a pool of connections. Serves PostgreSQL itself, and CockroachDB and
//! YugabyteDB through options (`flavor`). Writes are buffered in the transaction and sent as one
//! statement per kind (upserts, deletes) before a range read and at commit; serialization
//! failures (`40001`) and deadlocks (`40P01`) are conflicts, retried by `Store::transact` with
//! backoff; a lost connection is an outage the caller retries.

use crate::{
    error::StoreError,
    kv::{KeyRange, KeyValue, RangeOptions, Store, Transaction, WriteBudget},
};
use postgres::{NoTls, error::SqlState};
use r2d2::{Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;
use std::{collections::BTreeMap, fmt, ops::Bound, str::FromStr, sync::Arc, time::Duration};

/// Conflicting attempts before a transaction gives up.
const MAX_ATTEMPTS: u32 = 100;

type Manager = PostgresConnectionManager<NoTls>;

/// Which server speaks the protocol: what differs is the table's definition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavor {
    /// PostgreSQL (tested here).
    #[default]
    Postgres,
    /// CockroachDB: serializable by default, retries on `40001` like PostgreSQL.
    Cockroach,
    /// YugabyteDB: the primary key is range-sharded (`PRIMARY KEY (key ASC)`), so that range
    /// reads stay ordered scans.
    Yugabyte,
}

/// Where and how a [`PgStore`] keeps its data, from the store URL's query options (the rest of
/// the URL is libpq's: `postgres://user:password@host:port/db`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgOptions {
    /// Schema of the table (`schema=`, default `doppel`).
    pub schema: String,
    /// The table (`table=`, default `kv`).
    pub table: String,
    /// Connections in the pool (`pool=`, default 16).
    pub pool_size: u32,
    /// The server (`flavor=postgres|cockroach|yugabyte`).
    pub flavor: Flavor,
    /// How long to wait for a connection (`connect_timeout=` seconds, default 5).
    pub connect_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            schema: "doppel".into(),
            table: "kv".into(),
            pool_size: 16,
            flavor: Flavor::Postgres,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A schema or table name: lowercase letters, digits and `_`, so it needs no quoting rules.
fn identifier(what: &str, name: &str) -> Result<String, StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(name.to_string())
    } else {
        Err(StoreError::Config(format!(
            "{what} {name:?}: use 1 to 63 lowercase letters, digits and '_'"
        )))
    }
}

/// Splits a store URL into libpq's connection settings and this backend's options. A password
/// comes from the URL, else from `PGPASSWORD`, else from the file named by `password_file=`.
pub fn parse_url(url: &str) -> Result<(postgres::Config, PgOptions), StoreError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut options = PgOptions::default();
    let mut passthrough = Vec::new();
    let mut password_file = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "schema" => options.schema = identifier("schema", value)?,
            "table" => options.table = identifier("table", value)?,
            "pool" => {
                options.pool_size = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or_else(|| StoreError::Config(format!("pool {value:?}: 1 to 1024")))?;
            }
            "flavor" => {
                options.flavor = match value {
                    "postgres" => Flavor::Postgres,
                    "cockroach" | "cockroachdb" => Flavor::Cockroach,
                    "yugabyte" | "yugabytedb" => Flavor::Yugabyte,
                    other => {
                        return Err(StoreError::Config(format!(
                            "flavor {other:?}: postgres, cockroach or yugabyte"
                        )));
                    }
                };
            }
            "password_file" => password_file = Some(value.to_string()),
            "connect_timeout" => {
                let secs: u64 = value.parse().map_err(|_| {
                    StoreError::Config(format!("connect_timeout {value:?}: seconds"))
                })?;
                options.connect_timeout = Duration::from_secs(secs.max(1));
                passthrough.push(pair);
            }
            _ => passthrough.push(pair),
        }
    }
    let libpq = if passthrough.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", passthrough.join("&"))
    };
    let mut config = postgres::Config::from_str(&libpq)
        .map_err(|e| StoreError::Config(format!("postgres url: {e}")))?;
    if config.get_password().is_none() {
        if let Ok(password) = std::env::var("PGPASSWORD") {
            config.password(password);
        } else if let Some(file) = password_file {
            let password = std::fs::read_to_string(&file)
                .map_err(|e| StoreError::Config(format!("password_file {file}: {e}")))?;
            config.password(password.trim_end_matches(['\n', '\r']));
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    config.application_name("doppel");
    Ok((config, options))
}

/// A store in one table of a PostgreSQL-wire database.
#[derive(Clone)]
pub struct PgStore {
    pool: Arc<Connections>,
    sql: Arc<Statements>,
}

/// The pool, closed on a thread of its own: a connection runs a small runtime of its own to
/// say goodbye to the server, which must not happen on an async runtime's thread (where the
/// last handle on a store is often dropped).
struct Connections(Option<Pool<Manager>>);

impl std::ops::Deref for Connections {
    type Target = Pool<Manager>;

    fn deref(&self) -> &Pool<Manager> {
        self.0.as_ref().expect("the pool is open")
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            let closing = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(pool));
            if let Ok(closing) = closing {
                let _ = closing.join();
            }
        }
    }
}

/// The statements, with the table's name in them.
struct Statements {
    get: String,
    get_many: String,
    range: String,
    range_reverse: String,
    upsert: String,
    delete: String,
    delete_range: String,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database of `url` and creates the schema and table if they are missing.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let (config, options) = parse_url(url)?;
        Self::connect(config, &options)
    }

    /// Connects with explicit settings.
    pub fn connect(config: postgres::Config, options: &PgOptions) -> Result<Self, StoreError> {
        let pool = Pool::builder()
            .max_size(options.pool_size)
            .min_idle(Some(0))
            .connection_timeout(options.connect_timeout)
            .build_unchecked(PostgresConnectionManager::new(config, NoTls));
        let table = format!("{}.{}", options.schema, options.table);
        let primary_key = match options.flavor {
            Flavor::Yugabyte => "PRIMARY KEY (key ASC)",
            Flavor::Postgres | Flavor::Cockroach => "PRIMARY KEY (key)",
        };
        let create = format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {table} (key bytea NOT NULL, value bytea NOT NULL, {primary_key})",
            schema = options.schema,
        );
        let mut conn = pool.get().map_err(unavailable)?;
        if let Err(first) = conn.batch_execute(&create) {
            // Two nodes creating the table at once: one of them loses a race on the catalog.
            conn.batch_execute(&create).map_err(|_| sql_error(&first))?;
        }
        drop(conn);
        let sql = Statements {
            get: format!("SELECT value FROM {table} WHERE key = $1"),
            get_many: format!("SELECT key, value FROM {table} WHERE key = ANY($1::bytea[])"),
            range: format!(
                "SELECT key, value FROM {table} WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3"
            ),
            range_reverse: format!(
                "SELECT key, value FROM {table} WHERE key >= $1 AND key < $2 ORDER BY key DESC LIMIT $3"
            ),
            upsert: format!(
                "INSERT INTO {table} (key, value) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ),
            delete: format!("DELETE FROM {table} WHERE key = ANY($1::bytea[])"),
            delete_range: format!("DELETE FROM {table} WHERE key >= $1 AND key < $2"),
        };
        Ok(Self {
            pool: Arc::new(Connections(Some(pool))),
            sql: Arc::new(sql),
        })
    }

    /// Whether the database answers now.
    pub fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.get().map_err(unavailable)?;
        conn.simple_query("SELECT 1").map_err(|e| sql_error(&e))?;
        Ok(())
    }
}

impl Store for PgStore {
    type Tx = PgTx;

    fn begin(&self) -> Result<PgTx, StoreError> {
        Ok(PgTx {
            store: self.clone(),
            conn: None,
            open: false,
            pending: BTreeMap::new(),
            budget: WriteBudget::default(),
            attempts: 1,
        })
    }
}

/// A transaction on a [`PgStore`]: `BEGIN ISOLATION LEVEL SERIALIZABLE` on a pooled connection
/// at its first statement; writes wait in `pending` until a range read or the commit.
pub struct PgTx {
    store: PgStore,
    conn: Option<PooledConnection<Manager>>,
    /// Whether `BEGIN` was sent on `conn`.
    open: bool,
    /// Writes not yet sent: a value, or `None` for a removal.
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    budget: WriteBudget,
    attempts: u32,
}

impl fmt::Debug for PgTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTx")
            .field("attempts", &self.attempts)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// The error of a failed statement: a conflict when retrying may succeed.
fn sql_error(e: &postgres::Error) -> StoreError {
    match e.code() {
        Some(code)
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            StoreError::Conflict
        }
        Some(code) => StoreError::Sql {
            code: code.code().to_string(),
            message: e
                .as_db_error()
                .map_or_else(|| e.to_string(), |db| db.message().to_string()),
        },
        None => StoreError::Unavailable(e.to_string()),
    }
}

fn unavailable(e: r2d2::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl PgTx {
    /// The connection, in an open transaction.
    fn client(&mut self) -> Result<&mut PooledConnection<Manager>, StoreError> {
        if self.conn.is_none() {
            self.conn = Some(self.store.pool.get().map_err(unavailable)?);
            self.open = false;
        }
        let conn = self.conn.as_mut().ok_or(StoreError::Finished)?;
        if !self.open {
            conn.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
                .map_err(|e| sql_error(&e))?;
            self.open = true;
        }
        Ok(conn)
    }

    /// Sends the pending writes: one statement for the values, one for the removals.
    fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let (mut keys, mut values, mut removed) = (Vec::new(), Vec::new(), Vec::new());
        for (key, value) in &pending {
            match value {
                Some(value) => {
                    keys.push(key.as_slice());
                    values.push(value.as_slice());
                }
                None => removed.push(key.as_slice()),
            }
        }
        let sql = self.store.sql.clone();
        let conn = self.client()?;
        if !keys.is_empty() {
            conn.execute(sql.upsert.as_str(), &[&keys, &values])
                .map_err(|e| sql_error(&e))?;
        }
        if !removed.is_empty() {
            conn.execute(sql.delete.as_str(), &[&removed])
                .map_err(|e| sql_error(&e))?;
        }
        Ok(())
    }

    /// Ends the transaction on its connection, which goes back to the pool (or is dropped if
    /// it broke).
    fn release(&mut self, rollback: bool) {
        if let Some(mut conn) = self.conn.take()
            && self.open
            && rollback
            && !conn.is_closed()
        {
            let _ = conn.batch_execute("ROLLBACK");
        }
        self.open = false;
        self.pending.clear();
    }
}

impl Transaction for PgTx {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = self.pending.get(key) {
            return Ok(value.clone());
        }
        let sql = self.store.sql.clone();
        let row = self
            .client()?
            .query_opt(sql.get.as_str(), &[&key])
            .map_err(|e| sql_error(&e))?;
        Ok(row.map(|row| row.get::<_, Vec<u8>>(0)))
    }

    fn get_many(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        // Buffered writes answer for themselves; the rest is one statement.
        let unread: Vec<&[u8]> = keys
            .iter()
            .filter(|key| !self.pending.contains_key(key.as_slice()))
            .map(Vec::as_slice)
            .collect();
        let mut found = std::collections::HashMap::new();
        if !unread.is_empty() {
            let sql = self.store.sql.clone();
            let rows = self
                .client()?
                .query(sql.get_many.as_str(), &[&unread])
                .map_err(|e| sql_error(&e))?;
            for row in rows {
                found.insert(row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1));
            }
        }
        Ok(keys
            .iter()
            .map(|key| match self.pending.get(key.as_slice()) {
                Some(value) => value.clone(),
                None => found.get(key.as_slice()).cloned(),
            })
            .collect())
    }

    fn get_range(
        &mut self,
        range: &KeyRange,
        options: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.flush()?;
        let limit = options
            .limit
            .map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let sql = self.store.sql.clone();
        let statement = if options.reverse {
            &sql.range_reverse
        } else {
            &sql.range
        };
        let rows = self
            .client()?
            .query(
                statement.as_str(),
                &[&range.begin.as_slice(), &range.end.as_slice(), &limit],
            )
            .map_err(|e| sql_error(&e))?;
        Ok(rows
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect())
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.budget.set(key, value)?;
        self.pending.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn clear(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.budget.key(key)?;
        self.pending.insert(key.to_vec(), None);
        Ok(())
    }

    fn clear_range(&mut self, range: &KeyRange) -> Result<(), StoreError> {
        self.budget.key(&range.begin)?;
        self.budget.key(&range.end)?;
        // Pending writes inside the range are void; the rest still go.
        let inside: Vec<Vec<u8>> = self
            .pending
            .range::<[u8], _>((
                Bound::Included(range.begin.as_slice()),
                Bound::Excluded(range.end.as_slice()),
            ))
            .map(|(k, _)| k.clone())
            .collect();
        for key in inside {
            self.pending.remove(&key);
        }
        let sql = self.store.sql.clone();
        self.client()?
            .execute(
                sql.delete_range.as_str(),
                &[&range.begin.as_slice(), &range.end.as_slice()],
            )
            .map_err(|e| sql_error(&e))?;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        if self.open {
            let conn = self.conn.as_mut().ok_or(StoreError::Finished)?;
            conn.batch_execute("COMMIT").map_err(|e| sql_error(&e))?;
        }
        self.open = false;
        self.conn = None;
        Ok(())
    }

    fn on_error(&mut self, error: StoreError) -> Result<(), StoreError> {
        self.release(true);
        if !matches!(error, StoreError::Conflict) || self.attempts >= MAX_ATTEMPTS {
            return Err(error);
        }
        // Back off, more as retries pile up, so that conflicting writers interleave.
        let wait = 1u64 << self.attempts.min(7);
        std::thread::sleep(Duration::from_millis(wait.min(100)));
        self.attempts += 1;
        self.budget.reset();
        Ok(())
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        self.release(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_libpq_settings_and_options() {
        let (config, options) = parse_url(
            "postgres://doppel:secret@127.0.0.1:5433/twins?schema=fleet&table=state&pool=4&flavor=yugabyte&connect_timeout=2",
        )
        .unwrap();
        assert_eq!(config.get_user(), Some("doppel"));
        assert_eq!(config.get_password(), Some(&b"secret"[..]));
        assert_eq!(config.get_dbname(), Some("twins"));
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(2)));
        assert_eq!(
            options,
            PgOptions {
                schema: "fleet".into(),
                table: "state".into(),
                pool_size: 4,
                flavor: Flavor::Yugabyte,
                connect_timeout: Duration::from_secs(2),
            }
        );
    }

    #[test]
    fn a_password_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "from-the-file\n").unwrap();
        let (config, _) = parse_url(&format!(
            "postgres://doppel@h/db?password_file={}",
            file.display()
        ))
        .unwrap();
        if std::env::var_os("PGPASSWORD").is_none() {
            assert_eq!(config.get_password(), Some(&b"from-the-file"[..]));
        }
        let (config, _) = parse_url("postgres://doppel:in-url@h/db").unwrap();
        assert_eq!(config.get_password(), Some(&b"in-url"[..]));
        let missing = parse_url("postgres://doppel@h/db?password_file=/nonexistent/pw");
        if std::env::var_os("PGPASSWORD").is_none() {
            assert!(missing.unwrap_err().to_string().contains("/nonexistent/pw"));
        }
    }

    #[test]
    fn bad_options_are_refused_with_what_is_allowed() {
        for (url, says) in [
            ("postgres://h/db?schema=Fleet", "lowercase"),
            ("postgres://h/db?table=a;drop", "lowercase"),
            ("postgres://h/db?pool=0", "1 to 1024"),
            (
                "postgres://h/db?flavor=mysql",
                "postgres, cockroach or yugabyte",
            ),
        ] {
            let error = parse_url(url).unwrap_err().to_string();
            assert!(error.contains(says), "{url}: {error}");
        }
    }
}
