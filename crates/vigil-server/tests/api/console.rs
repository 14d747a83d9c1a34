//! The console (`GET /`) in a real browser: headless Chromium (Debian's package, as in
//! `browser.rs`) opens it, and the test drives and reads the page through the Chrome DevTools
//! Protocol (its WebSocket, with tokio-tungstenite): what rows the table holds, the connection
//! state, the filter form and the URL. No part of the page is stubbed: it talks to a real
//! server, and the events are posted through the API.
//!
//! With `VIGIL_CONSOLE_SCREENSHOT=<path>` set, the first test also saves a screenshot of the
//! console with live events of every level there (`scripts/console-screenshot.sh` makes the
//! README's).

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::browser::chromium;
use crate::helpers::{ExtraInstance, Mode, TestApp, event_json, test_config};
use crate::ws::{event, post_one};

/// How long the page gets to show what a test waits for.
const PAGE_WAIT: Duration = Duration::from_secs(30);

type DevTools = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A headless Chromium with one page open, driven over the DevTools protocol.
struct Browser {
    process: Child,
    profile: std::path::PathBuf,
    devtools: DevTools,
    next_id: u64,
    /// What the page logged to its console (CSP violations would be here).
    console: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    async fn open(url: &str) -> Browser {
        let profile = std::env::temp_dir().join(format!("vigil-console-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&profile).unwrap();
        let mut process = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--enable-logging=stderr",
                "--v=0",
                "--remote-debugging-port=0",
            ])
            .arg(format!(
                "--user-data-dir={}",
                profile.join("data").display()
            ))
            .arg(url)
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
        // Chromium names its DevTools port on stderr; the rest of stderr is kept (drained, so
        // the browser never blocks on a full pipe).
        let mut lines = BufReader::new(process.stderr.take().unwrap()).lines();
        let console = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = tokio::sync::oneshot::channel::<u16>();
        let kept = Arc::clone(&console);
        tokio::spawn(async move {
            let mut port_tx = Some(port_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("DevTools listening on ws://127.0.0.1:").nth(1)
                    && let Some(tx) = port_tx.take()
                {
                    let port = rest.split('/').next().unwrap().parse().unwrap();
                    let _ = tx.send(port);
                }
                if line.contains("CONSOLE") || line.contains("Content Security Policy") {
                    kept.lock().unwrap().push(line);
                }
            }
        });
        let port = tokio::time::timeout(PAGE_WAIT, port_rx)
            .await
            .expect("chromium names its DevTools port")
            .unwrap();
        let page = tokio::time::timeout(PAGE_WAIT, async {
            loop {
                let targets = http_get_json(port, "/json/list").await;
                if let Some(page) = targets
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|target| target["type"] == "page")
                {
                    break page["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the page is listed");
        let (devtools, _) = tokio_tungstenite::connect_async(page.as_str())
            .await
            .expect("connect to the page's DevTools socket");
        Browser {
            process,
            profile,
            devtools,
            next_id: 1,
            console,
        }
    }

    /// Calls a DevTools method and returns its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({ "id": id, "method": method, "params": params });
        self.devtools
            .send(Message::text(request.to_string()))
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(PAGE_WAIT, self.devtools.next())
                .await
                .expect("DevTools answers")
                .expect("the DevTools socket is open")
                .unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Value = serde_json::from_str(&text).unwrap();
            if answer["id"] == id {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    async fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        // Until the page has loaded, its elements are not there: that is "not yet".
        let guarded = format!(
            "(() => {{ try {{ return ({expression}) === true; }} catch {{ return false; }} }})()"
        );
        while tokio::time::Instant::now() < deadline {
            if self.eval(&guarded).await == Value::Bool(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let state = self
            .eval("document.getElementById('state').textContent")
            .await;
        panic!("the page never showed {what} (state: {state})");
    }

    /// Waits until the connection state the page shows is `state`.
    async fn wait_for_state(&mut self, state: &str) {
        let expression = format!("document.getElementById('state').dataset.state === '{state}'");
        self.wait_for(&format!("the {state} state"), &expression)
            .await;
    }

    /// The event ids in the table, top to bottom.
    async fn rows(&mut self) -> Vec<u64> {
        let ids = self
            .eval(
                "[...document.querySelectorAll('#events tr')].map((row) => Number(row.dataset.id))",
            )
            .await;
        ids.as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_u64().unwrap())
            .collect()
    }

    /// Waits until the table holds exactly `ids` (in any order) and no id twice.
    async fn wait_for_rows(&mut self, ids: &[u64]) {
        let wanted: HashSet<u64> = ids.iter().copied().collect();
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            let rows = self.rows().await;
            let shown: HashSet<u64> = rows.iter().copied().collect();
            assert_eq!(shown.len(), rows.len(), "an event is shown twice: {rows:?}");
            if shown == wanted {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the table shows {rows:?}, expected {ids:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn state(&mut self) -> String {
        self.eval("document.getElementById('state').dataset.state")
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn screenshot(&mut self, path: &str) {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = decode_base64(shot["data"].as_str().unwrap());
        std::fs::write(path, png).unwrap();
    }

    /// Asserts the page broke no rule of its Content-Security-Policy and threw nothing.
    fn assert_clean_console(&self) {
        let console = self.console.lock().unwrap();
        let problems: Vec<&String> = console
            .iter()
            .filter(|line| {
                line.contains("Content Security Policy")
                    || line.contains("Refused to")
                    || line.contains("Uncaught")
            })
            .collect();
        assert!(problems.is_empty(), "{problems:#?}");
    }

    async fn close(mut self) {
        let _ = self.process.kill().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `GET` on Chromium's DevTools HTTP endpoint.
async fn http_get_json(port: u16, path: &str) -> Value {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://127.0.0.1:{port}{path}").parse().unwrap();
    let response = client.get(uri).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

/// Standard base64 (the screenshot's PNG).
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |byte: u8| -> u32 {
        match byte {
            b'A'..=b'Z' => u32::from(byte - b'A'),
            b'a'..=b'z' => u32::from(byte - b'a') + 26,
            b'0'..=b'9' => u32::from(byte - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {byte}"),
        }
    };
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |bits, (i, &b)| bits | (value(b) << (18 - 6 * i)));
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[tokio::test]
async fn the_console_shows_the_newest_events_then_live_ones_filters_and_pauses() {
    let app = TestApp::spawn_in(Mode::Embedded, &[]).await;
    let mut ids = Vec::new();
    for (n, level) in ["INFO", "WARN", "CRITICAL"].into_iter().enumerate() {
        ids.push(post_one(&app, event(&format!("site-{n}"), "GAS", level)).await);
    }

    let page = app.get("/").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-security-policy").is_some());

    let mut browser = Browser::open(&app.url("/")).await;
    browser.wait_for_state("live").await;
    browser.wait_for_rows(&ids).await;
    // Newest on top.
    assert_eq!(browser.rows().await[0], ids[2]);

    // A posted event appears, on top, counted under its level.
    let live = post_one(&app, event("site-live", "SMOKE", "ERROR")).await;
    ids.push(live);
    browser.wait_for_rows(&ids).await;
    assert_eq!(browser.rows().await[0], live);
    let counts = browser
        .eval("Object.fromEntries([...document.querySelectorAll('#counters li')].map((li) => [li.dataset.level, li.querySelector('.count').textContent]))")
        .await;
    assert_eq!(
        counts,
        json!({"INFO": "1", "WARN": "1", "ERROR": "1", "CRITICAL": "1"})
    );

    if let Ok(path) = std::env::var("VIGIL_CONSOLE_SCREENSHOT") {
        // A site's minute: a stream of events of every level, some of them bursts.
        for round in 0..90u32 {
            let level = match round % 11 {
                0 => "CRITICAL",
                3 | 7 => "ERROR",
                1 | 5 | 9 => "WARN",
                _ => "INFO",
            };
            let kind = ["GAS", "SMOKE", "DOOR", "TEMP"][(round % 4) as usize];
            let body = format!(
                r#"{{"source":"gateway-{}/sensor-{}","type":"{kind}","level":"{level}","payload":{{"ppm":{},"zone":"B{}"}}}}"#,
                round % 3,
                round % 17,
                100 + round * 7 % 400,
                round % 5
            );
            for _ in 0..(1 + round % 4) {
                post_one(&app, body.clone()).await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        browser.screenshot(&path).await;
        browser.close().await;
        app.stop().await;
        return;
    }

    // A filter hides what it should, and lands in the URL (bookmarkable).
    browser
        .eval("document.querySelector('#filters input[name=type]').value = 'GAS'; document.getElementById('filters').requestSubmit(); true")
        .await;
    browser
        .wait_for("the filtered URL", "location.search === '?type=GAS'")
        .await;
    browser.wait_for_rows(&ids[..3]).await;
    let smoke = post_one(&app, event("site-live", "SMOKE", "CRITICAL")).await;
    let gas = post_one(&app, event("site-live", "GAS", "INFO")).await;
    ids.extend([smoke, gas]);
    browser.wait_for_rows(&[ids[0], ids[1], ids[2], gas]).await;
    // The same filter from a shared link.
    browser
        .call(
            "Page.navigate",
            json!({ "url": app.url("/?level=CRITICAL,ERROR") }),
        )
        .await;
    browser.wait_for_state("live").await;
    browser.wait_for_rows(&[ids[2], live, smoke]).await;
    assert_eq!(
        browser
            .eval("[...document.querySelectorAll('input[name=level]:checked')].map((box) => box.value).join()")
            .await,
        "ERROR,CRITICAL"
    );

    // Pause, miss events, resume: each is shown once, and the page says they were replayed.
    browser
        .eval("document.getElementById('pause').click(); true")
        .await;
    assert_eq!(browser.state().await, "paused");
    let missed = [
        post_one(&app, event("site-paused", "GAS", "CRITICAL")).await,
        post_one(&app, event("site-paused", "GAS", "ERROR")).await,
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        browser.rows().await.len(),
        3,
        "nothing arrives while paused"
    );
    browser
        .eval("document.getElementById('pause').click(); true")
        .await;
    browser
        .wait_for_rows(&[ids[2], live, smoke, missed[0], missed[1]])
        .await;
    browser
        .wait_for(
            "the replay notice",
            "document.getElementById('notice').textContent.includes('2 missed events replayed')",
        )
        .await;
    browser.assert_clean_console();

    // The policy is enforced, not only sent: an injected inline script is refused (and that
    // is what assert_clean_console would have seen).
    browser
        .eval("const s = document.createElement('script'); s.textContent = 'window.injected = true'; document.body.append(s); true")
        .await;
    assert_eq!(browser.eval("window.injected === undefined").await, true);
    let deadline = tokio::time::Instant::now() + PAGE_WAIT;
    while !browser
        .console
        .lock()
        .unwrap()
        .iter()
        .any(|line| line.contains("Content Security Policy"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the browser reports the refused script"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.close().await;
    app.stop().await;
}

#[tokio::test]
async fn the_console_survives_a_server_restart_and_shows_every_event_posted_meanwhile_once() {
    let app = TestApp::spawn_in(Mode::MySql, &[]).await;
    let addr = app.addr;
    let url = app.database.url().to_owned();
    // Another instance on the same database, started later (its id block is above the
    // first's): it takes the posts while the console's server is down.
    let other = ExtraInstance::start(&url).await;
    let mut ids = vec![
        post_one(&app, event_json("before-1")).await,
        post_one(&app, event_json("before-2")).await,
    ];

    let mut browser = Browser::open(&app.url("/")).await;
    browser.wait_for_state("live").await;
    browser.wait_for_rows(&ids).await;
    ids.push(post_one(&app, event_json("live-1")).await);
    browser.wait_for_rows(&ids).await;

    let store = app.stop().await;
    browser.wait_for_state("reconnecting").await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    for n in 0..5 {
        let request =
            crate::helpers::post_events_request(other.addr, event_json(&format!("away-{n}")));
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 201);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: Value = serde_json::from_slice(&body).unwrap();
        ids.push(json["id"].as_u64().unwrap());
    }

    // The console's server comes back on the same address.
    let mut config = test_config(&url, &[]);
    config.http.addr = addr;
    let app = TestApp::spawn_on(store, config).await;
    browser.wait_for_rows(&ids).await;
    browser
        .wait_for(
            "the replay notice",
            "document.getElementById('notice').textContent.includes('5 missed events replayed')",
        )
        .await;
    ids.push(post_one(&app, event_json("after-restart")).await);
    browser.wait_for_rows(&ids).await;
    assert_eq!(browser.state().await, "live");
    browser.assert_clean_console();
    browser.close().await;
    other.stop().await;
    app.stop().await.drop_database().await;
}

#[tokio::test]
async fn with_read_tokens_the_console_asks_for_one_and_never_puts_it_in_a_url() {
    const TOKEN: &str = "console-reader-0123456789";
    let app = TestApp::spawn_with(&["--read-tokens", TOKEN]).await;
    let first = post_one(&app, event("site", "GAS", "WARN")).await;

    let mut browser = Browser::open(&app.url("/")).await;
    browser
        .wait_for(
            "the token form",
            "document.getElementById('state').dataset.state === 'token' && !document.getElementById('token-form').hidden",
        )
        .await;
    assert!(browser.rows().await.is_empty());
    browser
        .eval(&format!(
            "document.getElementById('token').value = '{TOKEN}'; document.getElementById('token-form').requestSubmit(); true"
        ))
        .await;
    browser.wait_for_state("live").await;
    browser.wait_for_rows(&[first]).await;
    // Live over /ws, which needs the token: the page sent it as the subprotocol.
    let live = post_one(&app, event("site", "SMOKE", "CRITICAL")).await;
    browser.wait_for_rows(&[first, live]).await;
    let urls = browser
        .eval("performance.getEntries().map((entry) => entry.name).join(' ') + ' ' + location.href")
        .await;
    assert!(
        !urls.as_str().unwrap().contains(TOKEN),
        "the token is in a URL: {urls}"
    );
    // The keyboard pauses and resumes.
    browser
        .eval("document.body.dispatchEvent(new KeyboardEvent('keydown', { key: 'p', bubbles: true })); true")
        .await;
    assert_eq!(browser.state().await, "paused");
    browser
        .eval("document.body.dispatchEvent(new KeyboardEvent('keydown', { key: 'p', bubbles: true })); true")
        .await;
    browser.wait_for_state("live").await;
    browser.assert_clean_console();
    browser.close().await;
    app.stop().await;
}
