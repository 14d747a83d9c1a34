//! `TestApp`: a running Vigil on a random port with its own fresh database, and a small
//! HTTP client to talk to it.
//!
//! The suites of ingest, list, cache and realtime run in each [`Mode`] (the README's *Modes*):
//! [`in_each_mode!`] turns one `async fn name(mode: Mode)` into the tests `name::embedded`
//! and `name::mysql` (or `name::mysql_redis`), so both modes run the very same assertions.
//! Tests that are MySQL- or Redis-specific by nature (two instances on one database, Redis
//! cut through a proxy) call the MySQL spawns directly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sqlx::Row as _;
use sqlx::mysql::MySqlPool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use tempfile::TempDir;
use tokio::sync::oneshot;
use vigil_realtime::{BridgeStats, Hub};
use vigil_server::Application;
use vigil_server::config::Config;
use vigil_testkit::database::TestDatabase;
use vigil_testkit::proxy::FaultProxy;

/// A response, fully read.
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The `ids` of a bulk 201.
    pub fn ids(&self) -> Vec<u64> {
        let json = self.json();
        let ids = json["ids"].as_array().expect("a bulk answer has ids");
        ids.iter()
            .map(|id| id.as_u64().expect("a numeric id"))
            .collect()
    }

    pub fn request_id(&self) -> &str {
        self.header("x-request-id")
            .expect("every response carries X-Request-Id")
    }

    /// Asserts the API's error shape (the README's *Errors*) with this code, and that the
    /// body's request id is the header's.
    pub fn assert_error(&self, status: u16, code: &str) -> serde_json::Value {
        let text = String::from_utf8_lossy(&self.body).into_owned();
        assert_eq!(self.status.as_u16(), status, "{text}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        let json = self.json();
        assert_eq!(json["error"], code, "{text}");
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{text}"
        );
        assert_eq!(json["requestId"], self.request_id(), "{text}");
        json
    }
}

/// Makes, for each `async fn name(mode: Mode)`, a module `name` with one test per mode:
///
/// - `in_each_mode!(a, b)`: `embedded` and `mysql` (no Redis);
/// - `in_each_mode!(redis: a, b)`: `embedded` and `mysql_redis` (the cache tests, whose list
///   is Redis's in the full mode);
/// - `in_each_mode!(all: a, b)`: all three (realtime, whose feed differs in each).
macro_rules! in_each_mode {
    (@test $name:ident, $test:ident, $mode:ident) => {
        #[tokio::test]
        async fn $test() {
            super::$name($crate::helpers::Mode::$mode).await
        }
    };
    (redis: $($name:ident),* $(,)?) => {
        $(mod $name {
            $crate::helpers::in_each_mode!(@test $name, embedded, Embedded);
            $crate::helpers::in_each_mode!(@test $name, mysql_redis, MySqlRedis);
        })*
    };
    (all: $($name:ident),* $(,)?) => {
        $(mod $name {
            $crate::helpers::in_each_mode!(@test $name, embedded, Embedded);
            $crate::helpers::in_each_mode!(@test $name, mysql, MySql);
            $crate::helpers::in_each_mode!(@test $name, mysql_redis, MySqlRedis);
        })*
    };
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            $crate::helpers::in_each_mode!(@test $name, embedded, Embedded);
            $crate::helpers::in_each_mode!(@test $name, mysql, MySql);
        })*
    };
}
pub(crate) use in_each_mode;

/// Which of the README's modes a mode-neutral test runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No `DATABASE_URL`, no `REDIS_URL`: SQLite in a temporary `VIGIL_DATA_DIR`, the
    /// in-process recent list and broadcast.
    Embedded,
    /// A fresh database on the machine's MariaDB, no Redis.
    MySql,
    /// A fresh MariaDB database and the machine's Redis under this test's own names.
    MySqlRedis,
}

/// Where a test server's events live, removed by [`TestStore::drop_database`]: a MariaDB
/// database, or a temporary data directory holding the embedded SQLite file.
pub enum TestStore {
    MySql(TestDatabase),
    Embedded { dir: TempDir, url: String },
}

impl From<TestDatabase> for TestStore {
    fn from(database: TestDatabase) -> Self {
        TestStore::MySql(database)
    }
}

impl TestStore {
    /// A fresh, empty store for `mode` (Redis, if the mode has it, is not part of a store).
    pub async fn create(mode: Mode) -> TestStore {
        match mode {
            Mode::Embedded => TestStore::embedded(),
            Mode::MySql | Mode::MySqlRedis => TestDatabase::create().await.into(),
        }
    }

    /// A fresh, empty embedded data directory.
    pub fn embedded() -> TestStore {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("vigil.db").display());
        TestStore::Embedded { dir, url }
    }

    /// A `DATABASE_URL` naming this store (for the embedded one, its SQLite file).
    pub fn url(&self) -> &str {
        match self {
            TestStore::MySql(database) => database.url(),
            TestStore::Embedded { url, .. } => url,
        }
    }

    /// A test configuration on this store: `--database-url` for MariaDB; for the embedded
    /// store only `--data-dir`, as a user of the default mode would run it.
    pub fn config(&self, extra: &[&str]) -> Config {
        match self {
            TestStore::MySql(database) => test_config(database.url(), extra),
            TestStore::Embedded { dir, .. } => {
                let dir = dir.path().to_str().expect("a UTF-8 temporary path");
                let mut args = vec!["vigil", "--addr", "127.0.0.1:0", "--data-dir", dir];
                args.extend_from_slice(extra);
                Config::from_args(&args).expect("a valid test configuration")
            }
        }
    }

    /// Every stored row, by id, read straight from the database (not through Vigil).
    pub async fn rows(&self) -> Vec<Row> {
        match self {
            TestStore::MySql(database) => {
                let pool = MySqlPool::connect(database.url())
                    .await
                    .expect("connect to the test database");
                let rows = all_rows(&pool).await;
                pool.close().await;
                rows
            }
            TestStore::Embedded { dir, .. } => {
                let options = SqliteConnectOptions::new()
                    .filename(dir.path().join("vigil.db"))
                    .read_only(true);
                let pool = SqlitePool::connect_with(options)
                    .await
                    .expect("open the embedded database");
                let rows = sqlx::query(ROWS_QUERY)
                    .fetch_all(&pool)
                    .await
                    .expect("read the events table")
                    .iter()
                    .map(|row| Row {
                        id: u64::try_from(row.get::<i64, _>("id")).expect("a positive id"),
                        source: row.get("source"),
                        event_type: row.get("type"),
                        level: row.get("level"),
                        payload: row.get("payload"),
                        request_id: row.get("request_id"),
                    })
                    .collect();
                pool.close().await;
                rows
            }
        }
    }

    /// Removes the database or the data directory.
    pub async fn drop_database(self) {
        match self {
            TestStore::MySql(database) => database.drop_database().await,
            TestStore::Embedded { dir, .. } => drop(dir),
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub database: TestStore,
    /// This test's Redis key prefix, when it uses Redis.
    pub redis_prefix: Option<String>,
    pub client: Client<HttpConnector, Full<Bytes>>,
    /// The server's realtime hub, for its counters.
    pub hub: Hub,
    /// The Redis bridge's counters, when the server uses Redis.
    pub bridge: Option<Arc<BridgeStats>>,
    /// The separate metrics listener, when `--metrics-addr` is set.
    pub metrics_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Configuration for a test server: port 0 on loopback, the given database.
pub fn test_config(database_url: &str, extra: &[&str]) -> Config {
    let mut args = vec![
        "vigil",
        "--addr",
        "127.0.0.1:0",
        "--database-url",
        database_url,
    ];
    args.extend_from_slice(extra);
    Config::from_args(&args).expect("a valid test configuration")
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(&[]).await
    }

    /// A server with extra command-line settings (e.g. `["--queue-events", "10"]`).
    pub async fn spawn_with(extra: &[&str]) -> TestApp {
        let database = TestDatabase::create().await;
        let config = test_config(database.url(), extra);
        Self::spawn_on(database, config).await
    }

    /// A server in `mode` with extra command-line settings.
    pub async fn spawn_in(mode: Mode, extra: &[&str]) -> TestApp {
        match mode {
            Mode::Embedded => {
                let store = TestStore::embedded();
                let config = store.config(extra);
                Self::spawn_on(store, config).await
            }
            Mode::MySql => Self::spawn_with(extra).await,
            Mode::MySqlRedis => Self::spawn_with_redis(extra).await,
        }
    }

    /// A server with this configuration, owning `database` for cleanup and inspection.
    pub async fn spawn_on(database: impl Into<TestStore>, config: Config) -> TestApp {
        let database = database.into();
        let application = Application::build(config)
            .await
            .expect("build the application");
        let addr = application.local_addr();
        let hub = application.hub();
        let bridge = application.bridge_stats();
        let metrics_addr = application.metrics_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(application.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let client = Client::builder(TokioExecutor::new()).build_http();
        TestApp {
            addr,
            database,
            redis_prefix: None,
            client,
            hub,
            bridge,
            metrics_addr,
            stop: Some(stop),
            running,
        }
    }

    /// A server whose database connections go through a fault proxy in front of the
    /// machine's MariaDB.
    pub async fn spawn_behind_db_proxy(extra: &[&str]) -> (TestApp, FaultProxy) {
        let database = TestDatabase::create().await;
        let proxy = FaultProxy::start(MARIADB.parse::<SocketAddr>().unwrap())
            .await
            .unwrap();
        let proxied_url = format!("mysql://root@{}/{}", proxy.addr(), database.name());
        let config = test_config(&proxied_url, extra);
        (TestApp::spawn_on(database, config).await, proxy)
    }

    /// A server with Redis at `redis_url` under this test's own key and channel names.
    pub async fn spawn_with_redis_at(redis_url: &str, extra: &[&str]) -> TestApp {
        let database = TestDatabase::create().await;
        let prefix = format!("vigil:test:{}", uuid::Uuid::new_v4().simple());
        let recent_key = format!("{prefix}:events:recent");
        let channel = format!("{prefix}:events:new");
        let mut args = vec![
            "--redis-url",
            redis_url,
            "--redis-recent-key",
            &recent_key,
            "--redis-channel",
            &channel,
        ];
        args.extend_from_slice(extra);
        let config = test_config(database.url(), &args);
        let mut app = Self::spawn_on(database, config).await;
        app.redis_prefix = Some(prefix);
        app
    }

    /// A server with the machine's Redis, under this test's own names.
    pub async fn spawn_with_redis(extra: &[&str]) -> TestApp {
        Self::spawn_with_redis_at(REDIS_URL, extra).await
    }

    /// The settings that point another instance at this test's Redis names (same list, same
    /// channel), for a second instance sharing them.
    pub fn redis_args(&self) -> Vec<String> {
        let prefix = self.redis_prefix.as_deref().expect("a Redis test app");
        vec![
            "--redis-url".into(),
            REDIS_URL.into(),
            "--redis-recent-key".into(),
            format!("{prefix}:events:recent"),
            "--redis-channel".into(),
            format!("{prefix}:events:new"),
        ]
    }

    /// This test's event channel.
    pub fn channel(&self) -> String {
        format!(
            "{}:events:new",
            self.redis_prefix.as_deref().expect("a Redis test app")
        )
    }

    /// This test's recent-list key.
    pub fn recent_key(&self) -> String {
        format!(
            "{}:events:recent",
            self.redis_prefix.as_deref().expect("a Redis test app")
        )
    }

    /// A connection to the machine's Redis, for checking and deleting this test's own keys.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(REDIS_URL)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn request(&self, request: Request<Full<Bytes>>) -> TestResponse {
        read_response(self.client.request(request)).await
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(Method::GET, path, None, "").await
    }

    pub async fn post_json(&self, body: impl Into<Bytes>) -> TestResponse {
        self.send(Method::POST, "/api/events", Some("application/json"), body)
            .await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> TestResponse {
        let mut builder = Request::builder().method(method).uri(self.url(path));
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        self.request(builder.body(Full::new(body.into())).unwrap())
            .await
    }

    /// A request with these headers (`(name, value)` pairs).
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> TestResponse {
        let mut builder = Request::builder().method(method).uri(self.url(path));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.request(builder.body(Full::new(body.into())).unwrap())
            .await
    }

    /// A pool on this test's MariaDB database, to check what the table holds.
    pub async fn db(&self) -> MySqlPool {
        MySqlPool::connect(self.database.url())
            .await
            .expect("connect to the test database")
    }

    /// Every stored row, by id, in either mode.
    pub async fn rows(&self) -> Vec<Row> {
        self.database.rows().await
    }

    /// Starts a graceful shutdown (as SIGTERM would) without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the server gracefully and waits for it; removes this test's Redis keys.
    pub async fn stop(mut self) -> TestStore {
        self.begin_stop();
        tokio::time::timeout(Duration::from_secs(60), &mut self.running)
            .await
            .expect("the server stops within a minute")
            .expect("the server task did not panic")
            .expect("the server stopped cleanly");
        // After the stop: the publisher drains at shutdown and would recreate the list.
        if let Some(prefix) = self.redis_prefix.take() {
            let mut redis = self.redis().await;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}:*"))
                .query_async(&mut redis)
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut redis).await;
            }
        }
        self.database
    }
}

/// `POST /api/events` to `addr` with a JSON `body`, for tests that drive a server by address
/// (a second instance, the real binary) or from their own client.
pub fn post_events_request(addr: SocketAddr, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}/api/events"))
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

/// [`post_events_request`] with an `Idempotency-Key`.
pub fn keyed_post_request(
    addr: SocketAddr,
    key: &str,
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut request = post_events_request(addr, body);
    request.headers_mut().insert(
        "idempotency-key",
        http::HeaderValue::from_str(key).expect("a valid header value"),
    );
    request
}

/// Waits for a client's response (a minute at most) and reads it whole.
pub async fn read_response(
    response: impl Future<
        Output = Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>,
    >,
) -> TestResponse {
    let response = tokio::time::timeout(Duration::from_secs(60), response)
        .await
        .expect("the server answers within a minute")
        .expect("the request completes");
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .expect("read the response body")
        .to_bytes();
    TestResponse {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Reads until the server closes the connection (or 30 s pass between two reads); what it sent.
pub async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// The machine's Redis.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The machine's MariaDB.
pub const MARIADB: &str = "127.0.0.1:3306";

/// A JSON array of valid events, one per source.
pub fn bulk_json(sources: &[String]) -> String {
    let events: Vec<String> = sources.iter().map(|source| event_json(source)).collect();
    format!("[{}]", events.join(","))
}

/// A valid single-event body with a recognisable source.
pub fn event_json(source: &str) -> String {
    format!(r#"{{"source":"{source}","type":"GAS","level":"WARN","payload":{{"ppm":120}}}}"#)
}

/// One row of the events table, as a test reads it back.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Row {
    pub id: u64,
    pub source: String,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub level: String,
    pub payload: Option<String>,
    pub request_id: String,
}

const ROWS_QUERY: &str =
    "SELECT id, source, type, level, payload, request_id FROM events ORDER BY id";

pub async fn all_rows(pool: &MySqlPool) -> Vec<Row> {
    sqlx::query_as::<_, Row>(ROWS_QUERY)
        .fetch_all(pool)
        .await
        .expect("read the events table")
}

/// Another Vigil on an existing test's database (a second instance sharing it).
pub struct ExtraInstance {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl ExtraInstance {
    pub async fn start(database_url: &str) -> ExtraInstance {
        Self::start_with(database_url, &[]).await
    }

    /// Another instance with extra settings (e.g. [`TestApp::redis_args`] to share its Redis).
    pub async fn start_with(database_url: &str, extra: &[String]) -> ExtraInstance {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let application = Application::build(test_config(database_url, &extra))
            .await
            .expect("build the second instance");
        let addr = application.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(application.run_until_stopped(async {
            let _ = stopped.await;
        }));
        ExtraInstance {
            addr,
            stop,
            running,
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(60), self.running)
            .await
            .expect("the instance stops within a minute")
            .expect("the instance task did not panic")
            .expect("the instance stopped cleanly");
    }
}
