//! The original service's documented check, in a real browser: headless Chromium (Debian's
//! package; `scripts/test.sh` installs it) runs
//! `const ws = new WebSocket("ws://HOST/ws"); ws.onmessage = (e) => console.log("WS:", e.data);`
//! and a POST prints the stored event in its console.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::helpers::{TestApp, event_json};
use crate::ws::{eventually, post_one};

/// Where Debian puts Chromium, or `VIGIL_TEST_CHROMIUM`.
pub fn chromium() -> String {
    std::env::var("VIGIL_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned())
}

#[tokio::test]
async fn a_browser_websocket_logs_a_posted_event() {
    let app = TestApp::spawn().await;
    let dir = std::env::temp_dir().join(format!("vigil-browser-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("ws.html");
    std::fs::write(
        &page,
        format!(
            r#"<!doctype html><script>
const ws = new WebSocket("ws://{}/ws");
ws.onmessage = (e) => console.log("WS:", e.data);
</script>"#,
            app.addr
        ),
    )
    .unwrap();

    let mut browser = Command::new(chromium())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "start {}: {error} (install Debian's chromium package; scripts/test.sh does)",
                chromium()
            )
        });
    let mut console = BufReader::new(browser.stderr.take().unwrap()).lines();

    let hub = app.hub.clone();
    eventually("the browser's websocket is connected", move || {
        hub.client_count() == 1
    })
    .await;
    let id = post_one(&app, event_json("browser-check")).await;
    let stored = app.get(&format!("/api/events/{id}")).await;
    let expected = format!("\"WS: {}\"", std::str::from_utf8(&stored.body).unwrap());

    let logged = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = console.next_line().await.unwrap() {
            if line.contains("CONSOLE") && line.contains("WS:") {
                return line;
            }
        }
        panic!("chromium exited before logging the event");
    })
    .await
    .expect("the browser logs the event");
    assert!(logged.contains(&expected), "{logged}\nexpected {expected}");

    browser.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    app.stop().await;
}
