//! Fresh databases for tests: an SQLite file in a temporary folder, and a PostgreSQL database
//! created on the server at `TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) when it is reachable. Each is dropped when the
//! test ends, also when it fails. With `TEST_REQUIRE_POSTGRES=1` an unreachable server
//! fails the test instead of skipping that backend.

use std::path::PathBuf;
use std::sync::OnceLock;

use sqlx::Connection;
use tokendesk::store::{Backend, Store, StoreOptions};

pub struct TestDb {
    pub store: Store,
    /// The database's URL, for processes started by a test.
    #[allow(dead_code)]
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(PathBuf),
    Postgres { admin_url: String, name: String },
}

fn admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn unique(prefix: &str) -> String {
    use rand::RngExt;
    format!(
        "{prefix}_{}_{:08x}",
        std::process::id(),
        rand::rng().random::<u32>()
    )
}

/// Whether the PostgreSQL server answers (asked once per test run).
async fn postgres_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    if let Some(v) = AVAILABLE.get() {
        return *v;
    }
    sqlx::any::install_default_drivers();
    let ok = sqlx::AnyConnection::connect(&admin_url()).await.is_ok();
    if !ok && std::env::var("TEST_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!(
            "PostgreSQL at {} is not reachable and TEST_REQUIRE_POSTGRES=1",
            admin_url()
        );
    }
    *AVAILABLE.get_or_init(|| ok)
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        Self::sqlite_with(true).await
    }

    /// A fresh SQLite database; `migrated`: with the schema, or empty.
    async fn sqlite_with(migrated: bool) -> TestDb {
        let dir = std::env::temp_dir().join(unique("tokendesk-test"));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("test.db").display());
        let store = open(&url, migrated).await;
        TestDb {
            store,
            url,
            cleanup: Cleanup::Dir(dir),
        }
    }

    pub async fn postgres() -> Option<TestDb> {
        Self::postgres_with(true).await
    }

    /// Every backend that can run here, each an empty database without the schema.
    pub async fn all_empty() -> Vec<TestDb> {
        let mut dbs = vec![TestDb::sqlite_with(false).await];
        dbs.extend(TestDb::postgres_with(false).await);
        dbs
    }

    async fn postgres_with(migrated: bool) -> Option<TestDb> {
        if !postgres_available().await {
            return None;
        }
        let admin = admin_url();
        let name = unique("tokendesk_test");
        let mut conn = sqlx::AnyConnection::connect(&admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        let store = open(&url, migrated).await;
        Some(TestDb {
            store,
            url,
            cleanup: Cleanup::Postgres {
                admin_url: admin,
                name,
            },
        })
    }

    /// Every backend that can run here: SQLite always, PostgreSQL when reachable.
    pub async fn all() -> Vec<TestDb> {
        let mut dbs = vec![TestDb::sqlite().await];
        dbs.extend(TestDb::postgres().await);
        dbs
    }

    /// A new store on the same database, with its schema brought up to date.
    pub async fn reopen(&self) -> Result<Store, tokendesk::store::StoreError> {
        Store::open(&self.url, &StoreOptions::default()).await
    }

    pub fn backend(&self) -> Backend {
        self.store.backend()
    }
}

async fn open(url: &str, migrated: bool) -> Store {
    if migrated {
        Store::open(url, &StoreOptions::default()).await.unwrap()
    } else {
        Store::connect(url, &StoreOptions::default()).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // Drop runs inside the test's runtime: do the async cleanup on a thread of its own.
                let _ = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    rt.block_on(async move {
                        if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin_url).await {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            )))
                            .execute(&mut conn)
                            .await;
                        }
                    });
                })
                .join();
            }
        }
    }
}
