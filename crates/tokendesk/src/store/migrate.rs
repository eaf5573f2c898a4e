//! Embedded migrations, one list per backend, applied in order and recorded.

use sqlx::Row;
use time::OffsetDateTime;

use super::{Backend, Store, StoreResult, ts};

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "periodic_runs",
        sql: include_str!("../../migrations/sqlite/0002_periodic_runs.sql"),
    },
];

const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "periodic_runs",
        sql: include_str!("../../migrations/postgres/0002_periodic_runs.sql"),
    },
    Migration {
        version: 3,
        name: "request_change_notices",
        sql: include_str!("../../migrations/postgres/0003_request_change_notices.sql"),
    },
];

pub(super) async fn run(store: &Store) -> StoreResult<usize> {
    let migrations = match store.backend() {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    let mut tx = store.write().await?;
    if store.backend() == Backend::Postgres {
        // One instance migrates at a time.
        sqlx::query("SELECT pg_advisory_xact_lock(72201)")
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()?;
    let mut ran = 0;
    for m in migrations.iter().filter(|m| !applied.contains(&m.version)) {
        sqlx::raw_sql(m.sql).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(ts(OffsetDateTime::now_utc()))
        .execute(&mut *tx)
        .await?;
        tracing::info!(version = m.version, name = m.name, "migration applied");
        ran += 1;
    }
    tx.commit().await?;
    Ok(ran)
}
