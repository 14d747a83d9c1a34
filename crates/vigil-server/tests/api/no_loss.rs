//! No acknowledged event is ever lost or duplicated, under every fault the test proxy can make
//! while producers keep posting (single events and bulks) and WebSocket clients keep reading.
//!
//! Each scenario runs the same harness: MariaDB and Redis both behind a [`FaultProxy`], eight
//! single-event producers and two bulk producers posting without pause, two WebSocket clients
//! (one plain, one filtered), a warm-up, the fault for a few seconds, the heal, a recovery
//! period, then the checks:
//! - every request was answered (201, or 503 `store_unavailable`/`overloaded` with
//!   `Retry-After`) within [`ANSWER_BOUND`]: never a hang;
//! - the table holds exactly the acknowledged events, each under its acknowledged id, and none
//!   of the refused ones;
//! - ingest recovered by itself (acknowledgements after the heal);
//! - each WebSocket client received every acknowledged event it subscribed to, exactly once
//!   (backfill covers what the Redis channel lost).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use vigil_testkit::database::TestDatabase;
use vigil_testkit::proxy::FaultProxy;

use crate::helpers::{MARIADB, REDIS_URL, TestApp, all_rows, post_events_request, test_config};
use crate::ws::{Received, WsClient, id_of};

/// The longest any request may take to be answered, fault or not.
const ANSWER_BOUND: Duration = Duration::from_secs(30);
/// Single-event and bulk producers.
const SINGLE_PRODUCERS: usize = 8;
const BULK_PRODUCERS: usize = 2;
const BULK_EVENTS: usize = 20;
/// Phases of a scenario.
const WARM_UP: Duration = Duration::from_millis(700);
const FAULT: Duration = Duration::from_secs(3);
const RECOVERY: Duration = Duration::from_secs(2);
/// How long WebSocket clients get, after the producers stop, to receive everything.
const DELIVERY_BOUND: Duration = Duration::from_secs(60);

/// A server whose database and Redis both sit behind fault proxies.
struct Rig {
    app: TestApp,
    database_proxy: FaultProxy,
    redis_proxy: FaultProxy,
}

impl Rig {
    async fn start() -> Rig {
        let database = TestDatabase::create().await;
        let database_proxy = FaultProxy::start(MARIADB.parse::<SocketAddr>().unwrap())
            .await
            .unwrap();
        let redis_upstream: SocketAddr = REDIS_URL.trim_start_matches("redis://").parse().unwrap();
        let redis_proxy = FaultProxy::start(redis_upstream).await.unwrap();
        let prefix = format!("vigil:test:{}", uuid::Uuid::new_v4().simple());
        let database_url = format!("mysql://root@{}/{}", database_proxy.addr(), database.name());
        let redis_url = format!("redis://{}", redis_proxy.addr());
        let recent_key = format!("{prefix}:events:recent");
        let channel = format!("{prefix}:events:new");
        let config = test_config(
            &database_url,
            &[
                "--redis-url",
                &redis_url,
                "--redis-recent-key",
                &recent_key,
                "--redis-channel",
                &channel,
                // Small client queues: a backfill (thousands of events at once) must be paced
                // to them, or it would close healthy clients as slow consumers.
                "--ws-client-queue",
                "256",
            ],
        );
        let mut app = TestApp::spawn_on(database, config).await;
        app.redis_prefix = Some(prefix);
        Rig {
            app,
            database_proxy,
            redis_proxy,
        }
    }
}

/// What one request was answered.
#[derive(Debug)]
enum Answer {
    Acked(Vec<u64>),
    Refused,
}

/// One request: the sources of its events (unique per event), when it was answered, and how.
#[derive(Debug)]
struct Exchange {
    sources: Vec<String>,
    answered_at: Instant,
    answer: Answer,
}

/// Producers posting until told to stop.
struct Producers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Exchange>>>,
}

impl Producers {
    fn start(app: &TestApp) -> Producers {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..SINGLE_PRODUCERS + BULK_PRODUCERS)
            .map(|producer| {
                let events = if producer < SINGLE_PRODUCERS {
                    1
                } else {
                    BULK_EVENTS
                };
                tokio::spawn(produce(
                    app.client.clone(),
                    app.addr,
                    producer,
                    events,
                    Arc::clone(&stop),
                ))
            })
            .collect();
        Producers { stop, tasks }
    }

    async fn stop(self) -> Vec<Exchange> {
        self.stop.store(true, Ordering::Relaxed);
        let mut exchanges = Vec::new();
        for task in self.tasks {
            exchanges.extend(task.await.expect("a producer panicked"));
        }
        exchanges
    }
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

async fn produce(
    client: HttpClient,
    addr: SocketAddr,
    producer: usize,
    events: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Exchange> {
    let mut exchanges = Vec::new();
    let mut request_number = 0;
    while !stop.load(Ordering::Relaxed) {
        request_number += 1;
        let sources: Vec<String> = (0..events)
            .map(|k| format!("p{producer}-r{request_number}-e{k}"))
            .collect();
        let level = if producer.is_multiple_of(2) {
            "WARN"
        } else {
            "INFO"
        };
        let items: Vec<String> = sources
            .iter()
            .map(|source| {
                format!(r#"{{"source":"{source}","type":"GAS","level":"{level}","payload":{{"ppm":1}}}}"#)
            })
            .collect();
        let body = if events == 1 {
            items[0].clone()
        } else {
            format!("[{}]", items.join(","))
        };
        let request = post_events_request(addr, body);
        let answered = tokio::time::timeout(ANSWER_BOUND, async {
            let response = client.request(request).await.expect("the server answers");
            let status = response.status();
            let retry_after = response.headers().get("retry-after").cloned();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, retry_after, body)
        })
        .await;
        let (status, retry_after, body) =
            answered.unwrap_or_else(|_| panic!("a post hung for {ANSWER_BOUND:?}"));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let answer = match status.as_u16() {
            201 if events == 1 => Answer::Acked(vec![json["id"].as_u64().unwrap()]),
            201 => Answer::Acked(
                json["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|id| id.as_u64().unwrap())
                    .collect(),
            ),
            503 => {
                let code = json["error"].as_str().unwrap();
                assert!(
                    matches!(code, "store_unavailable" | "overloaded"),
                    "503 {json}"
                );
                assert!(retry_after.is_some(), "a 503 says when to retry");
                Answer::Refused
            }
            other => panic!("unexpected {other}: {json}"),
        };
        let refused = matches!(answer, Answer::Refused);
        exchanges.push(Exchange {
            sources,
            answered_at: Instant::now(),
            answer,
        });
        if refused {
            // A producer backs off a little, as Retry-After asks (shortened for the test).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    exchanges
}

/// A WebSocket client reading in its own task; its ids arrive on the channel.
struct Listener {
    ids: tokio::sync::mpsc::UnboundedReceiver<u64>,
    task: tokio::task::JoinHandle<()>,
    /// Only events at this level are sent to it (`None`: all).
    level: Option<&'static str>,
}

impl Listener {
    async fn connect(app: &TestApp, level: Option<&'static str>) -> Listener {
        let path = match level {
            Some(level) => format!("/ws?level={level}"),
            None => "/ws".to_owned(),
        };
        let mut client = WsClient::connect(app.addr, &path).await;
        let (sender, ids) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match client.next().await {
                    Received::Text(text) => {
                        if sender.send(id_of(&text)).is_err() {
                            return;
                        }
                    }
                    Received::Close(code, reason) => {
                        panic!("the server closed a listener: {code} {reason}")
                    }
                }
            }
        });
        Listener { ids, task, level }
    }

    /// Reads until every id in `expected` arrived; panics on a duplicate, an unexpected id,
    /// or a miss after [`DELIVERY_BOUND`].
    async fn expect_exactly(mut self, expected: &HashSet<u64>) {
        let deadline = tokio::time::Instant::now() + DELIVERY_BOUND;
        let mut received = HashSet::new();
        while received.len() < expected.len() {
            let id = tokio::time::timeout_at(deadline, self.ids.recv())
                .await
                .unwrap_or_else(|_| {
                    let missing: Vec<_> = expected.difference(&received).take(10).collect();
                    panic!(
                        "{} of {} events never reached the {:?} client, e.g. {missing:?}",
                        expected.len() - received.len(),
                        expected.len(),
                        self.level
                    )
                })
                .expect("the client is still connected");
            assert!(expected.contains(&id), "{id} was never acknowledged");
            assert!(received.insert(id), "{id} arrived twice");
        }
        self.task.abort();
    }
}

/// Runs a scenario: load, `fault` for [`FAULT`], `heal`, recovery, then every check.
async fn run_scenario(name: &str, fault: impl FnOnce(&Rig), heal: impl FnOnce(&Rig)) {
    let rig = Rig::start().await;
    let everything = Listener::connect(&rig.app, None).await;
    let warnings = Listener::connect(&rig.app, Some("WARN")).await;
    let producers = Producers::start(&rig.app);
    tokio::time::sleep(WARM_UP).await;
    fault(&rig);
    tokio::time::sleep(FAULT).await;
    heal(&rig);
    let healed_at = Instant::now();
    tokio::time::sleep(RECOVERY).await;
    let exchanges = producers.stop().await;

    let mut acked: HashMap<u64, String> = HashMap::new();
    let mut warn_ids = HashSet::new();
    let mut refused = HashSet::new();
    let mut acked_after_heal = 0;
    for exchange in &exchanges {
        match &exchange.answer {
            Answer::Acked(ids) => {
                assert_eq!(ids.len(), exchange.sources.len());
                for (id, source) in ids.iter().zip(&exchange.sources) {
                    assert!(
                        acked.insert(*id, source.clone()).is_none(),
                        "id {id} given twice"
                    );
                    // Even producers post WARN (see `produce`).
                    let producer: usize = source[1..source.find('-').unwrap()].parse().unwrap();
                    if producer.is_multiple_of(2) {
                        warn_ids.insert(*id);
                    }
                }
                if exchange.answered_at > healed_at {
                    acked_after_heal += 1;
                }
            }
            Answer::Refused => refused.extend(exchange.sources.iter().cloned()),
        }
    }
    assert!(acked_after_heal > 0, "{name}: ingest did not recover");

    let rows = all_rows(&rig.app.db().await).await;
    let stored: HashMap<u64, String> = rows.into_iter().map(|row| (row.id, row.source)).collect();
    let lost: Vec<_> = acked
        .keys()
        .filter(|id| !stored.contains_key(id))
        .take(10)
        .collect();
    assert!(
        lost.is_empty(),
        "{name}: acknowledged events lost: {lost:?}"
    );
    let refused_stored: Vec<_> = stored
        .values()
        .filter(|source| refused.contains(*source))
        .take(10)
        .collect();
    assert!(
        refused_stored.is_empty(),
        "{name}: refused events stored: {refused_stored:?}"
    );
    assert_eq!(
        stored, acked,
        "{name}: the table is exactly the acknowledged events"
    );

    let all_ids: HashSet<u64> = acked.keys().copied().collect();
    everything.expect_exactly(&all_ids).await;
    warnings.expect_exactly(&warn_ids).await;
    eprintln!(
        "{name}: {} events acknowledged ({} after the heal), {} refused, all delivered",
        acked.len(),
        acked_after_heal,
        refused.len()
    );
    rig.app.stop().await.drop_database().await;
}

#[tokio::test]
async fn database_cut() {
    run_scenario(
        "database cut",
        |rig| {
            rig.database_proxy.refuse_new(true);
            rig.database_proxy.cut_all();
        },
        |rig| rig.database_proxy.heal(),
    )
    .await;
}

#[tokio::test]
async fn database_blackholed() {
    run_scenario(
        "database blackholed",
        |rig| rig.database_proxy.blackhole(true),
        |rig| rig.database_proxy.heal(),
    )
    .await;
}

#[tokio::test]
async fn database_slow() {
    run_scenario(
        "database slow",
        |rig| rig.database_proxy.set_delay(Duration::from_millis(300)),
        |rig| rig.database_proxy.heal(),
    )
    .await;
}

#[tokio::test]
async fn database_cut_right_after_an_insert() {
    run_scenario(
        "database cut after an insert",
        |rig| rig.database_proxy.cut_reply_after(b"INSERT INTO events"),
        |rig| rig.database_proxy.heal(),
    )
    .await;
}

#[tokio::test]
async fn redis_cut() {
    run_scenario(
        "redis cut",
        |rig| {
            rig.redis_proxy.refuse_new(true);
            rig.redis_proxy.cut_all();
        },
        |rig| rig.redis_proxy.heal(),
    )
    .await;
}

#[tokio::test]
async fn redis_slow() {
    run_scenario(
        "redis slow",
        |rig| rig.redis_proxy.set_delay(Duration::from_millis(300)),
        |rig| rig.redis_proxy.heal(),
    )
    .await;
}
