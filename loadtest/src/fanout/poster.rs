//! The open-loop producer: POSTs events at a fixed rate over a pool of keep-alive HTTP/1
//! connections.
//!
//! Open loop means the schedule is the clock's, never the server's: POST `i` is due at
//! `start + i × bulk / rate`, and each is sent from its own task, so a slow response delays
//! nothing but itself (a closed loop would slow down exactly when the server does, and hide
//! it). HTTP/1 carries one request at a time per connection, so the pool opens connections as
//! requests overlap, up to its bound; a request that had to wait past its due time for a
//! connection (or for the measurer's own thread) is counted as a late send. Each event's
//! stamp is taken when its request is handed to a connection, so latency is measured from the
//! actual send, and late sends say how far the offered rate was from the asked one.
//!
//! The poster runs on its own thread and runtime ([`spawn`]), so reading a million frames a
//! second on the clients' thread cannot push the schedule back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{CONTENT_TYPE, HOST};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use super::client::new_latency_histogram;
use super::seqset::SeqSet;
use super::system::Target;
use super::workload::request_body;

/// A send this much after its due time counts as late: above the timer's 1 ms resolution.
pub const LATE_SEND_THRESHOLD: Duration = Duration::from_millis(2);

/// What one run posts, and where.
#[derive(Debug, Clone)]
pub struct PosterSettings {
    pub target: Target,
    /// Events per second.
    pub rate: f64,
    pub duration: Duration,
    /// Events per POST (a JSON array when above 1).
    pub bulk: u64,
    /// Most HTTP connections open at once (and so requests in flight).
    pub connections: usize,
    /// The run id stamped in every payload.
    pub run: u64,
    /// The measurer's time origin.
    pub started: Instant,
    /// How long answers to requests still in flight are awaited after the last send.
    pub answer_wait: Duration,
}

impl PosterSettings {
    /// POSTs in the run: the rate times the duration, in whole requests of `bulk` events.
    pub fn posts(&self) -> u64 {
        ((self.rate * self.duration.as_secs_f64()) / self.bulk as f64).ceil() as u64
    }

    /// Events in the run: sequence numbers are `0..events()`.
    pub fn events(&self) -> u64 {
        self.posts() * self.bulk
    }
}

/// What the poster did.
#[derive(Debug)]
pub struct PosterOutcome {
    pub requests: u64,
    pub events_posted: u64,
    /// Events in 201 answers.
    pub events_acked: u64,
    /// Events in any other answer, a failed request, or a request still unanswered.
    pub events_failed: u64,
    /// Requests by outcome: the status code, or what went wrong.
    pub outcomes: BTreeMap<String, u64>,
    pub late_sends: u64,
    pub max_lateness: Duration,
    /// Sequence numbers of the acknowledged events.
    pub acked: SeqSet,
    /// Due time → 201 read, µs, of acknowledged requests: from the schedule, not the actual
    /// send, so a request that waited for a connection counts its wait (open-loop latency).
    pub ack_latency: Histogram<u64>,
    pub connections_opened: u64,
    /// When the first and the last request were sent, µs since the measurer started.
    pub first_send_us: u64,
    pub last_send_us: u64,
}

impl PosterOutcome {
    fn new(events: u64) -> Self {
        Self {
            requests: 0,
            events_posted: 0,
            events_acked: 0,
            events_failed: 0,
            outcomes: BTreeMap::new(),
            late_sends: 0,
            max_lateness: Duration::ZERO,
            acked: SeqSet::new(events),
            ack_latency: new_latency_histogram(),
            connections_opened: 0,
            first_send_us: 0,
            last_send_us: 0,
        }
    }

    fn count(&mut self, outcome: String) {
        *self.outcomes.entry(outcome).or_insert(0) += 1;
    }
}

/// Runs the poster on a thread of its own; the outcome arrives on the returned channel.
pub fn spawn(settings: PosterSettings) -> std::io::Result<oneshot::Receiver<PosterOutcome>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done, outcome) = oneshot::channel();
    std::thread::Builder::new()
        .name("fanout-poster".to_owned())
        .spawn(move || {
            let result = runtime.block_on(run(settings));
            let _ = done.send(result);
        })?;
    Ok(outcome)
}

/// Posts the run's events on schedule, then waits (bounded) for the answers in flight.
pub async fn run(settings: PosterSettings) -> PosterOutcome {
    let posts = settings.posts();
    let state = Arc::new(Mutex::new(PosterOutcome::new(settings.events())));
    let pool = Arc::new(Pool {
        target: settings.target.clone(),
        idle: Mutex::new(Vec::new()),
        slots: Semaphore::new(settings.connections.max(1)),
    });
    let settings = Arc::new(settings);
    let interval = Duration::from_secs_f64(settings.bulk as f64 / settings.rate);
    let start = tokio::time::Instant::now();
    let mut requests = JoinSet::new();
    for post in 0..posts {
        let due = start + interval.mul_f64(post as f64);
        tokio::time::sleep_until(due).await;
        let seqs = post * settings.bulk..(post + 1) * settings.bulk;
        requests.spawn(post_one(
            pool.clone(),
            settings.clone(),
            state.clone(),
            seqs,
            due.into_std(),
        ));
        // Reap finished requests as we go so the set stays small.
        while requests.try_join_next().is_some() {}
    }
    let answered = tokio::time::timeout(settings.answer_wait, async {
        while requests.join_next().await.is_some() {}
    })
    .await;
    let mut outcome = std::mem::replace(
        &mut *state.lock().expect("poster state"),
        PosterOutcome::new(0),
    );
    if answered.is_err() {
        let unanswered = requests.len() as u64;
        requests.abort_all();
        // Requests never sent were not counted as posted; sent ones were. Either way their
        // events are not acked.
        outcome.events_failed += unanswered * settings.bulk;
        *outcome
            .outcomes
            .entry("no answer in time".to_owned())
            .or_insert(0) += unanswered;
    }
    outcome
}

/// Sends one POST and records its answer.
async fn post_one(
    pool: Arc<Pool>,
    settings: Arc<PosterSettings>,
    state: Arc<Mutex<PosterOutcome>>,
    seqs: std::ops::Range<u64>,
    due: Instant,
) {
    let Ok(_slot) = pool.slots.acquire().await else {
        return;
    };
    let events = seqs.end - seqs.start;
    let mut connection = match pool.connection().await {
        Ok((connection, opened)) => {
            if opened {
                state.lock().expect("poster state").connections_opened += 1;
            }
            connection
        }
        Err(error) => {
            let mut state = state.lock().expect("poster state");
            state.requests += 1;
            state.events_failed += events;
            state.count(format!("connect failed: {error}"));
            return;
        }
    };
    let sent = Instant::now();
    let sent_us = sent.duration_since(settings.started).as_micros() as u64;
    let body = request_body(seqs.clone(), sent_us, settings.run);
    let request = Request::post("/api/events")
        .header(HOST, settings.target.authority.as_str())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request");
    {
        let mut state = state.lock().expect("poster state");
        let lateness = sent.saturating_duration_since(due);
        if lateness > LATE_SEND_THRESHOLD {
            state.late_sends += 1;
        }
        state.max_lateness = state.max_lateness.max(lateness);
        if state.requests == 0 {
            state.first_send_us = sent_us;
        }
        state.last_send_us = state.last_send_us.max(sent_us);
        state.requests += 1;
        state.events_posted += events;
    }
    let answer = match connection.send_request(request).await {
        Ok(response) => {
            let status = response.status();
            // The body must be read for the connection to carry the next request.
            let read = response.into_body().collect().await.is_ok();
            Ok((status, read))
        }
        Err(error) => Err(error),
    };
    let mut state = state.lock().expect("poster state");
    match answer {
        Ok((status, read)) => {
            state.count(status.as_u16().to_string());
            if status == StatusCode::CREATED {
                let waited_us = due.elapsed().as_micros() as u64;
                state.ack_latency.saturating_record(waited_us.max(1));
                state.events_acked += events;
                for seq in seqs {
                    state.acked.insert(seq);
                }
            } else {
                state.events_failed += events;
            }
            if read {
                pool.give_back(connection);
            }
        }
        Err(error) => {
            state.events_failed += events;
            state.count(format!("request failed: {}", short_error(&error)));
        }
    }
}

/// A short, stable label for a hyper error (its kind, not its details).
fn short_error(error: &hyper::Error) -> &'static str {
    if error.is_canceled() {
        "canceled"
    } else if error.is_closed() || error.is_incomplete_message() {
        "connection closed"
    } else if error.is_timeout() {
        "timeout"
    } else {
        "other"
    }
}

/// Keep-alive HTTP/1 connections, opened on demand up to the number of slots.
struct Pool {
    target: Target,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    /// One per request in flight; bounds the connections.
    slots: Semaphore,
}

impl Pool {
    /// An idle connection ready for a request, or a new one (then `true`).
    async fn connection(&self) -> Result<(SendRequest<Full<Bytes>>, bool), String> {
        loop {
            let idle = self.idle.lock().expect("pool").pop();
            let Some(mut connection) = idle else {
                break;
            };
            if connection.ready().await.is_ok() {
                return Ok((connection, false));
            }
        }
        let stream = TcpStream::connect(self.target.addr)
            .await
            .map_err(|error| error.kind().to_string())?;
        stream
            .set_nodelay(true)
            .map_err(|error| error.kind().to_string())?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| short_error(&error).to_owned())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((sender, true))
    }

    fn give_back(&self, connection: SendRequest<Full<Bytes>>) {
        if !connection.is_closed() {
            self.idle.lock().expect("pool").push(connection);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(rate: f64, duration: Duration, bulk: u64) -> PosterSettings {
        PosterSettings {
            target: Target::parse("http://127.0.0.1:1").unwrap(),
            rate,
            duration,
            bulk,
            connections: 4,
            run: 1,
            started: Instant::now(),
            answer_wait: Duration::from_secs(1),
        }
    }

    #[test]
    fn runs_post_rate_times_duration_in_whole_requests() {
        let plain = settings(500.0, Duration::from_secs(10), 1);
        assert_eq!((plain.posts(), plain.events()), (5000, 5000));
        let bulk = settings(500.0, Duration::from_secs(10), 30);
        assert_eq!((bulk.posts(), bulk.events()), (167, 5010));
        let short = settings(3.0, Duration::from_millis(500), 1);
        assert_eq!(short.posts(), 2);
    }
}
