//! Copying a whole database to another (SQLite → PostgreSQL when moving to several instances,
//! or back): every table in dependency order with its ids, in batches, in one transaction on the
//! target; identity sequences moved past the copied ids; then the row counts and the audit
//! chain are checked on the target.

use std::time::{Duration, Instant};

use sqlx::{AnyConnection, Row};

use super::{Backend, ChainBreak, Store, StoreError, verify_chain};

/// How a column is read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Int,
    Text,
    Blob,
}

/// A table as the copy knows it: its columns, the column it pages by, and whether that column
/// is generated (its sequence must be moved past the copied ids).
struct Table {
    name: &'static str,
    key: &'static str,
    key_is_int: bool,
    identity: bool,
    columns: &'static [(&'static str, Col)],
}

use Col::{Blob, Int, Text};

/// Every table, parents before children. A migration that adds a table or a column must add it
/// here too; the copy refuses to run when a table's columns differ from this list.
const TABLES: &[Table] = &[
    Table {
        name: "people",
        key: "login",
        key_is_int: false,
        identity: false,
        columns: &[
            ("login", Text),
            ("name", Text),
            ("email", Text),
            ("canvas_user_id", Int),
            ("first_seen_at", Int),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "requests",
        key: "id",
        key_is_int: true,
        identity: true,
        columns: &[
            ("id", Int),
            ("requester", Text),
            ("purpose", Text),
            ("application", Text),
            ("requested_expires_on", Text),
            ("expires_on", Text),
            ("state", Text),
            ("decided_by", Text),
            ("reason", Text),
            ("created_at", Int),
            ("updated_at", Int),
            ("renews", Int),
        ],
    },
    Table {
        name: "tokens",
        key: "id",
        key_is_int: true,
        identity: true,
        columns: &[
            ("id", Int),
            ("request_id", Int),
            ("owner", Text),
            ("canvas_user_id", Int),
            ("canvas_token_id", Int),
            ("hint", Text),
            ("state", Text),
            ("expires_at", Int),
            ("created_at", Int),
            ("updated_at", Int),
            ("activated_at", Int),
            ("last_used_at", Int),
            ("canvas_expires_at", Int),
            ("next_check_at", Int),
            ("checks", Int),
            ("reconciled_at", Int),
            ("fingerprint", Text),
        ],
    },
    Table {
        name: "envelopes",
        key: "id",
        key_is_int: false,
        identity: false,
        columns: &[
            ("id", Text),
            ("request_id", Int),
            ("owner", Text),
            ("state", Text),
            ("reveals", Int),
            ("nonce", Blob),
            ("ciphertext", Blob),
            ("created_at", Int),
            ("expires_at", Int),
        ],
    },
    Table {
        name: "audit_events",
        key: "seq",
        key_is_int: true,
        identity: true,
        columns: &[
            ("seq", Int),
            ("at", Int),
            ("actor", Text),
            ("action", Text),
            ("target", Text),
            ("outcome", Text),
            ("client_addr", Text),
            ("details", Text),
            ("prev_hash", Text),
            ("hash", Text),
        ],
    },
    Table {
        name: "jobs",
        key: "id",
        key_is_int: true,
        identity: true,
        columns: &[
            ("id", Int),
            ("kind", Text),
            ("request_id", Int),
            ("state", Text),
            ("attempts", Int),
            ("run_after", Int),
            ("locked_until", Int),
            ("locked_by", Text),
            ("last_error", Text),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "emails",
        key: "id",
        key_is_int: true,
        identity: true,
        columns: &[
            ("id", Int),
            ("kind", Text),
            ("request_id", Int),
            ("to_login", Text),
            ("to_addr", Text),
            ("subject", Text),
            ("body_text", Text),
            ("body_html", Text),
            ("sealed_body", Blob),
            ("state", Text),
            ("attempts", Int),
            ("run_after", Int),
            ("locked_until", Int),
            ("last_error", Text),
            ("created_at", Int),
            ("sent_at", Int),
        ],
    },
    Table {
        name: "notices",
        key: "id",
        key_is_int: true,
        identity: true,
        columns: &[
            ("id", Int),
            ("request_id", Int),
            ("kind", Text),
            ("created_at", Int),
        ],
    },
    Table {
        name: "calendar_feeds",
        key: "login",
        key_is_int: false,
        identity: false,
        columns: &[("login", Text), ("secret", Text), ("created_at", Int)],
    },
    Table {
        name: "orphans",
        key: "id",
        key_is_int: true,
        identity: true,
        columns: &[
            ("id", Int),
            ("canvas_user_id", Int),
            ("canvas_token_id", Int),
            ("owner", Text),
            ("purpose", Text),
            ("hint", Text),
            ("canvas_expires_at", Int),
            ("found_at", Int),
            ("seen_at", Int),
        ],
    },
    Table {
        name: "sessions",
        key: "id_hash",
        key_is_int: false,
        identity: false,
        columns: &[
            ("id_hash", Text),
            ("public_id", Text),
            ("login", Text),
            ("kind", Text),
            ("roles", Text),
            ("id_token", Text),
            ("client_addr", Text),
            ("user_agent", Text),
            ("created_at", Int),
            ("last_seen_at", Int),
            ("expires_at", Int),
            ("ended_at", Int),
            ("ended_by", Text),
        ],
    },
    Table {
        name: "oidc_flows",
        key: "state_hash",
        key_is_int: false,
        identity: false,
        columns: &[
            ("state_hash", Text),
            ("nonce", Text),
            ("pkce_verifier", Text),
            ("next_path", Text),
            ("created_at", Int),
        ],
    },
    Table {
        name: "service_keys",
        key: "id",
        key_is_int: true,
        identity: true,
        columns: &[
            ("id", Int),
            ("name", Text),
            ("role", Text),
            ("key_hash", Text),
            ("created_by", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("revoked_at", Int),
            ("last_used_at", Int),
        ],
    },
    Table {
        name: "reports",
        key: "id",
        key_is_int: true,
        identity: true,
        columns: &[
            ("id", Int),
            ("reporter", Text),
            ("where_found", Text),
            ("by_hint", Int),
            ("matched", Int),
            ("created_at", Int),
        ],
    },
    Table {
        name: "revoke_runs",
        key: "id",
        key_is_int: true,
        identity: true,
        columns: &[
            ("id", Int),
            ("filter", Text),
            ("reason", Text),
            ("actor", Text),
            ("total", Int),
            ("created_at", Int),
            ("finished_at", Int),
        ],
    },
    Table {
        name: "revoke_items",
        key: "id",
        key_is_int: true,
        identity: true,
        columns: &[
            ("id", Int),
            ("run_id", Int),
            ("request_id", Int),
            ("owner", Text),
            ("state", Text),
            ("error", Text),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "periodic_runs",
        key: "name",
        key_is_int: false,
        identity: false,
        columns: &[
            ("name", Text),
            ("last_run_at_ms", Int),
            ("owner", Text),
            ("runs", Int),
        ],
    },
];

/// The names of the tables the copy moves, in dependency order.
pub fn copied_tables() -> impl Iterator<Item = &'static str> {
    TABLES.iter().map(|t| t.name)
}

/// What the copy is doing, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyProgress<'a> {
    /// Rows to copy in all.
    Total(u64),
    /// Starting a table with this many rows.
    Table { name: &'a str, rows: u64 },
    /// This many more rows were copied.
    Rows(u64),
    /// Copying is done; checking the target.
    Verifying,
}

/// One table's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopy {
    pub name: &'static str,
    pub rows: u64,
}

/// What a finished copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub tables: Vec<TableCopy>,
    /// Events in the target's audit chain, checked link by link.
    pub audit_events_verified: u64,
    /// Rows the target held before (deleted because of `force`).
    pub replaced_rows: u64,
    pub elapsed: Duration,
}

impl CopyReport {
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The target holds data and `force` was not given.
    #[error(
        "the target database is not empty ({rows} rows, e.g. in {table}); copy into an empty database, or pass --force to replace its contents"
    )]
    NotEmpty { table: &'static str, rows: u64 },
    /// The two databases do not have the schema this tokendesk knows.
    #[error("{0}")]
    Schema(String),
    /// The target does not match the source after the copy (nothing was kept? see message).
    #[error("verification failed: {0}")]
    Mismatch(String),
    #[error("verification failed: the audit chain on the target is broken: {0}")]
    Chain(ChainBreak),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for CopyError {
    fn from(e: sqlx::Error) -> Self {
        CopyError::Store(StoreError::Database(e))
    }
}

/// A value in transit.
enum Val {
    Int(Option<i64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
}

async fn columns_of(
    conn: &mut AnyConnection,
    backend: Backend,
    table: &str,
) -> Result<Vec<String>, CopyError> {
    let sql = match backend {
        Backend::Sqlite => "SELECT name FROM pragma_table_info($1) ORDER BY cid",
        Backend::Postgres => {
            "SELECT column_name::TEXT FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
        }
    };
    let rows = sqlx::query(sql).bind(table).fetch_all(conn).await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?)
}

async fn check_schema(store: &Store, which: &str) -> Result<(), CopyError> {
    let mut conn = store.pool().acquire().await?;
    for t in TABLES {
        let mut have = columns_of(&mut conn, store.backend(), t.name).await?;
        let mut want: Vec<String> = t.columns.iter().map(|(c, _)| (*c).to_owned()).collect();
        have.sort();
        want.sort();
        if have != want {
            return Err(CopyError::Schema(format!(
                "the {which} table {} has columns [{}], but this tokendesk copies [{}]; use the tokendesk version that wrote the database",
                t.name,
                have.join(", "),
                want.join(", ")
            )));
        }
    }
    Ok(())
}

async fn count(conn: &mut AnyConnection, table: &str) -> Result<u64, CopyError> {
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(n).unwrap_or_default())
}

async fn last_hash(conn: &mut AnyConnection) -> Result<Option<String>, CopyError> {
    Ok(
        sqlx::query_scalar("SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(conn)
            .await?,
    )
}

/// Reads one page of `table` after `after` (the key of the last row read).
async fn read_page(
    conn: &mut AnyConnection,
    t: &Table,
    after: &Val,
    limit: usize,
) -> Result<Vec<Vec<Val>>, CopyError> {
    let cols: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {key} > $1 ORDER BY {key} LIMIT $2",
        cols.join(", "),
        t.name,
        key = t.key
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(sql));
    let query = match after {
        Val::Int(v) => query.bind(*v),
        Val::Text(v) => query.bind(v.clone()),
        Val::Blob(v) => query.bind(v.clone()),
    };
    let rows = query
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(conn)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut values = Vec::with_capacity(t.columns.len());
        for (i, (_, col)) in t.columns.iter().enumerate() {
            values.push(match col {
                Int => Val::Int(r.try_get(i)?),
                Text => Val::Text(r.try_get(i)?),
                Blob => Val::Blob(r.try_get(i)?),
            });
        }
        out.push(values);
    }
    Ok(out)
}

async fn write_page(
    conn: &mut AnyConnection,
    t: &Table,
    rows: Vec<Vec<Val>>,
) -> Result<(), CopyError> {
    if rows.is_empty() {
        return Ok(());
    }
    let width = t.columns.len();
    let groups: Vec<String> = (0..rows.len())
        .map(|r| {
            let params: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let cols: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES {}",
        t.name,
        cols.join(", "),
        groups.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for value in rows.into_iter().flatten() {
        query = match value {
            Val::Int(v) => query.bind(v),
            Val::Text(v) => query.bind(v),
            Val::Blob(v) => query.bind(v),
        };
    }
    query.execute(conn).await?;
    Ok(())
}

/// Copies everything in `source` into `target` (both already migrated). Refuses a target that
/// holds any row unless `force`, which replaces its contents. Rows move `batch` at a time
/// within one transaction on the target, so a failed copy leaves the target as it was.
pub async fn copy_database(
    source: &Store,
    target: &Store,
    force: bool,
    batch: usize,
    progress: &mut (dyn FnMut(CopyProgress<'_>) + Send),
) -> Result<CopyReport, CopyError> {
    let started = Instant::now();
    let batch = batch.clamp(1, 1000);
    check_schema(source, "source").await?;
    check_schema(target, "target").await?;

    // A consistent snapshot of the source.
    let mut src = source.pool().begin().await?;
    if source.backend() == Backend::Postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *src)
            .await?;
    }
    let mut counts = Vec::with_capacity(TABLES.len());
    for t in TABLES {
        counts.push(count(&mut src, t.name).await?);
    }
    progress(CopyProgress::Total(counts.iter().sum()));

    let mut dst = target.write().await?;
    let mut replaced_rows = 0;
    for t in TABLES {
        let n = count(&mut dst, t.name).await?;
        if n > 0 && !force {
            return Err(CopyError::NotEmpty {
                table: t.name,
                rows: n,
            });
        }
        replaced_rows += n;
    }
    if replaced_rows > 0 {
        for t in TABLES.iter().rev() {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {}", t.name)))
                .execute(&mut *dst)
                .await?;
        }
    }

    let mut tables = Vec::with_capacity(TABLES.len());
    for (t, &rows) in TABLES.iter().zip(&counts) {
        progress(CopyProgress::Table { name: t.name, rows });
        let key_index = t
            .columns
            .iter()
            .position(|(c, _)| *c == t.key)
            .ok_or_else(|| CopyError::Schema(format!("{} has no column {}", t.name, t.key)))?;
        let mut after = if t.key_is_int {
            Val::Int(Some(i64::MIN))
        } else {
            Val::Text(Some(String::new()))
        };
        let mut copied = 0u64;
        loop {
            let page = read_page(&mut src, t, &after, batch).await?;
            let Some(last) = page.last() else { break };
            after = match last.get(key_index) {
                Some(Val::Int(v)) => Val::Int(*v),
                Some(Val::Text(v)) => Val::Text(v.clone()),
                _ => return Err(CopyError::Schema(format!("{}.{} is empty", t.name, t.key))),
            };
            let n = page.len() as u64;
            write_page(&mut dst, t, page).await?;
            copied += n;
            progress(CopyProgress::Rows(n));
        }
        if t.identity && target.backend() == Backend::Postgres {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('{name}', '{key}'), \
                 (SELECT COALESCE(MAX({key}), 0) FROM {name}) + 1, false)",
                name = t.name,
                key = t.key
            )))
            .execute(&mut *dst)
            .await?;
        }
        tables.push(TableCopy {
            name: t.name,
            rows: copied,
        });
    }
    let source_hash = last_hash(&mut src).await?;
    src.rollback().await?;
    dst.commit().await?;

    progress(CopyProgress::Verifying);
    let mut conn = target.pool().acquire().await?;
    for (t, &expected) in tables.iter().zip(&counts) {
        let found = count(&mut conn, t.name).await?;
        if found != expected || t.rows != expected {
            return Err(CopyError::Mismatch(format!(
                "{} has {found} rows on the target, {expected} on the source",
                t.name
            )));
        }
    }
    let audit_events_verified = match verify_chain(&mut conn).await? {
        Ok(n) => n,
        Err(broken) => return Err(CopyError::Chain(broken)),
    };
    if last_hash(&mut conn).await? != source_hash {
        return Err(CopyError::Mismatch(
            "the last audit event's hash differs from the source's".into(),
        ));
    }
    Ok(CopyReport {
        tables,
        audit_events_verified,
        replaced_rows,
        elapsed: started.elapsed(),
    })
}
