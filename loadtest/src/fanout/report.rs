//! What a run found, for people (text) and for scripts (`--json`).
//!
//! [`tally`] merges the clients' outcomes: their histograms into one, their received sets
//! against the events they should have received (acknowledged and matching the filter) into
//! missing and unexpected counts. Expected deliveries count connected clients only; clients
//! that never connected are reported apart, as connect failures.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::client::{ClientOutcome, count_endings, new_latency_histogram};
use super::seqset::SeqSet;

/// Deliveries across all clients.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeliveryTally {
    pub clients_connected: u64,
    pub connect_failures: u64,
    /// The first failure's reason, as an example.
    pub connect_error: Option<String>,
    /// Expected events × connected clients.
    pub expected_deliveries: u64,
    /// First deliveries of this run's events.
    pub delivered: u64,
    /// Expected deliveries that did not arrive.
    pub missing: u64,
    /// Second and later copies of an event on one client.
    pub duplicates: u64,
    /// Deliveries of this run's events that were not acknowledged (or not matching).
    pub unexpected: u64,
    pub foreign_frames: u64,
    pub control_frames: u64,
    pub unexpected_frames: u64,
    pub pings_answered: u64,
    pub reconnects: u64,
    /// Connections the server ended, by close code (or how they ended).
    pub closes: BTreeMap<String, u64>,
    pub latency_ms: LatencySummary,
    /// When the last first delivery was read, µs since the measurer started.
    #[serde(skip)]
    pub last_delivery_us: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl LatencySummary {
    pub fn from_histogram(histogram: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.5)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p99_9: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// Merges the clients' outcomes; `expected` is the set of events every client should receive.
pub fn tally(clients: &[ClientOutcome], expected: &SeqSet) -> DeliveryTally {
    let mut tally = DeliveryTally::default();
    let mut latency = new_latency_histogram();
    for client in clients {
        if !client.connected {
            tally.connect_failures += 1;
            if tally.connect_error.is_none() {
                tally.connect_error.clone_from(&client.connect_error);
            }
            continue;
        }
        tally.clients_connected += 1;
        tally.expected_deliveries += expected.len();
        tally.missing += expected.count_not_in(&client.received);
        tally.unexpected += client.received.count_not_in(expected);
        tally.delivered += client.received.len();
        tally.duplicates += client.duplicates;
        tally.foreign_frames += client.foreign_frames;
        tally.control_frames += client.control_frames;
        tally.unexpected_frames += client.unexpected_frames;
        tally.pings_answered += client.pings;
        tally.reconnects += client.reconnects;
        tally.last_delivery_us = tally.last_delivery_us.max(client.last_delivery_us);
        if let Some(histogram) = &client.latency_us {
            latency
                .add(histogram)
                .expect("client histograms share the bounds");
        }
    }
    tally.closes = count_endings(clients.iter().flat_map(|client| &client.endings));
    tally.latency_ms = LatencySummary::from_histogram(&latency);
    tally
}

/// The result of a fan-out run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FanoutReport {
    pub host: String,
    /// The servers the clients connected to, in turn, when not `host`.
    pub client_hosts: Vec<String>,
    pub wire: super::client::Wire,
    pub filter: Option<String>,
    pub clients: u64,
    /// Events per second asked for.
    pub rate: f64,
    pub duration_s: f64,
    pub bulk: u64,
    pub threads: usize,
    pub requests: u64,
    pub events_posted: u64,
    pub events_acked: u64,
    pub events_failed: u64,
    /// Requests by status code or failure.
    pub post_outcomes: BTreeMap<String, u64>,
    pub late_sends: u64,
    pub max_send_lateness_ms: f64,
    pub http_connections: u64,
    /// Due time → 201 read of acknowledged POSTs (open loop: waits for a connection count).
    pub ack_latency_ms: LatencySummary,
    /// Acknowledged events that match the filter: what each client should receive.
    pub matching_events: u64,
    #[serde(flatten)]
    pub deliveries: DeliveryTally,
    /// Deliveries over the time from the first POST to the last delivery.
    pub deliveries_per_s: f64,
    /// The measurer's CPU time from the first POST to the end of the drain.
    pub cpu_s: f64,
    /// `cpu_s` over that wall time (above 100 with several threads).
    pub cpu_percent: f64,
    pub wall_s: f64,
    /// The server's CPU time (all threads, user + system) over the same window as `cpu_s`,
    /// when `--server-pid` names it.
    pub server_cpu_s: Option<f64>,
    /// `server_cpu_s` in milliseconds per 1,000 deliveries.
    pub server_cpu_ms_per_1000_deliveries: Option<f64>,
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_after: Option<u64>,
}

/// The result of an idle-connections run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdleReport {
    pub host: String,
    pub connections: u64,
    pub connected: u64,
    pub connect_failures: u64,
    pub connect_error: Option<String>,
    /// Time to open them all.
    pub connect_s: f64,
    pub settle_s: f64,
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_after: Option<u64>,
    /// `(after - before) / connected`.
    pub kib_per_connection: Option<f64>,
    /// Pings answered while idle.
    pub pings_answered: u64,
    /// Connections the server ended while idle, by close code: none, when pongs keep them.
    pub closes: BTreeMap<String, u64>,
}

impl IdleReport {
    pub fn per_connection(before: Option<u64>, after: Option<u64>, connected: u64) -> Option<f64> {
        match (before, after) {
            (Some(before), Some(after)) if connected > 0 => {
                Some((after as f64 - before as f64) / connected as f64)
            }
            _ => None,
        }
    }
}

fn rss_line(f: &mut fmt::Formatter<'_>, before: Option<u64>, after: Option<u64>) -> fmt::Result {
    match (before, after) {
        (Some(before), Some(after)) => writeln!(
            f,
            "  server rss   before {before} KiB, after {after} KiB ({:+} KiB)",
            after as i64 - before as i64
        ),
        _ => writeln!(f, "  server rss   not measured (give --server-pid)"),
    }
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter()
        .map(|(key, count)| format!("{key}: {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for FanoutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.deliveries;
        let filter = self.filter.as_deref().unwrap_or("none");
        let servers = if self.client_hosts.is_empty() {
            std::borrow::Cow::Borrowed(self.host.as_str())
        } else {
            format!("{} (posts to {})", self.client_hosts.join(", "), self.host).into()
        };
        writeln!(
            f,
            "vigil fanout: {} {} clients on {servers} (filter: {filter})",
            self.clients,
            self.wire.route(),
        )?;
        writeln!(
            f,
            "  posting      {} events/s for {:.1} s, {} per POST: {} requests, {} events posted, \
             {} acked, {} failed ({})",
            self.rate,
            self.duration_s,
            self.bulk,
            self.requests,
            self.events_posted,
            self.events_acked,
            self.events_failed,
            counts(&self.post_outcomes)
        )?;
        writeln!(
            f,
            "  schedule     {} late sends (max {:.2} ms behind); {} HTTP connections",
            self.late_sends, self.max_send_lateness_ms, self.http_connections
        )?;
        writeln!(
            f,
            "  acks ms      p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (due time → 201, n={})",
            self.ack_latency_ms.p50,
            self.ack_latency_ms.p99,
            self.ack_latency_ms.p99_9,
            self.ack_latency_ms.max,
            self.ack_latency_ms.count
        )?;
        writeln!(
            f,
            "  deliveries   expected {} ({} matching × {} clients), delivered {}, missing {}, \
             duplicates {}, unexpected {}",
            d.expected_deliveries,
            self.matching_events,
            d.clients_connected,
            d.delivered,
            d.missing,
            d.duplicates,
            d.unexpected
        )?;
        writeln!(
            f,
            "  latency ms   p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n={})",
            d.latency_ms.p50,
            d.latency_ms.p99,
            d.latency_ms.p99_9,
            d.latency_ms.max,
            d.latency_ms.count
        )?;
        writeln!(
            f,
            "  throughput   {:.0} deliveries/s",
            self.deliveries_per_s
        )?;
        writeln!(
            f,
            "  frames       {} foreign, {} resume control, {} binary/fragmented, {} pings answered",
            d.foreign_frames, d.control_frames, d.unexpected_frames, d.pings_answered
        )?;
        writeln!(
            f,
            "  connections  {}/{} connected{}; {} reconnects; ended by server: {}",
            d.clients_connected,
            self.clients,
            d.connect_error
                .as_deref()
                .map(|error| format!(" ({} failed, e.g. {error})", d.connect_failures))
                .unwrap_or_default(),
            d.reconnects,
            counts(&d.closes)
        )?;
        writeln!(
            f,
            "  measurer     cpu {:.2} s = {:.1} % of {:.1} s wall, {} client thread(s)",
            self.cpu_s, self.cpu_percent, self.wall_s, self.threads
        )?;
        if let (Some(cpu), Some(per_1000)) =
            (self.server_cpu_s, self.server_cpu_ms_per_1000_deliveries)
        {
            writeln!(
                f,
                "  server cpu   {cpu:.2} s = {per_1000:.3} ms per 1,000 deliveries"
            )?;
        }
        rss_line(f, self.server_rss_kib_before, self.server_rss_kib_after)
    }
}

impl fmt::Display for IdleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "vigil fanout --idle: {}/{} idle connections on {} in {:.2} s, settled {:.1} s",
            self.connected, self.connections, self.host, self.connect_s, self.settle_s
        )?;
        if let Some(error) = &self.connect_error {
            writeln!(f, "  failures     {} (e.g. {error})", self.connect_failures)?;
        }
        writeln!(
            f,
            "  while idle   {} pings answered; ended by server: {}",
            self.pings_answered,
            counts(&self.closes)
        )?;
        rss_line(f, self.server_rss_kib_before, self.server_rss_kib_after)?;
        match self.kib_per_connection {
            Some(kib) => writeln!(f, "  per conn     {kib:.2} KiB"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::client::Ending;

    fn client(received: &[u64], latencies_us: &[u64], duplicates: u64) -> ClientOutcome {
        let mut set = SeqSet::new(10);
        for &seq in received {
            set.insert(seq);
        }
        let mut histogram = new_latency_histogram();
        for &latency in latencies_us {
            histogram.record(latency).unwrap();
        }
        ClientOutcome {
            connected: true,
            connect_error: None,
            latency_us: Some(histogram),
            received: set,
            duplicates,
            foreign_frames: 0,
            control_frames: 0,
            unexpected_frames: 0,
            pings: 1,
            reconnects: 0,
            endings: Vec::new(),
            last_delivery_us: 5,
        }
    }

    #[test]
    fn tally_counts_missing_duplicates_and_latency_across_clients() {
        let expected = SeqSet::from_fn(10, |seq| seq < 4);
        let mut closed = client(&[0, 1], &[1000, 3000], 0);
        closed.endings.push(Ending::ServerClose(Some(1008)));
        let mut never = client(&[], &[], 0);
        never.connected = false;
        never.connect_error = Some("upgrade refused: HTTP/1.1 503".to_owned());
        let clients = [
            client(&[0, 1, 2, 3, 7], &[2000, 2000, 2000, 2000], 2),
            closed,
            never,
        ];
        let tally = tally(&clients, &expected);
        assert_eq!(tally.clients_connected, 2);
        assert_eq!(tally.connect_failures, 1);
        assert_eq!(tally.expected_deliveries, 8);
        assert_eq!(tally.delivered, 7);
        assert_eq!(tally.missing, 2);
        assert_eq!(tally.unexpected, 1);
        assert_eq!(tally.duplicates, 2);
        assert_eq!(tally.pings_answered, 2);
        assert_eq!(tally.closes["1008"], 1);
        assert_eq!(tally.latency_ms.count, 6);
        assert!((tally.latency_ms.p50 - 2.0).abs() < 0.05);
        assert!((tally.latency_ms.max - 3.0).abs() < 0.05);
    }

    fn report() -> FanoutReport {
        let expected = SeqSet::from_fn(10, |seq| seq < 4);
        FanoutReport {
            host: "http://127.0.0.1:3950".to_owned(),
            client_hosts: Vec::new(),
            wire: crate::fanout::client::Wire::Ws,
            filter: Some("type=GAS".to_owned()),
            clients: 1,
            rate: 500.0,
            duration_s: 10.0,
            bulk: 1,
            threads: 1,
            requests: 10,
            events_posted: 10,
            events_acked: 9,
            events_failed: 1,
            post_outcomes: BTreeMap::from([("201".to_owned(), 9), ("503".to_owned(), 1)]),
            late_sends: 0,
            max_send_lateness_ms: 0.5,
            http_connections: 2,
            ack_latency_ms: LatencySummary::default(),
            matching_events: 4,
            deliveries: tally(&[client(&[0, 1, 2, 3], &[1500; 4], 0)], &expected),
            deliveries_per_s: 400.0,
            cpu_s: 1.0,
            cpu_percent: 10.0,
            wall_s: 10.0,
            server_cpu_s: Some(0.002),
            server_cpu_ms_per_1000_deliveries: Some(500.0),
            server_rss_kib_before: Some(1000),
            server_rss_kib_after: Some(1500),
        }
    }

    #[test]
    fn text_reports_name_every_figure() {
        let text = report().to_string();
        for needle in [
            "1 /ws clients on http://127.0.0.1:3950 (filter: type=GAS)",
            "10 events posted, 9 acked, 1 failed (201: 9, 503: 1)",
            "expected 4 (4 matching × 1 clients), delivered 4, missing 0, duplicates 0",
            "p50 1.50",
            "400 deliveries/s",
            "ended by server: none",
            "cpu 1.00 s = 10.0 %",
            "server cpu   0.00 s = 500.000 ms per 1,000 deliveries",
            "before 1000 KiB, after 1500 KiB (+500 KiB)",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
    }

    #[test]
    fn json_reports_are_flat_for_scripts() {
        let json: serde_json::Value = serde_json::to_value(report()).unwrap();
        assert_eq!(json["expected_deliveries"], 4);
        assert_eq!(json["missing"], 0);
        let p50 = json["latency_ms"]["p50"].as_f64().unwrap();
        assert!((p50 - 1.5).abs() < 0.02, "{p50}");
        assert_eq!(json["post_outcomes"]["503"], 1);
        assert_eq!(json["server_rss_kib_after"], 1500);
        assert_eq!(json["server_cpu_ms_per_1000_deliveries"], 500.0);
        assert!(json.get("last_delivery_us").is_none());
    }

    #[test]
    fn idle_reports_divide_the_growth_by_the_connections() {
        assert_eq!(
            IdleReport::per_connection(Some(1000), Some(3048), 2000),
            Some(1.024)
        );
        assert_eq!(IdleReport::per_connection(None, Some(1), 1), None);
        assert_eq!(IdleReport::per_connection(Some(1), Some(2), 0), None);
        let report = IdleReport {
            host: "http://127.0.0.1:3950".to_owned(),
            connections: 2000,
            connected: 2000,
            connect_failures: 0,
            connect_error: None,
            connect_s: 0.5,
            settle_s: 2.0,
            server_rss_kib_before: Some(1000),
            server_rss_kib_after: Some(3048),
            kib_per_connection: Some(1.024),
            pings_answered: 2000,
            closes: BTreeMap::new(),
        };
        let text = report.to_string();
        assert!(text.contains("2000/2000 idle connections"), "{text}");
        assert!(text.contains("per conn     1.02 KiB"), "{text}");
        assert!(
            text.contains("2000 pings answered; ended by server: none"),
            "{text}"
        );
    }
}
