//! The schema: `sqlx::migrate!` embeds one set of migrations per backend
//! (`migrations/sqlite`, `migrations/postgres`) with their checksums. `_sqlx_migrations`
//! records what ran; a migration that was edited after it was applied, or a database migrated
//! by a newer tokendesk, is refused with a message that says so.
//!
//! Databases made before tokendesk used sqlx's migrator recorded their migrations in
//! `schema_migrations` (version, name, applied_at); those are adopted once: the versions they
//! name are marked applied (without running them again) and the old table is dropped.

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{AnyConnection, Row};

use super::{Backend, Store, StoreError, StoreResult};

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The migrations of a backend.
pub(super) fn migrator(backend: Backend) -> &'static Migrator {
    match backend {
        Backend::Sqlite => &SQLITE,
        Backend::Postgres => &POSTGRES,
    }
}

/// A migration that `migrate` applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub description: String,
}

async fn table_exists(conn: &mut AnyConnection, backend: Backend, name: &str) -> StoreResult<bool> {
    let sql = match backend {
        Backend::Sqlite => "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1",
        Backend::Postgres => {
            "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1"
        }
    };
    let found = sqlx::query(sql).bind(name).fetch_optional(conn).await?;
    Ok(found.is_some())
}

/// The versions `_sqlx_migrations` records as applied (none when it does not exist yet).
async fn applied_versions(conn: &mut AnyConnection, backend: Backend) -> StoreResult<Vec<i64>> {
    if !table_exists(conn, backend, "_sqlx_migrations").await? {
        return Ok(Vec::new());
    }
    let rows = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| r.try_get::<i64, _>(0).map_err(StoreError::from))
        .collect()
}

/// Adopts a database migrated by the hand-written runner of earlier releases.
async fn adopt_legacy(
    conn: &mut AnyConnection,
    backend: Backend,
    migrator: &Migrator,
) -> StoreResult<()> {
    // Instances starting at once adopt one after the other.
    adoption_lock(conn, backend, true).await?;
    let adopted = adopt_locked(conn, backend, migrator).await;
    adoption_lock(conn, backend, false).await?;
    adopted
}

/// Takes (or gives back) the PostgreSQL advisory lock that orders adopting instances.
async fn adoption_lock(conn: &mut AnyConnection, backend: Backend, take: bool) -> StoreResult<()> {
    if backend == Backend::Postgres {
        let sql = if take {
            "SELECT pg_advisory_lock(72201)"
        } else {
            "SELECT pg_advisory_unlock(72201)"
        };
        sqlx::query(sql).execute(conn).await?;
    }
    Ok(())
}

async fn adopt_locked(
    conn: &mut AnyConnection,
    backend: Backend,
    migrator: &Migrator,
) -> StoreResult<()> {
    if !table_exists(conn, backend, "schema_migrations").await? {
        return Ok(());
    }
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&mut *conn)
        .await?;
    if let Some(newest) = newest {
        migrator
            .run_direct(Some(newest), &mut *conn, true)
            .await
            .map_err(|e| migrate_error(e, backend))?;
        tracing::info!(
            up_to = newest,
            "adopted the migrations recorded in schema_migrations"
        );
    }
    sqlx::query("DROP TABLE IF EXISTS schema_migrations")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn migrate_error(e: MigrateError, backend: Backend) -> StoreError {
    let known = migrator(backend)
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0);
    let message = match &e {
        MigrateError::VersionMismatch(v) => format!(
            "migration {v} was applied to this database but the copy built into this tokendesk \
             differs from it (its checksum changed): an applied migration must never be edited; \
             restore the original file or add a new migration instead"
        ),
        MigrateError::VersionMissing(v) => format!(
            "the database's schema is at migration {v}, newer than this tokendesk knows \
             (it knows migrations up to {known}): it was migrated by a newer release; run that \
             release, or restore a backup taken before the upgrade"
        ),
        MigrateError::Dirty(v) => format!(
            "migration {v} failed part-way on this database earlier; restore a backup or repair it by hand"
        ),
        other => format!("migrating the database: {other}"),
    };
    StoreError::Schema(message)
}

/// Where a database's schema stands against the migrations this build knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The newest migration applied to the database (none for an empty database).
    pub applied: Option<i64>,
    /// The newest migration this build knows.
    pub known: i64,
    /// Known migrations not applied yet, in order.
    pub pending: Vec<i64>,
    /// Applied migrations this build does not know (a newer release migrated the database).
    pub unknown: Vec<i64>,
}

impl SchemaStatus {
    /// Refuses a database migrated by a newer release: this build could corrupt what it does
    /// not know.
    pub fn refuse_newer(&self) -> StoreResult<()> {
        match self.unknown.last() {
            None => Ok(()),
            Some(newest) => Err(StoreError::Schema(format!(
                "the database's schema is at migration {newest}, newer than this tokendesk {} knows (migrations up to {}): a newer release migrated it; run that release, or restore the backup taken before the upgrade (docs/deploy.md, Upgrades)",
                env!("CARGO_PKG_VERSION"),
                self.known
            ))),
        }
    }
}

/// The schema's standing, read without changing anything.
pub(super) async fn status(store: &Store) -> StoreResult<SchemaStatus> {
    let backend = store.backend();
    let migrator = migrator(backend);
    let mut conn = store.pool().acquire().await?;
    let mut applied = applied_versions(&mut conn, backend).await?;
    if applied.is_empty() && table_exists(&mut conn, backend, "schema_migrations").await? {
        // An earlier release's record, adopted at the next migration.
        applied = sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await?;
    }
    let known: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    Ok(SchemaStatus {
        applied: applied.iter().copied().max(),
        known: known.iter().copied().max().unwrap_or(0),
        pending: known
            .iter()
            .copied()
            .filter(|v| !applied.contains(v))
            .collect(),
        unknown: applied
            .iter()
            .copied()
            .filter(|v| !known.contains(v))
            .collect(),
    })
}

/// Brings the schema up to date; returns the migrations that ran, in order.
pub(super) async fn run(store: &Store) -> StoreResult<Vec<AppliedMigration>> {
    status(store).await?.refuse_newer()?;
    let backend = store.backend();
    let migrator = migrator(backend);
    let mut conn = store.pool().acquire().await?;
    adopt_legacy(&mut conn, backend, migrator).await?;
    let before = applied_versions(&mut conn, backend).await?;
    migrator
        .run_direct(None, &mut *conn, false)
        .await
        .map_err(|e| migrate_error(e, backend))?;
    let applied: Vec<AppliedMigration> = migrator
        .iter()
        .filter(|m| !before.contains(&m.version))
        .map(|m| AppliedMigration {
            version: m.version,
            description: m.description.to_string(),
        })
        .collect();
    for m in &applied {
        tracing::info!(version = m.version, name = %m.description, "migration applied");
    }
    Ok(applied)
}
