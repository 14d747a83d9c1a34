//! The fan-out measurer: how many events a Vigil server delivers to how many `/ws` clients (or
//! Server-Sent Events clients of `/api/events/stream`, with `--wire sse`), how late, whether
//! any is lost or doubled, and what the connections cost it.
//!
//! A fan-out run ([`run`] without `--idle`):
//! 1. opens the clients at a bounded concurrency and waits until all are up ([`client`]);
//! 2. posts events open-loop at a fixed rate from a thread of its own ([`poster`]); each
//!    event's payload carries its send time, its sequence number and the run's id
//!    ([`workload`]);
//! 3. each client reads frames with a hand-written parser ([`frame`], [`extract`]): no
//!    allocation and no JSON parse per frame, so one core reads about a million frames a
//!    second and the measurer is not the bottleneck it measures;
//! 4. after the last answer it drains until every expected delivery arrived or `--drain`
//!    passed, then closes the clients and merges what they saw ([`seqset`], [`report`]).
//!
//! An idle run (`--idle N`) opens N silent clients to weigh one connection in the server's RSS.
//!
//! The measurer only ever targets loopback addresses ([`system::Target`]).

pub mod client;
pub mod extract;
pub mod frame;
pub mod poster;
pub mod report;
pub mod seqset;
pub mod sse;
pub mod system;
pub mod workload;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use client::{ClientOutcome, ClientSettings, Shared, Wire};
use poster::PosterSettings;
use report::{FanoutReport, IdleReport};
use seqset::SeqSet;
use system::Target;
use workload::Filter;

/// How long opening all clients may take before the run gives up waiting for the rest.
const CONNECT_PHASE_LIMIT: Duration = Duration::from_secs(120);
/// How long closing the clients may take at the end.
const CLOSE_LIMIT: Duration = Duration::from_secs(15);
/// How often the connect and drain phases check their counters.
const POLL: Duration = Duration::from_millis(10);
/// Read buffer of an idle client: it only ever reads pings.
const IDLE_READ_BUFFER: usize = 4096;
/// File descriptors kept for everything but the clients (HTTP pool, runtime, stdio).
const SPARE_FILES: u64 = 64;

/// The `fanout` command line.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "fanout",
    about = "Measure Vigil's fan-out: latency, loss and duplicates of events posted at a fixed rate, seen by N /ws (or /api/events/stream) clients"
)]
pub struct Args {
    /// The server, as http://host:port; loopback addresses only. The poster posts here, and
    /// the clients connect here unless --client-host names other servers.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub host: String,
    /// Servers the clients connect to, in turn (repeat the flag; e.g. each instance behind
    /// the load balancer --host names, so that every instance has clients). Default: --host.
    #[arg(long = "client-host", value_name = "URL")]
    pub client_hosts: Vec<String>,
    /// Clients to open.
    #[arg(long, default_value_t = 1000)]
    pub clients: u64,
    /// How the clients receive events: ws (/ws) or sse (/api/events/stream).
    #[arg(long, value_enum, default_value_t = Wire::Ws)]
    pub wire: Wire,
    /// Filter query for /ws, e.g. 'type=GAS' or 'type=GAS,SMOKE&level=WARN'.
    #[arg(long)]
    pub filter: Option<String>,
    /// Events per second, posted open-loop.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// How long to post, e.g. 10s, 500ms, 1m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Events per POST (above 1: a JSON array).
    #[arg(long, default_value_t = 1)]
    pub bulk: u64,
    /// Most HTTP keep-alive connections (and so POSTs in flight) at once.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// After the last answer, how long to wait for deliveries still on their way.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Clients connecting at the same time.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Runtime threads for the clients (1: a current-thread runtime); the poster has its own.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Bytes each client reads at a time.
    #[arg(long, default_value_t = 64 * 1024)]
    pub read_buffer: usize,
    /// Reconnect clients the server closes during the run, resuming with since=<last id>.
    #[arg(long)]
    pub reconnect: bool,
    /// The server's process id, to report its RSS (VmRSS) before and after, and the CPU time
    /// it spent per 1,000 deliveries; repeat it for several instances (their sums).
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Instead of a fan-out run, open this many idle connections and weigh them in the
    /// server's RSS.
    #[arg(long, value_name = "N")]
    pub idle: Option<u64>,
    /// In --idle mode, how long to let the server settle once all are connected.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,
}

/// What a run reports.
#[derive(Debug, Clone)]
pub enum Report {
    Fanout(Box<FanoutReport>),
    Idle(IdleReport),
}

impl Report {
    /// The report as text, or as one line of JSON.
    pub fn render(&self, json: bool) -> String {
        match (self, json) {
            (Report::Fanout(report), true) => json_line(report),
            (Report::Idle(report), true) => json_line(report),
            (Report::Fanout(report), false) => report.to_string(),
            (Report::Idle(report), false) => report.to_string(),
        }
    }
}

fn json_line(report: &impl serde::Serialize) -> String {
    let mut line = serde_json::to_string(report).expect("reports serialise");
    line.push('\n');
    line
}

/// The runtime the clients run on: current-thread for one thread, else multi-thread.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// Runs what the arguments ask for; call inside [`runtime`].
pub async fn run(args: Args) -> anyhow::Result<Report> {
    let target = Target::parse(&args.host).map_err(anyhow::Error::msg)?;
    let clients = args.idle.unwrap_or(args.clients);
    let open_files = system::raise_open_files_limit().context("raise the open files limit")?;
    let needed = clients + args.connections as u64 + SPARE_FILES;
    if open_files < needed {
        bail!(
            "the open files limit is {open_files}, below the {needed} this run needs; \
             raise the hard limit (ulimit -Hn) or open fewer clients"
        );
    }
    match args.idle {
        Some(connections) => idle(&args, target, connections).await.map(Report::Idle),
        None => fanout(&args, target)
            .await
            .map(|report| Report::Fanout(Box::new(report))),
    }
}

/// A fan-out run.
async fn fanout(args: &Args, target: Target) -> anyhow::Result<FanoutReport> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number of events per second");
    }
    if args.bulk == 0 || args.duration.is_zero() {
        bail!("--bulk and --duration must be above zero");
    }
    let filter = match &args.filter {
        Some(query) => Filter::parse(query).map_err(anyhow::Error::msg)?,
        None => Filter::default(),
    };
    let started = Instant::now();
    let poster_settings = PosterSettings {
        target: target.clone(),
        rate: args.rate,
        duration: args.duration,
        bulk: args.bulk,
        connections: args.connections,
        run: run_id(),
        started,
        answer_wait: args.drain,
    };
    let events = poster_settings.events();
    let path = if filter.query.is_empty() {
        args.wire.route().to_owned()
    } else {
        format!("{}?{}", args.wire.route(), filter.query)
    };
    let client_settings = client_targets(args, &target)?
        .into_iter()
        .map(|target| {
            Arc::new(ClientSettings {
                target,
                wire: args.wire,
                path: path.clone(),
                read_buffer: args.read_buffer,
                run: poster_settings.run,
                started,
                seq_bound: events,
                reconnect: args.reconnect,
            })
        })
        .collect::<Vec<_>>();
    let rss_before = servers_rss(&args.server_pids)?;
    let shared = Arc::new(Shared::default());
    let clients = open_clients(args, &client_settings, &shared, args.clients).await;

    let cpu_before = system::process_cpu_time();
    let server_cpu_before = servers_cpu(&args.server_pids)?;
    let wall_before = Instant::now();
    let posted = poster::spawn(poster_settings).context("start the poster thread")?;
    let posted = posted.await.context("the poster thread failed")?;

    let matching = SeqSet::from_fn(events, |seq| filter.matches(seq));
    let expected = posted.acked.intersection(&matching);
    let connected = shared.connected.load(Ordering::Relaxed);
    let expected_total = expected.len() * connected;
    let drain_deadline = Instant::now() + args.drain;
    while shared.delivered.load(Ordering::Relaxed) < expected_total
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(POLL).await;
    }
    let wall = wall_before.elapsed();
    let cpu = system::process_cpu_time().saturating_sub(cpu_before);
    let server_cpu_s = servers_cpu(&args.server_pids)?
        .zip(server_cpu_before)
        .map(|(after, before)| after.saturating_sub(before).as_secs_f64());
    let rss_after = servers_rss(&args.server_pids)?;

    let outcomes = close_clients(&shared, clients).await;
    let deliveries = report::tally(&outcomes, &expected);
    let delivery_window_us = deliveries
        .last_delivery_us
        .saturating_sub(posted.first_send_us)
        .max(1);
    let server_cpu_ms_per_1000_deliveries = server_cpu_s
        .filter(|_| deliveries.delivered > 0)
        .map(|cpu| cpu * 1e6 / deliveries.delivered as f64);
    Ok(FanoutReport {
        host: args.host.clone(),
        client_hosts: args.client_hosts.clone(),
        wire: args.wire,
        filter: args.filter.clone(),
        clients: args.clients,
        rate: args.rate,
        duration_s: args.duration.as_secs_f64(),
        bulk: args.bulk,
        threads: args.threads,
        requests: posted.requests,
        events_posted: posted.events_posted,
        events_acked: posted.events_acked,
        events_failed: posted.events_failed,
        post_outcomes: posted.outcomes,
        late_sends: posted.late_sends,
        max_send_lateness_ms: posted.max_lateness.as_secs_f64() * 1000.0,
        http_connections: posted.connections_opened,
        ack_latency_ms: report::LatencySummary::from_histogram(&posted.ack_latency),
        matching_events: expected.len(),
        deliveries_per_s: deliveries.delivered as f64 * 1e6 / delivery_window_us as f64,
        deliveries,
        cpu_s: cpu.as_secs_f64(),
        cpu_percent: 100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        wall_s: wall.as_secs_f64(),
        server_cpu_ms_per_1000_deliveries,
        server_cpu_s,
        server_rss_kib_before: rss_before,
        server_rss_kib_after: rss_after,
    })
}

/// An idle run: `connections` clients that only answer pings.
async fn idle(args: &Args, target: Target, connections: u64) -> anyhow::Result<IdleReport> {
    let (run, started) = (run_id(), Instant::now());
    let settings = client_targets(args, &target)?
        .into_iter()
        .map(|target| {
            Arc::new(ClientSettings {
                target,
                wire: args.wire,
                path: args.wire.route().to_owned(),
                read_buffer: IDLE_READ_BUFFER,
                run,
                started,
                seq_bound: 0,
                reconnect: false,
            })
        })
        .collect::<Vec<_>>();
    let rss_before = servers_rss(&args.server_pids)?;
    let shared = Arc::new(Shared::default());
    let connecting = Instant::now();
    let clients = open_clients(args, &settings, &shared, connections).await;
    let connect_s = connecting.elapsed().as_secs_f64();
    tokio::time::sleep(args.settle).await;
    let rss_after = servers_rss(&args.server_pids)?;
    let outcomes = close_clients(&shared, clients).await;
    let tally = report::tally(&outcomes, &SeqSet::new(0));
    Ok(IdleReport {
        host: args.host.clone(),
        connections,
        connected: tally.clients_connected,
        connect_failures: tally.connect_failures,
        connect_error: tally.connect_error,
        connect_s,
        settle_s: args.settle.as_secs_f64(),
        server_rss_kib_before: rss_before,
        server_rss_kib_after: rss_after,
        kib_per_connection: IdleReport::per_connection(
            rss_before,
            rss_after,
            tally.clients_connected,
        ),
        pings_answered: tally.pings_answered,
        closes: tally.closes,
    })
}

/// Where the clients connect: each --client-host, or --host when none is given.
fn client_targets(args: &Args, host: &Target) -> anyhow::Result<Vec<Target>> {
    if args.client_hosts.is_empty() {
        return Ok(vec![host.clone()]);
    }
    args.client_hosts
        .iter()
        .map(|url| Target::parse(url).map_err(anyhow::Error::msg))
        .collect()
}

/// Spawns `count` clients, spread in turn over `settings` (one per server), and waits until
/// each is connected or has given up.
async fn open_clients(
    args: &Args,
    settings: &[Arc<ClientSettings>],
    shared: &Arc<Shared>,
    count: u64,
) -> Vec<JoinHandle<ClientOutcome>> {
    let slots = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let clients: Vec<_> = (0..count)
        .zip(settings.iter().cycle())
        .map(|(index, settings)| {
            tokio::spawn(client::run(
                index,
                settings.clone(),
                shared.clone(),
                slots.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + CONNECT_PHASE_LIMIT;
    while shared.connected.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) < count
        && Instant::now() < deadline
    {
        tokio::time::sleep(POLL).await;
    }
    clients
}

/// Stops the clients and collects their outcomes; a client that does not finish in time is
/// left out (and counted as not connected by omission).
async fn close_clients(
    shared: &Shared,
    clients: Vec<JoinHandle<ClientOutcome>>,
) -> Vec<ClientOutcome> {
    shared.stop.cancel();
    let deadline = tokio::time::Instant::now() + CLOSE_LIMIT;
    let mut outcomes = Vec::with_capacity(clients.len());
    for client in clients {
        let abort = client.abort_handle();
        match tokio::time::timeout_at(deadline, client).await {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            Ok(Err(_)) => {}
            Err(_) => abort.abort(),
        }
    }
    outcomes
}

/// The CPU time the server processes have spent, summed (None without any).
fn servers_cpu(pids: &[u32]) -> anyhow::Result<Option<Duration>> {
    read_servers(pids, "CPU time", system::cpu_time_of)
}

/// The server processes' resident memory in KiB, summed (None without any).
fn servers_rss(pids: &[u32]) -> anyhow::Result<Option<u64>> {
    read_servers(pids, "RSS", system::rss_kib)
}

/// `read` of every process in `pids`, summed; None when `pids` is empty.
fn read_servers<T: std::iter::Sum<T>>(
    pids: &[u32],
    what: &str,
    read: impl Fn(u32) -> std::io::Result<T>,
) -> anyhow::Result<Option<T>> {
    if pids.is_empty() {
        return Ok(None);
    }
    pids.iter()
        .map(|&pid| read(pid).with_context(|| format!("read the {what} of process {pid}")))
        .sum::<anyhow::Result<T>>()
        .map(Some)
}

/// A run id that differs between runs, below 2^53 so that JSON readers keep it exact.
fn run_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (u64::from(std::process::id()) << 32)) & ((1 << 53) - 1)
}

/// Parses `10s`, `500ms`, `2m`, or a bare number of seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is not a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn durations_take_common_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["", "s", "10h", "-1s", "ten"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_match_the_readme() {
        let args = Args::parse_from(["fanout"]);
        assert_eq!(args.host, "http://127.0.0.1:3000");
        assert_eq!(args.clients, 1000);
        assert_eq!(args.rate, 500.0);
        assert_eq!(args.duration, Duration::from_secs(10));
        assert_eq!(args.drain, Duration::from_secs(3));
        assert_eq!((args.bulk, args.threads), (1, 1));
        assert_eq!(args.idle, None);
        let idle = Args::parse_from(["fanout", "--idle", "10000", "--server-pid", "42"]);
        assert_eq!(
            (idle.idle, idle.server_pids.as_slice()),
            (Some(10_000), &[42][..])
        );
    }

    #[test]
    fn clients_spread_over_every_client_host_in_turn() {
        let args = Args::parse_from(["fanout", "--host", "http://127.0.0.1:3980"]);
        let host = Target::parse(&args.host).unwrap();
        let only = client_targets(&args, &host).unwrap();
        assert_eq!(
            only.iter().map(|t| t.addr.port()).collect::<Vec<_>>(),
            [3980]
        );

        let args = Args::parse_from([
            "fanout",
            "--host",
            "http://127.0.0.1:3980",
            "--client-host",
            "http://127.0.0.1:3971",
            "--client-host",
            "http://127.0.0.1:3972",
            "--server-pid",
            "7",
            "--server-pid",
            "8",
        ]);
        let targets = client_targets(&args, &host).unwrap();
        assert_eq!(
            targets.iter().map(|t| t.addr.port()).collect::<Vec<_>>(),
            [3971, 3972]
        );
        assert_eq!(args.server_pids, [7, 8]);
        let refused = Args::parse_from(["fanout", "--client-host", "http://192.0.2.1:80"]);
        assert!(client_targets(&refused, &host).is_err());
    }

    #[test]
    fn several_servers_are_read_as_their_sum() {
        let me = std::process::id();
        let one = servers_rss(&[me]).unwrap().unwrap();
        let twice = read_servers(&[me, me], "RSS", |_| Ok::<u64, std::io::Error>(one)).unwrap();
        assert_eq!(twice, Some(2 * one));
        assert_eq!(servers_cpu(&[]).unwrap(), None);
        assert!(servers_cpu(&[me]).unwrap().is_some());
    }

    #[test]
    fn run_ids_fit_in_a_json_number() {
        assert!(run_id() < 1 << 53);
    }
}
