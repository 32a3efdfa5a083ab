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

/// Committed writes reach the database file itself, not only its WAL, by the store's
/// checkpoint thread, long before the writer's own checkpoint threshold: a copy of the main
/// file alone, without its WAL, eventually holds every ticket. With SQLite's default automatic
/// checkpoint (1,000 WAL pages, run by the writer) these few writes would stay in the WAL.
#[tokio::test]
async fn the_checkpoint_thread_copies_committed_writes_into_the_database_file() {
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("store.db");
    let store = SqliteStore::open(
        SqliteStoreOptions::new(format!("sqlite://{}", file.display())),
        Arc::new(ManualClock::new(balagh::domain::Timestamp::from_micros(
            conformance::JUNE_2026,
        ))),
    )
    .await
    .expect("open sqlite store");
    const TICKETS: i64 = 20;
    for _ in 0..TICKETS {
        store
            .create_ticket(conformance::ctx(), conformance::new_ticket("pothole"))
            .await
            .expect("created");
    }
    let copies = tempfile::tempdir().expect("temp dir");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut attempt = 0;
    loop {
        attempt += 1;
        // A copy taken while a checkpoint writes may be torn; the next one is not.
        let copy = copies.path().join(format!("copy-{attempt}.db"));
        std::fs::copy(&file, &copy).expect("copy the database file");
        let in_file = rusqlite::Connection::open(&copy)
            .and_then(|c| c.query_row("SELECT count(*) FROM tickets", [], |row| row.get(0)))
            .unwrap_or(-1_i64);
        if in_file == TICKETS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the database file holds {in_file} of {TICKETS} tickets after 10 s \
             ({} checkpoints ran)",
            store.checkpoints()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        store.checkpoints() >= 1,
        "the checkpoint thread reports a complete checkpoint"
    );
    store.close().await;
}
