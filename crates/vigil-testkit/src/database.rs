//! A fresh MariaDB database per test, on the machine's shared server.
//!
//! Each test gets its own database (`vigil_t_<uuid>`), so tests run in parallel without
//! seeing each other's rows, and nothing on the server is ever flushed or shared. The server
//! is `VIGIL_TEST_MYSQL_URL` or `mysql://root@127.0.0.1:3306`; any database named in that URL
//! is replaced by the test's own.
//!
//! ```no_run
//! # async fn example() {
//! use vigil_testkit::database::TestDatabase;
//!
//! let database = TestDatabase::create().await;
//! let url = database.url(); // mysql://root@127.0.0.1:3306/vigil_t_…
//! // ... connect Vigil to `url` ...
//! database.drop_database().await;
//! # }
//! ```
//!
//! A database that is not dropped explicitly (a test that failed, say) is dropped when its
//! `TestDatabase` is, from a thread of its own so that `Drop` works inside or outside a
//! runtime.

use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Connection, Executor};

/// Environment variable naming the server tests create their databases on.
pub const TEST_MYSQL_URL_VAR: &str = "VIGIL_TEST_MYSQL_URL";

/// The server used when [`TEST_MYSQL_URL_VAR`] is unset: the machine's shared MariaDB.
pub const DEFAULT_TEST_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306";

/// Prefix of every database this module creates, so leftovers are easy to find.
pub const DATABASE_PREFIX: &str = "vigil_t_";

/// A database created for one test, dropped when the test is done with it.
#[derive(Debug)]
pub struct TestDatabase {
    /// The server URL without a database, used to drop the database.
    server_url: String,
    /// The database's URL: the server URL with the database name as its path.
    url: String,
    /// `vigil_t_<uuid, simple form>`.
    name: String,
    /// Whether the database still exists (cleared by `drop_database`).
    live: bool,
}

impl TestDatabase {
    /// Creates a database on the server at `VIGIL_TEST_MYSQL_URL`, else the shared local one.
    /// Panics if the server cannot be reached: a test cannot run without it.
    pub async fn create() -> TestDatabase {
        let server_url =
            std::env::var(TEST_MYSQL_URL_VAR).unwrap_or_else(|_| DEFAULT_TEST_MYSQL_URL.to_owned());
        TestDatabase::create_on(&server_url).await
    }

    /// Creates a database on the server at `server_url` (a `mysql://` URL; its database, if any,
    /// is ignored).
    pub async fn create_on(server_url: &str) -> TestDatabase {
        let name = format!("{DATABASE_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let server_url = with_database(server_url, "");
        let url = with_database(&server_url, &name);
        let mut connection = MySqlConnection::connect(&server_url)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to the test mysql server: {error}"));
        connection
            .execute(AssertSqlSafe(format!(
                "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )))
            .await
            .unwrap_or_else(|error| panic!("cannot create test database {name}: {error}"));
        let _ = connection.close().await;
        TestDatabase {
            server_url,
            url,
            name,
            live: true,
        }
    }

    /// The database's full URL, including its name.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database now. Panics if that fails, so a test notices a leak.
    pub async fn drop_database(mut self) {
        self.live = false;
        drop_on_server(&self.server_url, &self.name)
            .await
            .unwrap_or_else(|error| panic!("cannot drop test database {}: {error}", self.name));
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if !self.live {
            return;
        }
        // Best effort, on a thread with its own runtime: Drop may run inside a runtime (which
        // cannot be blocked on) or during a panic.
        let (server_url, name) = (self.server_url.clone(), self.name.clone());
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let _ = runtime.block_on(drop_on_server(&server_url, &name));
        });
        let _ = dropper.join();
    }
}

async fn drop_on_server(server_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut connection = MySqlConnection::connect(server_url).await?;
    let result = connection
        .execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
        .await;
    let _ = connection.close().await;
    result.map(drop)
}

/// `url` with its path replaced by `/<database>` (or by nothing when `database` is empty),
/// keeping any query string.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |at| at + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |at| authority_start + at);
    let mut out = base[..authority_end].to_owned();
    if !database.is_empty() {
        out.push('/');
        out.push_str(database);
    }
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_and_keeps_the_rest() {
        assert_eq!(
            with_database("mysql://root@127.0.0.1:3306", "vigil_t_1"),
            "mysql://root@127.0.0.1:3306/vigil_t_1"
        );
        assert_eq!(
            with_database("mysql://root@127.0.0.1:3306/test", "vigil_t_1"),
            "mysql://root@127.0.0.1:3306/vigil_t_1"
        );
        assert_eq!(
            with_database("mysql://u:p@h/test?ssl-mode=disabled", "d"),
            "mysql://u:p@h/d?ssl-mode=disabled"
        );
        assert_eq!(with_database("mysql://u@h:1/test", ""), "mysql://u@h:1");
    }
}
