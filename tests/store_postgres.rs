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
/// rolls back (the whole transaction when the run was its first write, the run's savepoint
/// otherwise), each is written on its own, and the others commit with gap-free references.
#[tokio::test]
async fn a_create_the_database_refuses_fails_alone_in_its_batch() {
    use balagh::domain::Timestamp;
    use balagh::domain::lifecycle::Action;
    use balagh::domain::ticket::Visibility;
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

    // First creates alone, so runs of creates are their transaction's first write (written
    // without a savepoint); then with comments on another ticket in among them, so runs also
    // follow another write of their transaction (written in a savepoint). A refused create
    // must fail alone either way.
    let commented = store
        .create_ticket(conformance::ctx(), conformance::new_ticket("pothole"))
        .await
        .unwrap();
    let mut comments = Vec::new();
    let mut tasks = Vec::new();
    for with_comments in [false, true] {
        let mut round = Vec::new();
        for i in 0..60 {
            let store = store.clone();
            if with_comments && i % 3 == 1 {
                comments.push(tokio::spawn({
                    let store = store.clone();
                    async move {
                        let comment = Action::Comment {
                            text: format!("comment {i}"),
                            visibility: Visibility::Internal,
                        };
                        store
                            .apply_action(conformance::ctx(), commented.id, None, comment)
                            .await
                    }
                }));
            }
            round.push(tokio::spawn(async move {
                let mut new = conformance::new_ticket("pothole");
                if i % 10 == 4 {
                    new.subject = format!("refuse-me {i}");
                }
                (i, store.create_ticket(conformance::ctx(), new).await)
            }));
        }
        // The rounds one after the other: the first one's batches hold creates only.
        for task in round {
            tasks.push(task.await.unwrap());
        }
    }
    for comment in comments {
        comment
            .await
            .unwrap()
            .expect("a comment beside the creates");
    }
    let mut numbers = Vec::new();
    for (i, answer) in tasks {
        match answer {
            Ok(ticket) => {
                assert_ne!(i % 10, 4, "a refused create was answered OK");
                numbers.push(ticket.reference.number());
            }
            Err(error) => assert_eq!(i % 10, 4, "create {i} failed with its batch: {error:?}"),
        }
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (2..=109).collect::<Vec<_>>());
    let changes = store.read_changes(0, 1000).await.unwrap();
    assert_eq!(
        changes.len(),
        1 + 108 + 20,
        "one event per committed create and comment, none for refused creates"
    );
    assert!(
        changes
            .windows(2)
            .all(|w| w[0].event.cursor < w[1].event.cursor),
        "cursors ascend in commit order"
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

/// The session limits hold: a write waiting on a row lock beyond `statement_timeout` fails
/// alone with a retryable status (`UNAVAILABLE` `STORAGE_BUSY`) while the writes around it
/// commit; a batch that cannot take the write lock in time fails retryably too; and once the
/// other session lets go, writes go through with no reference number lost.
#[tokio::test]
async fn writes_held_up_beyond_the_statement_timeout_fail_retryably_and_alone() {
    use std::time::Duration;

    use balagh::domain::Timestamp;
    use balagh::store::{SessionLimits, StoreError};
    use sqlx::Connection;

    let Some(database) = pg::TestDatabase::create().await else {
        return;
    };
    let clock = balagh::domain::ManualClock::new(Timestamp::from_micros(conformance::JUNE_2026));
    let mut options = PostgresStoreOptions::new(&database.url);
    options.limits = SessionLimits {
        statement_timeout: Some(Duration::from_millis(500)),
        ..SessionLimits::default()
    };
    let store = Arc::new(PostgresStore::open(options, Arc::new(clock)).await.unwrap());
    let first = store
        .create_ticket(conformance::ctx(), conformance::new_ticket("pothole"))
        .await
        .unwrap();

    // Another session holds the ticket's row: the update waits on it and is cancelled.
    let mut other = sqlx::PgConnection::connect(&database.url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; SELECT 1 FROM tickets WHERE id = '{}' FOR UPDATE",
        first.id
    )))
    .execute(&mut other)
    .await
    .unwrap();
    let held = {
        let store = store.clone();
        tokio::spawn(async move {
            let patch = balagh::domain::ticket::TicketPatch {
                subject: Some("عنوان جديد".into()),
                ..Default::default()
            };
            store
                .update_ticket(conformance::ctx(), first.id, None, patch)
                .await
        })
    };
    let beside = store
        .create_ticket(conformance::ctx(), conformance::new_ticket("pothole"))
        .await
        .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(20), held)
        .await
        .expect("the held update ends")
        .unwrap()
        .expect_err("the held update fails");
    assert!(
        matches!(&error, StoreError::Database(e)
            if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("57014")),
        "{error:?}"
    );
    let status = tonic::Status::from(error);
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let details = tonic_types::StatusExt::get_error_details(&status);
    assert_eq!(details.error_info().unwrap().reason, "STORAGE_BUSY");
    assert_eq!(beside.reference.number(), 2);
    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();

    // Another session holds the write lock itself: whole batches fail, retryably.
    sqlx::query("SELECT pg_advisory_lock(108170569672552)")
        .execute(&mut other)
        .await
        .unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        store.create_ticket(conformance::ctx(), conformance::new_ticket("pothole")),
    )
    .await
    .expect("the create ends");
    assert!(
        matches!(refused, Err(StoreError::CommitFailed)),
        "{refused:?}"
    );
    assert_eq!(
        tonic::Status::from(refused.unwrap_err()).code(),
        tonic::Code::Unavailable
    );
    sqlx::query("SELECT pg_advisory_unlock(108170569672552)")
        .execute(&mut other)
        .await
        .unwrap();
    let after = store
        .create_ticket(conformance::ctx(), conformance::new_ticket("pothole"))
        .await
        .unwrap();
    assert_eq!(
        after.reference.number(),
        3,
        "the refused creates took no number"
    );
    let changed = store.get_ticket(first.id).await.unwrap().unwrap();
    assert_eq!(changed, first, "the cancelled update changed nothing");
    other.close().await.unwrap();
    store.close().await;
}

/// A replica waiting for a role tries again on the session of its last try instead of
/// opening one each time, and takes the role on that session once the holder lets go.
#[tokio::test]
async fn a_replica_waiting_for_a_role_keeps_one_session_for_its_tries() {
    use balagh::domain::Timestamp;
    use balagh::store::LeaderRole;
    use sqlx::Connection;

    let Some(database) = pg::TestDatabase::create().await else {
        return;
    };
    let open = || async {
        let clock =
            balagh::domain::ManualClock::new(Timestamp::from_micros(conformance::JUNE_2026));
        PostgresStore::open(PostgresStoreOptions::new(&database.url), Arc::new(clock))
            .await
            .unwrap()
    };
    let (a, b) = (open().await, open().await);
    let mut admin = sqlx::PgConnection::connect(&database.url).await.unwrap();
    // Sessions of this database whose last statement tried to take a role and that hold no
    // advisory lock: the sessions waiting for a role.
    let mut waiting = async || -> Vec<i32> {
        sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'SELECT pg_try_advisory_lock%'
               AND pid NOT IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')
             ORDER BY pid",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap()
    };

    let lease = a
        .try_lead(LeaderRole::EscalationScheduler)
        .await
        .unwrap()
        .expect("the role is free");
    let mut sessions = Vec::new();
    for _ in 0..3 {
        assert!(
            b.try_lead(LeaderRole::EscalationScheduler)
                .await
                .unwrap()
                .is_none()
        );
        sessions.push(waiting().await);
    }
    assert_eq!(sessions[0].len(), 1, "one session waits: {sessions:?}");
    assert!(sessions.iter().all(|s| *s == sessions[0]), "{sessions:?}");

    lease.release().await;
    let taken = b
        .try_lead(LeaderRole::EscalationScheduler)
        .await
        .unwrap()
        .expect("the role is free again");
    let holders: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_locks
         WHERE locktype = 'advisory' AND granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
         ORDER BY pid",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(holders, sessions[0], "taken on the session that waited");
    taken.release().await;
    admin.close().await.unwrap();
    a.close().await;
    b.close().await;
}
