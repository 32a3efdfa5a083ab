//! The store conformance suite against `SqliteStore`, each test on a fresh SQLite file.

mod conformance;

use std::sync::Arc;

use balagh::domain::ManualClock;
use balagh::store::{SqliteStore, SqliteStoreOptions, Store};
use conformance::Harness;

async fn open_sqlite(clock: ManualClock) -> Option<Harness> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let open = move |clock: ManualClock| {
        let url = url.clone();
        Box::pin(async move {
            let store = SqliteStore::open(SqliteStoreOptions::new(url), Arc::new(clock))
                .await
                .expect("open sqlite store");
            Arc::new(store) as Arc<dyn Store>
        }) as futures::future::BoxFuture<'static, Arc<dyn Store>>
    };
    let store = open(clock).await;
    Some(Harness {
        store,
        reopen: Box::new(open),
        guard: Box::new(dir),
    })
}

conformance_suite!(open_sqlite);
