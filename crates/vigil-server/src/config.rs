//! Configuration: one typed struct, read once at start from flags and environment.
//!
//! Every setting is a `--flag` and an environment variable (DESIGN.md's table); the binary
//! parses them with clap, which prints a clear message and exits with code 2 on a bad value.
//! [`Config`]'s `Display` is what the start-up log prints: secrets in URLs are redacted.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A connection URL that may hold a password; `Display`/`Debug` redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The URL with its password, for connecting. Never log this.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The scheme (`mysql`, `sqlite`, `redis`…), lowercased.
    pub fn scheme(&self) -> String {
        self.0
            .split_once("://")
            .map_or("", |(scheme, _)| scheme)
            .to_ascii_lowercase()
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({self})")
    }
}

impl std::str::FromStr for SecretUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if !text.contains("://") {
            return Err("must be a URL such as mysql://user:password@host:3306/database".into());
        }
        Ok(SecretUrl(text.to_owned()))
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`; query values named like
/// secrets (`password=`, `token=`…) are masked too.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let (authority_end, _) = rest
        .char_indices()
        .find(|&(_, c)| matches!(c, '/' | '?' | '#'))
        .unwrap_or((rest.len(), ' '));
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let masked: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if is_secret_key(key) => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", masked.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "secret", "token", "key"]
        .iter()
        .any(|word| key.contains(word))
}

/// Everything Vigil can be told, with DESIGN.md's names and defaults.
#[derive(Debug, Clone, Parser)]
#[command(name = "vigil", version, about = "Realtime event monitoring backend")]
pub struct Config {
    /// Listen address.
    #[arg(long, env = "VIGIL_ADDR", default_value = "0.0.0.0:3000")]
    pub addr: SocketAddr,

    /// Database: mysql://user:password@host:3306/database.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<SecretUrl>,

    /// Redis for the recent-events cache and the broadcast between instances: redis://host:6379.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<SecretUrl>,

    /// Directory of the embedded database (default $XDG_DATA_HOME/vigil or ~/.local/share/vigil).
    #[arg(long, env = "VIGIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Redis list holding the newest events.
    #[arg(long, env = "VIGIL_REDIS_RECENT_KEY", default_value = "events:recent")]
    pub redis_recent_key: String,

    /// Redis pub/sub channel of new events.
    #[arg(long, env = "VIGIL_REDIS_CHANNEL", default_value = "events:new")]
    pub redis_channel: String,

    /// Entries kept in the recent list (at least 51: page 1 of any size ≤ 50 must fit).
    #[arg(long, env = "VIGIL_RECENT_SIZE", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(51..=100_000))]
    pub recent_size: u32,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "VIGIL_MAX_BODY_BYTES", default_value_t = 1_048_576,
          value_parser = clap::value_parser!(u64).range(1024..=1_073_741_824))]
    pub max_body_bytes: u64,

    /// Most events in one bulk request.
    #[arg(long, env = "VIGIL_MAX_BULK_EVENTS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_bulk_events: u32,

    /// Ingest queue budget, in events; over it, posts get 503 at once.
    #[arg(long, env = "VIGIL_QUEUE_EVENTS", default_value_t = 50_000,
          value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    pub queue_events: u32,

    /// Most rows in one database batch.
    #[arg(long, env = "VIGIL_BATCH_MAX_ROWS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_max_rows: u32,

    /// Most bytes of event data in one database batch.
    #[arg(long, env = "VIGIL_BATCH_MAX_BYTES", default_value_t = 4_194_304,
          value_parser = clap::value_parser!(u64).range(1024..=1_073_741_824))]
    pub batch_max_bytes: u64,

    /// Seconds to drain queued events after SIGTERM/SIGINT before answering the rest 503.
    #[arg(long, env = "VIGIL_SHUTDOWN_TIMEOUT_S", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub shutdown_timeout_s: u64,

    /// Most open client connections; more wait in the listen backlog.
    #[arg(long, env = "VIGIL_MAX_CONNECTIONS", default_value_t = 25_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub max_connections: u32,

    /// Seconds a client may take to send a request's headers.
    #[arg(long, env = "VIGIL_HEADER_READ_TIMEOUT_S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub header_read_timeout_s: u64,

    /// Threads serving HTTP (default: one per CPU; the batcher has a thread of its own).
    #[arg(long, env = "VIGIL_WORKER_THREADS",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub worker_threads: Option<u32>,

    /// Frames queued for one WebSocket client; a client that falls this far behind is closed
    /// (1008 "slow consumer") instead of slowing the hub or other clients.
    #[arg(long, env = "VIGIL_WS_CLIENT_QUEUE", default_value_t = 1_024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub ws_client_queue: u32,

    /// Seconds between server pings on each WebSocket; a client silent for three intervals
    /// (no frame, no pong) is closed.
    #[arg(long, env = "VIGIL_WS_PING_INTERVAL_S", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub ws_ping_interval_s: u64,

    /// Most open WebSocket clients; past it upgrades are refused with 503.
    #[arg(long, env = "VIGIL_WS_MAX_CLIENTS", default_value_t = 20_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub ws_max_clients: u32,

    /// Log format: text or json (filter with RUST_LOG, default info).
    #[arg(long, env = "VIGIL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Config {
    /// Parses flags and environment; on a bad value prints why and exits with code 2.
    pub fn from_env_and_args() -> Config {
        Config::parse()
    }

    /// Parses these arguments (the first is the program name) plus the environment.
    pub fn from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Config::try_parse_from(args)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_s)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_s)
    }

    pub fn ws_ping_interval(&self) -> Duration {
        Duration::from_secs(self.ws_ping_interval_s)
    }

    /// HTTP worker threads: as configured, else one per CPU.
    ///
    /// Measured on the 2-core test box (server, MariaDB, Redis and wrk sharing it): one
    /// worker instead of two made no clear difference to single-event ingest (within the
    /// box's ±10% noise) but cost cached reads about 15%, so the default stays one per CPU;
    /// the setting is there for hosts where Vigil shares its cores with the database.
    pub fn worker_threads(&self) -> usize {
        self.worker_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            |threads| threads as usize,
        )
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let optional = |value: Option<String>| value.unwrap_or_else(|| "(unset)".into());
        write!(
            f,
            "addr={} database_url={} redis_url={} data_dir={} redis_recent_key={} \
             redis_channel={} recent_size={} max_body_bytes={} max_bulk_events={} \
             queue_events={} batch_max_rows={} batch_max_bytes={} shutdown_timeout_s={} \
             max_connections={} header_read_timeout_s={} ws_client_queue={} \
             ws_ping_interval_s={} ws_max_clients={} worker_threads={} log_format={:?}",
            self.addr,
            optional(self.database_url.as_ref().map(ToString::to_string)),
            optional(self.redis_url.as_ref().map(ToString::to_string)),
            optional(self.data_dir.as_ref().map(|p| p.display().to_string())),
            self.redis_recent_key,
            self.redis_channel,
            self.recent_size,
            self.max_body_bytes,
            self.max_bulk_events,
            self.queue_events,
            self.batch_max_rows,
            self.batch_max_bytes,
            self.shutdown_timeout_s,
            self.max_connections,
            self.header_read_timeout_s,
            self.ws_client_queue,
            self.ws_ping_interval_s,
            self.ws_max_clients,
            self.worker_threads(),
            self.log_format,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        let cases = [
            (
                "mysql://root:hunter2@db:3306/vigil",
                "mysql://root:***@db:3306/vigil",
            ),
            (
                "mysql://root@127.0.0.1:3306/test",
                "mysql://root@127.0.0.1:3306/test",
            ),
            ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
            (
                "rediss://u:p@a@h/x?password=z&ssl-mode=REQUIRED",
                "rediss://u:***@h/x?password=***&ssl-mode=REQUIRED",
            ),
            ("not a url", "***"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn display_never_shows_a_password() {
        let config = Config::try_parse_from([
            "vigil",
            "--database-url",
            "mysql://vigil:s3cret@db/vigil",
            "--redis-url",
            "redis://:t0ken@cache",
        ])
        .unwrap();
        let shown = format!("{config} {config:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("t0ken"),
            "{shown}"
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            ["vigil", "--recent-size", "50"],
            ["vigil", "--addr", "nowhere"],
            ["vigil", "--queue-events", "0"],
            ["vigil", "--database-url", "localhost"],
            ["vigil", "--log-format", "xml"],
            ["vigil", "--ws-client-queue", "0"],
            ["vigil", "--ws-ping-interval-s", "0"],
        ] {
            assert!(Config::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
