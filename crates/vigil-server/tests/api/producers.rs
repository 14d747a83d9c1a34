//! Producers for the fault tests: single-event and bulk posters that post without pause to one
//! or more instances until told to stop, recording every answer, and the check every fault
//! test ends with: the table holds exactly what was acknowledged.
//!
//! Each event's source is unique (`p<producer>-r<request>-e<event>`), so a row in the table
//! names the request it came from. A request is answered 201 (acknowledged: its rows must be
//! in the table under the ids it was told), 503 `store_unavailable`/`overloaded` with
//! `Retry-After` (refused: none of its rows may be), or 504 `outcome_unknown` (its rows may or
//! may not be, all or none). Anything else, or an answer slower than the producers' bound,
//! fails the test at once.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::helpers::post_events_request;

/// How a request was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 201 with these ids, in the order of the request's events.
    Acked(Vec<u64>),
    /// 503: certainly not stored.
    Refused,
    /// 504 `outcome_unknown`: stored or not, all or nothing.
    Unknown,
}

/// One request: the sources of its events, when it was sent and answered, and how.
#[derive(Debug)]
pub struct Exchange {
    pub sources: Vec<String>,
    /// Which instance it went to (index into the producers' addresses).
    pub instance: usize,
    pub sent_at: Instant,
    pub answered_at: Instant,
    pub answer: Answer,
}

impl Exchange {
    pub fn latency(&self) -> Duration {
        self.answered_at - self.sent_at
    }
}

/// What the producers post.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Producers posting one event per request.
    pub single: usize,
    /// Producers posting `bulk_events` events per request.
    pub bulk: usize,
    pub bulk_events: usize,
    /// An answer slower than this fails the test.
    pub answer_bound: Duration,
    /// Pause after a refusal (as `Retry-After` asks, shortened for a test).
    pub backoff: Duration,
}

/// Producers posting until told to stop.
pub struct Producers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Exchange>>>,
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

impl Producers {
    /// Starts `load`'s producers, spread round-robin over `instances`.
    pub fn start(instances: &[SocketAddr], load: Load) -> Producers {
        assert!(!instances.is_empty());
        let client: HttpClient =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..load.single + load.bulk)
            .map(|producer| {
                let events = if producer < load.single {
                    1
                } else {
                    load.bulk_events
                };
                let instance = producer % instances.len();
                tokio::spawn(produce(
                    client.clone(),
                    (instance, instances[instance]),
                    producer,
                    events,
                    load,
                    Arc::clone(&stop),
                ))
            })
            .collect();
        Producers { stop, tasks }
    }

    /// Stops posting; every exchange of every producer.
    pub async fn stop(self) -> Vec<Exchange> {
        self.stop.store(true, Ordering::Relaxed);
        let mut exchanges = Vec::new();
        for task in self.tasks {
            exchanges.extend(task.await.expect("a producer panicked"));
        }
        exchanges
    }
}

/// Even producers post WARN, odd ones INFO.
pub fn level_of_producer(producer: usize) -> &'static str {
    if producer.is_multiple_of(2) {
        "WARN"
    } else {
        "INFO"
    }
}

/// The producer number in a source `p<producer>-…`.
pub fn producer_of(source: &str) -> usize {
    source[1..source.find('-').expect("a producer source")]
        .parse()
        .expect("a producer number")
}

async fn produce(
    client: HttpClient,
    (instance, addr): (usize, SocketAddr),
    producer: usize,
    events: usize,
    load: Load,
    stop: Arc<AtomicBool>,
) -> Vec<Exchange> {
    let mut exchanges = Vec::new();
    let mut request_number = 0;
    let level = level_of_producer(producer);
    while !stop.load(Ordering::Relaxed) {
        request_number += 1;
        let sources: Vec<String> = (0..events)
            .map(|k| format!("p{producer}-r{request_number}-e{k}"))
            .collect();
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
        let sent_at = Instant::now();
        let answered = tokio::time::timeout(load.answer_bound, async {
            let response = client.request(request).await.expect("the server answers");
            let status = response.status();
            let retry_after = response.headers().get("retry-after").cloned();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, retry_after, body)
        })
        .await;
        let (status, retry_after, body) = answered
            .unwrap_or_else(|_| panic!("a post went unanswered for {:?}", load.answer_bound));
        let answered_at = Instant::now();
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
            504 => {
                assert_eq!(json["error"], "outcome_unknown", "504 {json}");
                Answer::Unknown
            }
            other => panic!("unexpected {other}: {json}"),
        };
        let acked = matches!(answer, Answer::Acked(_));
        exchanges.push(Exchange {
            sources,
            instance,
            sent_at,
            answered_at,
            answer,
        });
        if !acked {
            tokio::time::sleep(load.backoff).await;
        }
    }
    exchanges
}

/// What the producers were told, checked against the table.
#[derive(Debug, Default)]
pub struct Tally {
    /// Every acknowledged id with its event's source.
    pub acked: HashMap<u64, String>,
    /// Requests answered 503.
    pub refused_requests: usize,
    /// Requests answered 504.
    pub unknown_requests: usize,
    /// Of the 504 requests, those whose events turned out stored.
    pub unknown_stored: usize,
    /// The slowest answer.
    pub slowest: Duration,
}

/// Checks that `stored` (id → source, read from the database) is exactly what the producers
/// were told: every acknowledged event under its id, no refused event, and each request
/// answered 504 either wholly stored or not at all; no source twice. Returns the tally.
pub fn check_table(name: &str, exchanges: &[Exchange], stored: &[(u64, String)]) -> Tally {
    let mut tally = Tally::default();
    let mut refused = HashSet::new();
    let mut unknown: Vec<&Exchange> = Vec::new();
    for exchange in exchanges {
        tally.slowest = tally.slowest.max(exchange.latency());
        match &exchange.answer {
            Answer::Acked(ids) => {
                assert_eq!(ids.len(), exchange.sources.len());
                for (id, source) in ids.iter().zip(&exchange.sources) {
                    assert!(
                        tally.acked.insert(*id, source.clone()).is_none(),
                        "{name}: id {id} given twice"
                    );
                }
            }
            Answer::Refused => {
                tally.refused_requests += 1;
                refused.extend(exchange.sources.iter().map(String::as_str));
            }
            Answer::Unknown => {
                tally.unknown_requests += 1;
                unknown.push(exchange);
            }
        }
    }

    let mut by_source: HashMap<&str, u64> = HashMap::new();
    for (id, source) in stored {
        assert!(
            by_source.insert(source, *id).is_none(),
            "{name}: {source} stored twice"
        );
        assert!(
            !refused.contains(source.as_str()),
            "{name}: {source} was refused with 503 and is stored"
        );
    }
    let lost: Vec<_> = tally
        .acked
        .iter()
        .filter(|(id, source)| by_source.get(source.as_str()) != Some(id))
        .take(10)
        .collect();
    assert!(
        lost.is_empty(),
        "{name}: acknowledged events missing or under another id: {lost:?}"
    );
    for exchange in &unknown {
        let present = exchange
            .sources
            .iter()
            .filter(|source| by_source.contains_key(source.as_str()))
            .count();
        assert!(
            present == 0 || present == exchange.sources.len(),
            "{name}: a request answered 504 is partly stored ({present} of {})",
            exchange.sources.len()
        );
        tally.unknown_stored += usize::from(present > 0);
    }
    let accounted = tally.acked.len()
        + unknown
            .iter()
            .filter(|exchange| by_source.contains_key(exchange.sources[0].as_str()))
            .map(|exchange| exchange.sources.len())
            .sum::<usize>();
    assert_eq!(
        stored.len(),
        accounted,
        "{name}: the table holds events nobody was told about"
    );
    tally
}

/// Prints one failover measurement as a line `scripts/bench-failover.sh` collects into
/// BENCHMARKS.md: `HA {"scenario":…,…}`.
pub fn report_failover(scenario: &str, tally: &Tally, back_after: Duration) {
    let line = serde_json::json!({
        "scenario": scenario,
        "acknowledged_events": tally.acked.len(),
        "refused_requests": tally.refused_requests,
        "unknown_requests": tally.unknown_requests,
        "unknown_stored": tally.unknown_stored,
        "slowest_answer_s": tally.slowest.as_secs_f64(),
        "first_201_after_s": back_after.as_secs_f64(),
    });
    println!("HA {line}");
}
