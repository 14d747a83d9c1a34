//! Shared setup: a store on a fresh database of either backend, events whose content is
//! derived from their id (so any row can be checked against the id it was acknowledged with),
//! row checks.
//!
//! Backend-neutral tests are written once as `async fn name(backend: Backend)` and listed in
//! [`on_each_backend!`], which makes one test per backend of each (`name::mysql`,
//! `name::sqlite`), so both run in parallel and a failure names its backend.

use std::time::Duration;

use tempfile::TempDir;
use vigil_core::{Level, NewEvent, UnixMillis};
use vigil_store::{EventRow, Store, StoreOptions, StoredEvent};
use vigil_testkit::database::TestDatabase;

/// Makes `name::mysql` and `name::sqlite` tests of each `async fn name(backend: Backend)`.
macro_rules! on_each_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn mysql() {
                    super::$name(crate::helpers::Backend::MySql).await
                }

                #[tokio::test]
                async fn sqlite() {
                    super::$name(crate::helpers::Backend::Sqlite).await
                }
            }
        )*
    };
}

/// Which store a backend-neutral test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh database on the machine's MariaDB.
    MySql,
    /// A fresh SQLite file in a temporary directory of its own.
    Sqlite,
}

/// Where a test's events live, removed when the test is done: a MariaDB database or a
/// temporary directory holding a SQLite file.
pub enum TestTarget {
    MySql(TestDatabase),
    Sqlite { dir: TempDir, url: String },
}

impl TestTarget {
    pub async fn create(backend: Backend) -> TestTarget {
        match backend {
            Backend::MySql => TestTarget::MySql(TestDatabase::create().await),
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = format!("sqlite://{}", dir.path().join("vigil.db").display());
                TestTarget::Sqlite { dir, url }
            }
        }
    }

    /// The URL `Store::connect` takes.
    pub fn url(&self) -> &str {
        match self {
            TestTarget::MySql(database) => database.url(),
            TestTarget::Sqlite { url, .. } => url,
        }
    }

    /// Drops the database or removes the directory.
    pub async fn drop_database(self) {
        match self {
            TestTarget::MySql(database) => database.drop_database().await,
            TestTarget::Sqlite { dir, .. } => drop(dir),
        }
    }
}

/// A fresh database of `backend` and a store connected to it.
pub async fn fresh_store(backend: Backend) -> (TestTarget, Store) {
    fresh_store_with(backend, &StoreOptions::default()).await
}

/// [`fresh_store`] with `options`.
pub async fn fresh_store_with(backend: Backend, options: &StoreOptions) -> (TestTarget, Store) {
    let target = TestTarget::create(backend).await;
    let store = Store::connect(target.url(), options)
        .await
        .expect("connect the store");
    (target, store)
}

/// A fresh MariaDB database and a store connected to it, for MySQL-only tests.
pub async fn store_on_fresh_database() -> (TestDatabase, Store) {
    let database = TestDatabase::create().await;
    let store = Store::connect(database.url(), &StoreOptions::default())
        .await
        .expect("connect the store");
    (database, store)
}

/// Options with a short statement timeout, for tests that make statements hang.
pub fn options_with_statement_timeout(timeout: Duration) -> StoreOptions {
    StoreOptions {
        statement_timeout: timeout,
        ..StoreOptions::default()
    }
}

/// An event whose every field is a function of `tag`, so a row can be checked against it.
pub fn event_for(tag: u64) -> NewEvent {
    NewEvent {
        source: format!("sensor-{tag}-é"),
        event_type: format!("T{}", tag % 7),
        level: Level::ALL[(tag % 4) as usize],
        payload: (!tag.is_multiple_of(3))
            .then(|| format!(r#"{{"tag":{tag},"z":[1,{{"b":2,"a":1}}]}}"#)),
        occurred_at: tag
            .is_multiple_of(2)
            .then_some(UnixMillis(1_700_000_000_000 + tag as i64)),
    }
}

/// The request id used for `tag`'s event.
pub fn request_id_for(tag: u64) -> String {
    format!("req-{tag}")
}

/// A creation time with milliseconds that differ per row.
pub fn created_at_for(tag: u64) -> UnixMillis {
    UnixMillis(1_795_497_129_000 + (tag % 1000) as i64)
}

/// Owned data for a batch whose content is derived from the ids.
pub struct Batch {
    pub ids: Vec<u64>,
    pub events: Vec<NewEvent>,
    pub request_ids: Vec<String>,
}

impl Batch {
    pub fn for_ids(ids: Vec<u64>) -> Batch {
        let events = ids.iter().map(|&id| event_for(id)).collect();
        let request_ids = ids.iter().map(|&id| request_id_for(id)).collect();
        Batch {
            ids,
            events,
            request_ids,
        }
    }

    pub fn rows(&self) -> Vec<EventRow<'_>> {
        self.ids
            .iter()
            .zip(&self.events)
            .zip(&self.request_ids)
            .map(|((&id, event), request_id)| EventRow {
                id,
                event,
                created_at: created_at_for(id),
                request_id,
            })
            .collect()
    }
}

/// Panics unless `stored` is exactly the row that `id`'s derived event would be.
pub fn assert_is_row_for(stored: &StoredEvent, id: u64) {
    let event = event_for(id);
    let request_id = request_id_for(id);
    let expected = event
        .as_stored(id, created_at_for(id), &request_id)
        .encode();
    assert_eq!(
        String::from_utf8(stored.as_ref().encode()).unwrap(),
        String::from_utf8(expected).unwrap(),
        "row {id} differs from what was acknowledged"
    );
}

/// How many rows the events table at `url` (either backend) holds, read with a plain query
/// on a connection of its own.
pub async fn count_rows(url: &str) -> i64 {
    use sqlx::Connection;
    const COUNT: &str = "SELECT COUNT(*) FROM events";
    if url.starts_with("sqlite:") {
        let mut connection = sqlx::sqlite::SqliteConnection::connect(url).await.unwrap();
        let count: i64 = sqlx::query_scalar(COUNT)
            .fetch_one(&mut connection)
            .await
            .unwrap();
        let _ = connection.close().await;
        return count;
    }
    let mut connection = sqlx::mysql::MySqlConnection::connect(url).await.unwrap();
    let count: i64 = sqlx::query_scalar(COUNT)
        .fetch_one(&mut connection)
        .await
        .unwrap();
    let _ = connection.close().await;
    count
}
