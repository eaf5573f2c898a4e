//! A PostgreSQL database made for one benchmark run and dropped at its end (the HTTP and pages
//! benches), on the server at `TOKENDESK_BENCH_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); skipped, loudly, when it does not answer.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::Connection as _;

pub fn postgres_admin_url() -> String {
    std::env::var("TOKENDESK_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database created for this run and dropped at the end.
pub struct PgDatabase {
    pub admin_url: String,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create() -> anyhow::Result<Option<PgDatabase>> {
        sqlx::any::install_default_drivers();
        let admin_url = postgres_admin_url();
        let connect = tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::AnyConnection::connect(&admin_url),
        )
        .await;
        let mut conn = match connect {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                eprintln!("{}", skip_banner(&admin_url, &e.to_string()));
                return Ok(None);
            }
            Err(_) => {
                eprintln!("{}", skip_banner(&admin_url, "no answer within 5 s"));
                return Ok(None);
            }
        };
        let name = format!("tokendesk_bench_{}", std::process::id());
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .execute(&mut conn)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        let (prefix, _) = admin_url
            .rsplit_once('/')
            .context("the PostgreSQL URL has no database name")?;
        let url = format!("{prefix}/{name}");
        Ok(Some(PgDatabase {
            admin_url,
            name,
            url,
        }))
    }

    pub async fn drop_database(&self) -> anyhow::Result<()> {
        let mut conn = sqlx::AnyConnection::connect(&self.admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}

fn skip_banner(url: &str, why: &str) -> String {
    let rule = "!".repeat(78);
    format!(
        "{rule}\n!! PostgreSQL at {url} is not reachable ({why}):\n!! the postgres rows are SKIPPED. \
         Set TOKENDESK_BENCH_POSTGRES_URL or start the server.\n{rule}"
    )
}
