//! The `vigil` binary itself: configuration errors, SIGTERM under load, and the embedded
//! mode with nothing configured but its data directory, across a restart.

// Unsafe: signalling the binary under test (libc::kill), which std cannot do but for SIGKILL.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{Mode, TestStore, event_json, in_each_mode, post_events_request};

pub fn vigil() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn without_database_url_or_a_home_it_exits_2_naming_vigil_data_dir() {
    // No DATABASE_URL means the embedded mode, whose directory defaults under $HOME: with
    // neither HOME, XDG_DATA_HOME nor VIGIL_DATA_DIR there is nowhere to put it.
    let output = vigil().output().await.unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("VIGIL_DATA_DIR"), "{stderr}");
}

#[tokio::test]
async fn a_bad_setting_exits_2_with_a_clear_message() {
    let output = vigil()
        .env("DATABASE_URL", "mysql://root@127.0.0.1:3306/test")
        .env("VIGIL_RECENT_SIZE", "7")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("recent-size") || stderr.contains("VIGIL_RECENT_SIZE"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_log_written_to_a_pipe_or_file_has_no_colour_codes() {
    // The text format, to a pipe (as `vigil 2>file` or a log collector gets it).
    let output = vigil()
        .env("VIGIL_LOG_FORMAT", "text")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("VIGIL_DATA_DIR"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "escape codes in {stderr:?}");
}

#[tokio::test]
async fn a_sigterm_the_moment_it_listens_is_a_graceful_stop() {
    // The signal handlers are in place before "vigil listening" is logged: a SIGTERM sent as
    // soon as that line appears stops it cleanly (exit 0), never by the default action.
    for _ in 0..5 {
        let data_dir = tempfile::tempdir().unwrap();
        let mut command = vigil();
        command.env("VIGIL_DATA_DIR", data_dir.path());
        let (child, _) = start(command).await;
        stop_gracefully(child).await;
    }
}

#[tokio::test]
async fn a_second_vigil_on_the_same_data_directory_exits_2_naming_the_first() {
    let data_dir = tempfile::tempdir().unwrap();
    let embedded = || {
        let mut command = vigil();
        command.env("VIGIL_DATA_DIR", data_dir.path());
        command
    };
    let (first, _) = start(embedded()).await;
    let output = embedded()
        .env("VIGIL_ADDR", "127.0.0.1:0")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let first_pid = first.id().unwrap();
    assert!(stderr.contains(&format!("pid {first_pid}")), "{stderr}");
    assert!(
        stderr.contains("in use by another vigil process"),
        "{stderr}"
    );
    stop_gracefully(first).await;

    // Gone with its process: the directory serves again.
    let (again, _) = start(embedded()).await;
    stop_gracefully(again).await;
}

/// Runs the binary with these settings until it exits; its exit code and what it logged.
async fn refused_start(settings: &[(&str, &str)]) -> (Option<i32>, String) {
    let data_dir = tempfile::tempdir().unwrap();
    let mut command = vigil();
    command.env("VIGIL_DATA_DIR", data_dir.path().join("never"));
    for (name, value) in settings {
        command.env(name, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("a refused start ends at once")
        .unwrap();
    assert!(
        !data_dir.path().join("never").exists(),
        "nothing is created for a refused start"
    );
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn every_bad_setting_exits_2_with_one_line_naming_the_variable_set() {
    let port_in_use = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = port_in_use.local_addr().unwrap().to_string();
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("VIGIL_RECENT_SIZE", "7")], "VIGIL_RECENT_SIZE"),
        (&[("REDIS_URL", "http://cache:6379")], "REDIS_URL"),
        (
            &[("DATABASE_URL", "postgres://u:pw@db/vigil")],
            "DATABASE_URL",
        ),
        (&[("VIGIL_LOG_FORMAT", "xml")], "VIGIL_LOG_FORMAT"),
        (&[("VIGIL_ADDR", &busy)], "VIGIL_ADDR"),
    ];
    for (settings, variable) in cases {
        let (code, stderr) = refused_start(settings).await;
        assert_eq!(code, Some(2), "{settings:?}: {stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|line| line.contains("error") || line.contains("ERROR"))
            .collect();
        assert_eq!(errors.len(), 1, "{settings:?}: {stderr}");
        assert!(errors[0].contains(variable), "{settings:?}: {stderr}");
        assert!(
            !stderr.contains("WARN"),
            "no warning before the refusal: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_password_the_url_parser_cannot_split_is_never_logged() {
    for url in [
        "mysql://vigil:pa/ss-Pa55@127.0.0.1:1/vigil",
        "mysql://vigil:pa#ss-Pa55@127.0.0.1:1/vigil",
        "mysql://vigil:pa?ss-Pa55@127.0.0.1:1/vigil",
    ] {
        let (code, stderr) = refused_start(&[("DATABASE_URL", url)]).await;
        assert_ne!(code, Some(0), "{stderr}");
        assert!(stderr.contains("starting vigil"), "{stderr}");
        assert!(!stderr.contains("Pa55"), "{url}: {stderr}");
    }
}

#[tokio::test]
async fn a_database_that_starts_after_vigil_is_waited_for_with_one_warning() {
    let store = TestStore::create(Mode::MySql).await;
    // The database's address for now answers nothing; a forwarder to MariaDB opens there later.
    let late = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let late_addr = late.local_addr().unwrap();
    drop(late);
    let (host, rest) = store
        .url()
        .split_once('@')
        .map(|(user, rest)| (user.to_owned(), rest.to_owned()))
        .unwrap();
    let database = rest.split_once('/').unwrap().1;
    let url = format!("{host}@{late_addr}/{database}");
    let upstream = rest.split_once('/').unwrap().0.to_owned();
    let forwarder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let listener = tokio::net::TcpListener::bind(late_addr).await.unwrap();
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    let mut command = vigil();
    command.env("DATABASE_URL", &url);
    let (child, addr, log) = start_logged(command).await;
    let (status, _) = exchange(addr, http::Method::GET, "/api/health", None).await;
    assert_eq!(status, 200);
    stop_gracefully(child).await;
    forwarder.abort();
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log.matches("the database does not answer yet").count(),
        1,
        "{log}"
    );

    // Told not to wait, it gives up at once (exit 1: a failure that may pass).
    let output = vigil()
        .env("DATABASE_URL", &url)
        .env("VIGIL_DATABASE_WAIT_S", "0")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    store.drop_database().await;
}

#[tokio::test]
async fn with_redis_unreachable_it_starts_without_waiting_on_redis_and_says_so_once() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redis_url = format!("redis://{}", closed.local_addr().unwrap());
    drop(closed);
    let data_dir = tempfile::tempdir().unwrap();
    let mut command = vigil();
    command
        .env("VIGIL_DATA_DIR", data_dir.path())
        .env("REDIS_URL", &redis_url);
    let (child, addr, log) = start_logged(command).await;
    let (status, _) = exchange(
        addr,
        http::Method::POST,
        "/api/events",
        Some(event_json("redis-down")),
    )
    .await;
    assert_eq!(status, 201);
    stop_gracefully(child).await;
    let log = log.lock().unwrap().clone();
    assert_eq!(log.matches("redis is not answering").count(), 1, "{log}");
    for waited in ["not subscribed to the event channel yet", "could not warm"] {
        assert!(!log.contains(waited), "start-up waited on redis: {log}");
    }
}

#[tokio::test]
async fn a_database_url_with_another_scheme_exits_2() {
    let output = vigil()
        .env("DATABASE_URL", "postgres://vigil:secret@127.0.0.1:1/vigil")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("mysql://"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
}

/// Starts `command` (the binary with its settings) on a random port; returns it and its
/// address, read from its JSON log.
pub async fn start(command: Command) -> (Child, SocketAddr) {
    let (child, addr, _) = start_logged(command).await;
    (child, addr)
}

/// [`start`], also returning everything the binary logs (on stderr), as it arrives.
pub async fn start_logged(mut command: Command) -> (Child, SocketAddr, Arc<Mutex<String>>) {
    let mut child = command
        .env("VIGIL_ADDR", "127.0.0.1:0")
        .env("VIGIL_LOG_FORMAT", "json")
        .env("VIGIL_SHUTDOWN_TIMEOUT_S", "20")
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let log = Arc::new(Mutex::new(String::new()));
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.lock().unwrap().push_str(&line);
            log.lock().unwrap().push('\n');
            let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if log["message"] == "vigil listening" {
                return log["addr"].as_str().unwrap().parse::<SocketAddr>().unwrap();
            }
        }
        panic!("vigil exited before listening");
    })
    .await
    .expect("vigil starts within a minute");
    // Keep draining its log so it never blocks on a full pipe.
    let kept = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut kept = kept.lock().unwrap();
            kept.push_str(&line);
            kept.push('\n');
        }
    });
    (child, addr, log)
}

in_each_mode!(
    sigterm_under_load_answers_everything_and_keeps_every_acknowledged_event,
    sigkill_under_load_keeps_every_acknowledged_event_and_restarts,
);

/// How a load test ends the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// A graceful stop: exit 0, every request answered.
    Sigterm,
    /// A crash: no chance to do anything.
    Sigkill,
}

/// The binary on `store` (MySQL by URL, embedded by its data directory).
fn vigil_on(store: &TestStore) -> Command {
    let mut command = vigil();
    match store {
        TestStore::MySql(database) => command.env("DATABASE_URL", database.url()),
        TestStore::Embedded { dir, .. } => command.env("VIGIL_DATA_DIR", dir.path()),
    };
    command
}

/// 32 producers post single events until the binary goes away; `ending` is sent after 1.5 s.
/// Returns what was acknowledged, by id.
async fn load_until(child: Child, addr: SocketAddr, ending: Ending) -> HashMap<u64, String> {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let client = Arc::new(client);
    let mut posters = Vec::new();
    for poster in 0..32 {
        let client = Arc::clone(&client);
        posters.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut refused = 0;
            for n in 0.. {
                let source = format!("p{poster}-{n}");
                let request = post_events_request(addr, event_json(&source));
                let answered =
                    tokio::time::timeout(Duration::from_secs(60), client.request(request))
                        .await
                        .expect("a post is answered or fails within a minute");
                let Ok(response) = answered else {
                    break;
                };
                let status = response.status().as_u16();
                let body = http_body_util::BodyExt::collect(response.into_body()).await;
                let Ok(body) = body else { break };
                match status {
                    201 => {
                        let json: serde_json::Value =
                            serde_json::from_slice(&body.to_bytes()).unwrap();
                        acked.push((json["id"].as_u64().unwrap(), source));
                    }
                    503 => refused += 1,
                    other => panic!("unexpected status {other} during shutdown"),
                }
                if refused > 3 {
                    break;
                }
            }
            acked
        }));
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    match ending {
        Ending::Sigterm => stop_gracefully(child).await,
        Ending::Sigkill => kill_hard(child).await,
    }
    let mut acked: HashMap<u64, String> = HashMap::new();
    for poster in posters {
        acked.extend(poster.await.unwrap());
    }
    assert!(acked.len() > 32, "posters were acknowledged before the end");
    acked
}

/// Every acknowledged event is in the store under its id.
async fn assert_all_stored(store: &TestStore, acked: &HashMap<u64, String>) {
    let stored: HashMap<u64, String> = store
        .rows()
        .await
        .into_iter()
        .map(|row| (row.id, row.source))
        .collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|(id, source)| stored.get(*id) != Some(*source))
        .take(10)
        .collect();
    assert!(lost.is_empty(), "acknowledged events missing: {lost:?}");
}

async fn sigterm_under_load_answers_everything_and_keeps_every_acknowledged_event(mode: Mode) {
    let store = TestStore::create(mode).await;
    let (child, addr) = start(vigil_on(&store)).await;
    let acked = load_until(child, addr, Ending::Sigterm).await;
    assert_all_stored(&store, &acked).await;
    store.drop_database().await;
}

async fn sigkill_under_load_keeps_every_acknowledged_event_and_restarts(mode: Mode) {
    let store = TestStore::create(mode).await;
    let (child, addr) = start(vigil_on(&store)).await;
    let acked = load_until(child, addr, Ending::Sigkill).await;
    assert_all_stored(&store, &acked).await;

    // The store recovers (SQLite replays its WAL) and ids go on above every acknowledged one.
    let (child, addr) = start(vigil_on(&store)).await;
    let (status, answer) = exchange(
        addr,
        http::Method::POST,
        "/api/events",
        Some(event_json("after-crash")),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let id = answer["id"].as_u64().unwrap();
    assert!(acked.keys().all(|&acked| acked < id), "ids go on upwards");
    stop_gracefully(child).await;
    assert_all_stored(&store, &acked).await;
    store.drop_database().await;
}

/// Sends SIGKILL and reaps the process.
async fn kill_hard(mut child: Child) {
    let pid = child.id().expect("vigil is running") as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let status = child.wait().await.unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
}

/// Sends SIGTERM and waits for a clean exit.
pub async fn stop_gracefully(mut child: Child) {
    let pid = child.id().expect("vigil is running") as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("vigil exits within a minute of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "a graceful stop exits 0");
}

/// One plain HTTP/1.1 exchange with the binary.
async fn exchange(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    body: Option<String>,
) -> (u16, serde_json::Value) {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.unwrap_or_default(),
        )))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn with_only_a_data_dir_the_binary_serves_and_keeps_events_across_a_restart() {
    let data_dir = tempfile::tempdir().unwrap();
    // Not yet existing: the embedded mode creates it.
    let data_dir = data_dir.path().join("nested/vigil");
    let embedded = || {
        let mut command = vigil();
        command.env("VIGIL_DATA_DIR", &data_dir);
        command
    };
    let (child, addr) = start(embedded()).await;
    let (status, health) = exchange(addr, http::Method::GET, "/api/health", None).await;
    assert_eq!((status, health), (200, serde_json::json!({"ok": true})));
    let (status, ready) = exchange(addr, http::Method::GET, "/api/ready", None).await;
    assert_eq!(status, 200);
    assert_eq!(ready["redis"], "off", "no Redis in the embedded mode");

    let (status, single) = exchange(
        addr,
        http::Method::POST,
        "/api/events",
        Some(event_json("edge-single")),
    )
    .await;
    assert_eq!(status, 201, "{single}");
    let single_id = single["id"].as_u64().unwrap();
    let sources: Vec<String> = (0..60).map(|n| format!("edge-bulk-{n}")).collect();
    let (status, bulk) = exchange(
        addr,
        http::Method::POST,
        "/api/events",
        Some(crate::helpers::bulk_json(&sources)),
    )
    .await;
    assert_eq!(status, 201, "{bulk}");
    assert_eq!(bulk["count"], 60);
    let (_, before) = exchange(addr, http::Method::GET, "/api/events?size=50", None).await;
    stop_gracefully(child).await;
    assert!(
        data_dir.join("vigil.db").is_file(),
        "the database file is in VIGIL_DATA_DIR"
    );

    let (child, addr) = start(embedded()).await;
    let (status, after) = exchange(addr, http::Method::GET, "/api/events?size=50", None).await;
    assert_eq!(status, 200);
    assert_eq!(after, before, "page 1 is the same after the restart");
    assert_eq!(after["items"][0]["source"], "edge-bulk-59");
    let (status, one) = exchange(
        addr,
        http::Method::GET,
        &format!("/api/events/{single_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["source"], "edge-single");
    let (_, filtered) = exchange(
        addr,
        http::Method::GET,
        "/api/events?source=edge-single",
        None,
    )
    .await;
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1);
    let (status, later) = exchange(
        addr,
        http::Method::POST,
        "/api/events",
        Some(event_json("after-restart")),
    )
    .await;
    assert_eq!(status, 201);
    assert!(
        later["id"].as_u64().unwrap() > bulk["ids"][59].as_u64().unwrap(),
        "ids keep increasing across a restart"
    );
    stop_gracefully(child).await;
}
