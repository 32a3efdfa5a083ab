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

/// A create the database itself refuses (here a trigger stands in for any refusal the
/// checks before writing cannot foresee) fails alone: the run of creates written together
/// rolls back, each is written on its own, and the others commit with gap-free references.
#[tokio::test]
async fn a_create_the_database_refuses_fails_alone_in_its_batch() {
    use balagh::domain::Timestamp;
    use sqlx::Connection;

    let Some(database) = pg::TestDatabase::create().await else {
        return;
    };
    let clock = balagh::domain::ManualClock::new(Timestamp::from_micros(conformance::JUNE_2026));
    let store = Arc::new(
        PostgresStore::open(PostgresStoreOptions::new(&database.url), Arc::new(clock))
            .await
            .expect("open postgres store"),
    );
    let mut admin = sqlx::PgConnection::connect(&database.url).await.unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.body->>'subject' LIKE '%refuse-me%' THEN
                 RAISE EXCEPTION 'refused by the test trigger';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_marked BEFORE INSERT ON tickets
             FOR EACH ROW EXECUTE FUNCTION refuse_marked();",
    )
    .execute(&mut admin)
    .await
    .unwrap();

    let mut tasks = Vec::new();
    for i in 0..120 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut new = conformance::new_ticket("pothole");
            if i % 10 == 4 {
                new.subject = format!("refuse-me {i}");
            }
            (i, store.create_ticket(conformance::ctx(), new).await)
        }));
    }
    let mut numbers = Vec::new();
    for task in tasks {
        let (i, answer) = task.await.unwrap();
        match answer {
            Ok(ticket) => {
                assert_ne!(i % 10, 4, "a refused create was answered OK");
                numbers.push(ticket.reference.number());
            }
            Err(error) => assert_eq!(i % 10, 4, "create {i} failed with its batch: {error:?}"),
        }
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=108).collect::<Vec<_>>());
    let changes = store.read_changes(0, 1000).await.unwrap();
    assert_eq!(
        changes.len(),
        108,
        "one event per committed create, none for refused ones"
    );
    let n_marked: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM tickets WHERE body->>'subject' LIKE 'refuse-me%'")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(n_marked, 0);
    admin.close().await.unwrap();
    store.close().await;
}
