//! A fresh PostgreSQL database per test, dropped afterwards.

#![allow(dead_code)]

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The variable that points the tests at a PostgreSQL server.
pub const URL_VARIABLE: &str = "BALAGH_TEST_DATABASE_URL";

pub struct TestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// A new empty database, or `None` (with a notice) when no server is configured.
    pub async fn create() -> Option<Self> {
        let Ok(admin_url) = std::env::var(URL_VARIABLE) else {
            // Written past the test harness's capture, so `cargo test` shows it.
            use std::io::Write;
            let test = std::thread::current().name().unwrap_or("?").to_owned();
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED: PostgreSQL test {test} left out because {URL_VARIABLE} is not set \
                 (for example postgres://postgres@127.0.0.1:5432/postgres)"
            );
            return None;
        };
        let name = format!(
            "balagh_test_{}_{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        );
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{URL_VARIABLE} is set but PostgreSQL is unreachable: {e}"));
        // The name is generated here from digits and hex, never from input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = match admin_url.rfind('/') {
            Some(slash) if !admin_url[..slash].ends_with('/') => {
                let query = admin_url[slash..]
                    .find('?')
                    .map(|q| &admin_url[slash + q..])
                    .unwrap_or("");
                format!("{}/{name}{query}", &admin_url[..slash])
            }
            _ => format!("{}/{name}", admin_url.trim_end_matches('/')),
        };
        Some(Self {
            url,
            admin_url,
            name,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee: use a small one of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut admin = PgConnection::connect(&admin_url).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
