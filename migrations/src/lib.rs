//! Migrations per owner. Each owner of tables in the database (the engine, the orders read
//! model, the reference adapters, a domain's projection) embeds its own numbered SQL files with
//! [`embedded!`] (its build script includes `migrations/embed.rs` and names the directories) and
//! applies them with [`apply`], tracked in a table of its own
//! (`martix_migrations_<owner>`), so owners add migrations without knowing each other.
//!
//! One migrator at a time per database: on PostgreSQL the runner takes an advisory lock by
//! polling `pg_try_advisory_lock`, never blocked in `pg_advisory_lock` (a session blocked
//! there is a transaction that a `CREATE INDEX CONCURRENTLY` of the holder must wait out,
//! which PostgreSQL breaks by failing one start). SQLite has one writer; a migrator that finds
//! the database locked by another (a worker and an engine starting together on one file) runs
//! again where it stopped.
//!
//! Databases made before owners kept their own migrations tracked every owner's files in
//! sqlx's `_sqlx_migrations`, numbered 1 to [`SHARED_LAST`]. An owner of that history
//! ([`Owner::shared_history`]) that finds that table adopts its part of it: its files numbered
//! up to what was applied there are marked applied (not run again), and the rest run as usual.
//! A failed row there stops the migration (`Dirty`), as sqlx's own migrator would.

use sqlx::SqlStr;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::{AnyConnection, PgConnection, SqliteConnection};
use std::time::Duration;

/// The last version of the history all owners shared in `_sqlx_migrations`.
pub const SHARED_LAST: i64 = 15;

/// "martix" in ASCII: the advisory lock every owner's migrations take on PostgreSQL.
const LOCK: i64 = 0x6d61_7274_6978;

/// Migration files embedded at compile time by [`embedded!`]: (file name, SQL), sorted by name.
#[derive(Clone, Copy, Debug)]
pub struct Migrations(pub &'static [(&'static str, &'static str)]);

impl Migrations {
    /// sqlx's migrator of these files, as `sqlx::migrate!` makes it (the same versions,
    /// descriptions and checksums, so databases migrated before see nothing changed): files
    /// named `<version>_<description>.sql` (`.up.sql` and `.down.sql`: reversible), a file
    /// starting `-- no-transaction` runs outside a transaction; other names are ignored.
    pub fn migrator(&self) -> Migrator {
        let mut migrations: Vec<Migration> = self
            .0
            .iter()
            .filter_map(|&(name, sql)| {
                let (version, rest) = name.split_once('_')?;
                let version = version.parse().ok()?;
                let kind = MigrationType::from_filename(rest);
                Some(Migration::new(
                    version,
                    rest.trim_end_matches(kind.suffix())
                        .replace('_', " ")
                        .into(),
                    kind,
                    SqlStr::from_static(sql),
                    sql.starts_with("-- no-transaction"),
                ))
            })
            .collect();
        migrations.sort();
        Migrator::with_migrations(migrations)
    }
}

/// The migrations a build script embedded under `key` (see `migrations/embed.rs`).
#[macro_export]
macro_rules! embedded {
    ($key:literal) => {
        $crate::Migrations(include!(concat!(env!("OUT_DIR"), "/", $key, ".rs")))
    };
}

/// An owner of tables and its migrations for each backend.
#[derive(Debug)]
pub struct Owner {
    /// `[a-z_]+`: the tracking table is `martix_migrations_<name>`.
    pub name: &'static str,
    /// Whether this owner's files numbered up to [`SHARED_LAST`] were part of the history all
    /// owners shared (the engine, the orders read model, the reference adapters): only such an
    /// owner adopts that history. An owner that came later runs all of its files.
    pub shared_history: bool,
    pub postgres: Migrations,
    pub sqlite: Migrations,
}

impl Owner {
    /// The table this owner's applied migrations are recorded in.
    pub fn table(&self) -> String {
        format!("martix_migrations_{}", self.name)
    }

    fn migrator(&self, postgres: bool) -> Migrator {
        let mut m = if postgres {
            self.postgres.migrator()
        } else {
            self.sqlite.migrator()
        };
        m.dangerous_set_table_name(self.table());
        m.set_locking(false);
        m
    }
}

/// The SQL the runner needs beyond sqlx's migrator, per connection type.
trait Dialect: sqlx::migrate::Migrate + Send {
    fn is_postgres(&self) -> bool;
    async fn count(&mut self, sql: &str, arg: &str) -> Result<i64, sqlx::Error>;
    async fn scalar_i64(&mut self, sql: &str) -> Result<i64, sqlx::Error>;
    async fn advisory_lock(&mut self, unlock: bool) -> Result<bool, sqlx::Error>;
}

macro_rules! dialect {
    ($conn:ty, |$c:ident| $postgres:expr) => {
        impl Dialect for $conn {
            fn is_postgres(&self) -> bool {
                let $c = self;
                $postgres
            }
            async fn count(&mut self, sql: &str, arg: &str) -> Result<i64, sqlx::Error> {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                    .bind(arg.to_owned())
                    .fetch_one(&mut *self)
                    .await
            }
            async fn scalar_i64(&mut self, sql: &str) -> Result<i64, sqlx::Error> {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                    .fetch_one(&mut *self)
                    .await
            }
            async fn advisory_lock(&mut self, unlock: bool) -> Result<bool, sqlx::Error> {
                if !self.is_postgres() {
                    return Ok(true);
                }
                let sql = if unlock {
                    "SELECT pg_advisory_unlock($1)"
                } else {
                    "SELECT pg_try_advisory_lock($1)"
                };
                sqlx::query_scalar(sql)
                    .bind(LOCK)
                    .fetch_one(&mut *self)
                    .await
            }
        }
    };
}

dialect!(PgConnection, |_c| true);
dialect!(SqliteConnection, |_c| false);
dialect!(AnyConnection, |c| c.backend_name() == "PostgreSQL");

/// Applies `owner`'s migrations on a PostgreSQL connection.
///
/// # Cancel safety
/// The session holds the migrations' advisory lock while this runs: a caller that may drop the
/// future (or meets an error) closes the connection rather than returning it to a pool
/// (`PoolConnection::close_on_drop`), which releases the lock.
pub async fn apply_postgres(conn: &mut PgConnection, owner: &Owner) -> Result<(), MigrateError> {
    apply(conn, owner).await
}

/// Applies `owner`'s migrations on a SQLite connection.
pub async fn apply_sqlite(conn: &mut SqliteConnection, owner: &Owner) -> Result<(), MigrateError> {
    apply(conn, owner).await
}

/// Applies `owner`'s migrations on a connection of either backend (`sqlx::any`).
pub async fn apply_any(conn: &mut AnyConnection, owner: &Owner) -> Result<(), MigrateError> {
    apply(conn, owner).await
}

async fn apply<C: Dialect>(conn: &mut C, owner: &Owner) -> Result<(), MigrateError> {
    let waiting = std::time::Instant::now();
    let mut told = Duration::ZERO;
    while !conn.advisory_lock(false).await? {
        if waiting.elapsed() >= told + Duration::from_secs(10) {
            told = waiting.elapsed();
            tracing::info!(
                owner = owner.name,
                waited_s = told.as_secs(),
                "waiting for another node to finish its migrations (advisory lock {LOCK})"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SQLite has no lock to take: another process's migrator may write meanwhile (a
    // transaction that read before the other's write cannot write: busy), or apply a file this
    // one is applying too (which then fails, e.g. "table already exists"). Each file is its own
    // transaction with its record, so running again reads what is applied now and goes on
    // where this one stopped; a file that fails on its own fails again and is reported.
    let mut again = 5;
    let applied = loop {
        match adopt_and_run(conn, owner).await {
            Err(e) if busy(&e) && waiting.elapsed() < Duration::from_secs(60) => {}
            Err(MigrateError::ExecuteMigration(..)) if !conn.is_postgres() && again > 0 => {
                again -= 1;
            }
            done => break done,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let released = conn.advisory_lock(true).await;
    if !matches!(released, Ok(true)) {
        return Err(released.err().map_or_else(
            || MigrateError::Execute(sqlx::Error::Protocol("advisory lock not held".into())),
            MigrateError::Execute,
        ));
    }
    applied
}

/// SQLite's "database is locked" (`SQLITE_BUSY` and its extended codes): the write lock was
/// taken by another connection.
fn busy(e: &MigrateError) -> bool {
    let (MigrateError::Execute(sqlx::Error::Database(db))
    | MigrateError::ExecuteMigration(sqlx::Error::Database(db), _)) = e
    else {
        return false;
    };
    let code = db.code().unwrap_or_default();
    code == "5" || code.parse::<i32>().is_ok_and(|c| c & 0xff == 5)
}

async fn adopt_and_run<C: Dialect>(conn: &mut C, owner: &Owner) -> Result<(), MigrateError> {
    let postgres = conn.is_postgres();
    // A count, not a boolean: `sqlx::any` decodes SQLite's booleans as integers.
    let exists = if postgres {
        "SELECT CAST(COUNT(to_regclass($1)) AS BIGINT)"
    } else {
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1"
    };
    let migrator = owner.migrator(postgres);
    // Idempotent: a start that stopped halfway through adopting marks the rest next time.
    if owner.shared_history && conn.count(exists, "_sqlx_migrations").await? > 0 {
        let failed = conn
            .scalar_i64(
                "SELECT COALESCE(MIN(version), 0) FROM _sqlx_migrations WHERE success = FALSE",
            )
            .await?;
        if failed > 0 {
            // sqlx's own migrator refuses such a database too: someone must look at it.
            return Err(MigrateError::Dirty(failed));
        }
        let shared = conn
            .scalar_i64(
                "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success = TRUE",
            )
            .await?
            .min(SHARED_LAST);
        if shared > 0 {
            migrator.run_direct(Some(shared), conn, true).await?;
        }
    }
    migrator.run_direct(None, conn, false).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    static ONE: Owner = Owner {
        name: "unit",
        shared_history: false,
        postgres: Migrations(&[]),
        sqlite: Migrations(&[]),
    };

    #[tokio::test]
    async fn an_owner_tracks_its_migrations_in_its_own_table() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        apply_sqlite(&mut conn, &ONE).await.unwrap();
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        assert!(
            tables.contains(&"martix_migrations_unit".to_owned()),
            "{tables:?}"
        );
        assert!(
            !tables.contains(&"_sqlx_migrations".to_owned()),
            "{tables:?}"
        );
    }

    static RACE: Owner = Owner {
        name: "race",
        shared_history: false,
        postgres: embedded!("race"),
        sqlite: embedded!("race"),
    };

    /// Processes starting on one SQLite file (an engine and a worker) migrate together: all
    /// succeed, and each file ran once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn migrators_racing_on_one_sqlite_file_all_succeed_once() {
        let path = std::env::temp_dir().join(format!("martix-race-{}.db", std::process::id()));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let mut conn = SqliteConnection::connect(&url).await.unwrap();
                apply_sqlite(&mut conn, &RACE)
                    .await
                    .map_err(|e| e.to_string())
            }));
        }
        for t in tasks {
            t.await.unwrap().expect("every migrator succeeds");
        }
        let mut conn = SqliteConnection::connect(&url).await.unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM race_b")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(rows, 1, "0002 ran once");
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM martix_migrations_race")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(applied, 2);
        drop(conn);
        let _ = std::fs::remove_file(&path);
    }
}
