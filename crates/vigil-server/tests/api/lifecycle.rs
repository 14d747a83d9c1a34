//! The `vigil` binary itself: configuration errors, and SIGTERM under load.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use vigil_testkit::database::TestDatabase;

use crate::helpers::{all_rows, event_json};

fn vigil() -> Command {
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
async fn missing_database_url_exits_2_naming_the_variable() {
    let output = vigil().output().await.unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
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

/// Starts the binary on a random port; returns it and its address, read from its JSON log.
async fn start_vigil(database_url: &str) -> (Child, SocketAddr) {
    let mut child = vigil()
        .env("DATABASE_URL", database_url)
        .env("VIGIL_ADDR", "127.0.0.1:0")
        .env("VIGIL_LOG_FORMAT", "json")
        .env("VIGIL_SHUTDOWN_TIMEOUT_S", "20")
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
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
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

#[tokio::test]
async fn sigterm_under_load_keeps_every_acknowledged_event() {
    let database = TestDatabase::create().await;
    let (mut child, addr) = start_vigil(database.url()).await;
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
                let request = http::Request::post(format!("http://{addr}/api/events"))
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(event_json(
                        &source,
                    ))))
                    .unwrap();
                let Ok(response) = client.request(request).await else {
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
    let pid = child.id().expect("vigil is running") as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("vigil exits within a minute of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "a graceful stop exits 0");

    let mut acked: HashMap<u64, String> = HashMap::new();
    for poster in posters {
        acked.extend(poster.await.unwrap());
    }
    assert!(
        acked.len() > 32,
        "posters were acknowledged before the stop"
    );
    let pool = sqlx::mysql::MySqlPool::connect(database.url())
        .await
        .unwrap();
    let stored: HashMap<u64, String> = all_rows(&pool)
        .await
        .into_iter()
        .map(|r| (r.id, r.source))
        .collect();
    for (id, source) in &acked {
        assert_eq!(
            stored.get(id),
            Some(source),
            "acknowledged event {id} is in the table"
        );
    }
    pool.close().await;
    database.drop_database().await;
}
