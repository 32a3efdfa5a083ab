//! The store conformance suite against `PostgresStore`, each test in its own fresh database.
//!
//! Needs a PostgreSQL server: set `BALAGH_TEST_DATABASE_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/postgres`; `.ci/run` sets it and requires it). Without
//! it every test here prints that it was left out and passes.

mod conformance;
#[path = "common/pg.rs"]
mod pg;

use std::sync::Arc;

use balagh::domain::ManualClock;
use balagh::store::{PostgresStore, PostgresStoreOptions, Store};
use conformance::Harness;

async fn open_postgres(clock: ManualClock) -> Option<Harness> {
    let database = pg::TestDatabase::create().await?;
    let url = database.url.clone();
    let open = move |clock: ManualClock| {
        let url = url.clone();
        Box::pin(async move {
            let store = PostgresStore::open(PostgresStoreOptions::new(url), Arc::new(clock))
                .await
                .expect("open postgres store");
            Arc::new(store) as Arc<dyn Store>
        }) as futures::future::BoxFuture<'static, Arc<dyn Store>>
    };
    let store = open(clock).await;
    Some(Harness {
        store,
        reopen: Box::new(open),
        guard: Box::new(database),
    })
}

conformance_suite!(open_postgres);
