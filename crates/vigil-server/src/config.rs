//! Configuration: one typed struct, read once at start from flags and environment.
//!
//! Every setting is a `--flag` and an environment variable (the README's configuration table); the binary
//! parses them with clap, which prints a clear message and exits with code 2 on a bad value.
//! [`Config`]'s `Display` is what the start-up log prints: secrets in URLs are redacted.
//!
//! [`Config`] is one struct per part of Vigil ([`HttpSettings`], [`StoreSettings`],
//! [`RedisSettings`]…), flattened into one command line, so each part is handed its own
//! settings and nothing else. The values access control checks (tokens, origins, proxy
//! blocks) are the security module's own types, parsed here; security itself never reads the
//! configuration: it is handed its [`Rules`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, ValueEnum};

use vigil_bus::SentinelAddrs;

use crate::security::{Origins, Rules, Tokens, TrustedProxies};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The value as `VIGIL_LOG_FORMAT` takes it.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
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

/// `DATABASE_URL`: a URL of a backend the store has, refused here (exit 2) rather than after
/// start-up has begun.
fn database_url(text: &str) -> Result<SecretUrl, String> {
    with_scheme(
        text,
        &["mysql", "mariadb", "sqlite"],
        "mysql://…, mariadb://… or sqlite://…",
    )
}

/// `REDIS_URL`: a Redis URL (TCP, TLS or a Unix socket).
fn redis_url(text: &str) -> Result<SecretUrl, String> {
    with_scheme(
        text,
        &["redis", "rediss", "redis+unix", "unix"],
        "redis://…, rediss://… or redis+unix://…",
    )
}

fn with_scheme(text: &str, schemes: &[&str], expected: &str) -> Result<SecretUrl, String> {
    let url: SecretUrl = text.parse()?;
    if schemes.contains(&url.scheme().as_str()) {
        Ok(url)
    } else {
        Err(format!("must be a {expected} URL"))
    }
}

/// Settings whose values are never repeated in an error: they may hold a password.
const SECRET_FLAGS: [&str; 2] = ["database-url", "redis-url"];

/// Ends the process for a refused setting: clap's own message, unless the value came from an
/// environment variable (clap names only the flag, which the user never typed) or may hold a
/// password (clap repeats the value); then one line naming what the user set, and exit 2.
fn exit_with(error: &clap::Error) -> ! {
    match setting_error(error, std::env::args().skip(1).collect()) {
        Some(line) => {
            eprintln!("error: {line}");
            std::process::exit(2);
        }
        None => error.exit(),
    }
}

/// The line for [`exit_with`], given the command-line arguments; `None` for clap's own.
fn setting_error(error: &clap::Error, args: Vec<String>) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let Some(ContextValue::String(invalid)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = invalid.split_whitespace().next()?.strip_prefix("--")?;
    let command = Config::command();
    let argument = command
        .get_arguments()
        .find(|argument| argument.get_long() == Some(long))?;
    let flag = format!("--{long}");
    let typed = args
        .iter()
        .any(|arg| *arg == flag || arg.starts_with(&format!("{flag}=")));
    let secret = SECRET_FLAGS.contains(&long);
    let name = match argument.get_env().and_then(|env| env.to_str()) {
        Some(env) if !typed => format!("{env} ({flag})"),
        _ if secret => flag,
        _ => return None,
    };
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) if !secret => format!("'{value}': "),
        _ => String::new(),
    };
    let reason = match (
        std::error::Error::source(error),
        error.get(ContextKind::ValidValue),
    ) {
        (Some(source), _) => source.to_string(),
        (None, Some(ContextValue::Strings(valid))) => {
            format!("expected one of {}", valid.join(", "))
        }
        _ => "invalid value".to_owned(),
    };
    Some(format!("{name}: {value}{reason}"))
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`; query values named like
/// secrets (`password=`, `token=`…) are masked too. A password with an unencoded `/`, `?` or
/// `#` makes the URL unparsable as such (the userinfo seems to end there): then everything up
/// to the last `@` is taken as the userinfo, so the password is hidden either way, and at
/// worst more than the password is.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let (authority_end, _) = rest
        .char_indices()
        .find(|&(_, c)| matches!(c, '/' | '?' | '#'))
        .unwrap_or((rest.len(), ' '));
    let authority_end = match (rest[..authority_end].contains('@'), rest.rfind('@')) {
        (false, Some(last_at)) if rest[..last_at].contains(':') => {
            // The host and port after the last `@`, up to where the path starts.
            last_at
                + rest[last_at..]
                    .find(['/', '?', '#'])
                    .unwrap_or(rest.len() - last_at)
        }
        _ => authority_end,
    };
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

/// Everything Vigil can be told, with the names and defaults of the README's configuration
/// table (they are the contract with users' deployments: never rename one), grouped by the
/// part of Vigil each setting is handed to in `Application::build`.
#[derive(Debug, Clone, Parser)]
#[command(name = "vigil", version, about = "Realtime event monitoring backend")]
pub struct Config {
    #[command(flatten)]
    pub http: HttpSettings,
    #[command(flatten)]
    pub store: StoreSettings,
    #[command(flatten)]
    pub redis: RedisSettings,
    #[command(flatten)]
    pub ingest: IngestSettings,
    #[command(flatten)]
    pub ws: WsSettings,
    #[command(flatten)]
    pub security: SecuritySettings,
    #[command(flatten)]
    pub retention: RetentionSettings,
    #[command(flatten)]
    pub shutdown: ShutdownSettings,
    #[command(flatten)]
    pub telemetry: TelemetrySettings,
}

/// The HTTP front end: where it listens, how many connections and threads, and what one
/// request may take in time and size.
#[derive(Debug, Clone, Args)]
pub struct HttpSettings {
    /// Listen address.
    #[arg(long, env = "VIGIL_ADDR", default_value = "0.0.0.0:3000")]
    pub addr: SocketAddr,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "VIGIL_MAX_BODY_BYTES", default_value_t = 1_048_576,
          value_parser = clap::value_parser!(u64).range(1024..=1_073_741_824))]
    pub max_body_bytes: u64,

    /// Most events in one bulk request.
    #[arg(long, env = "VIGIL_MAX_BULK_EVENTS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_bulk_events: u32,

    /// Most open client connections; more wait in the listen backlog.
    #[arg(long, env = "VIGIL_MAX_CONNECTIONS", default_value_t = 25_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub max_connections: u32,

    /// Seconds a client may take to send a request's headers.
    #[arg(long, env = "VIGIL_HEADER_READ_TIMEOUT_S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub header_read_timeout_s: u64,

    /// Seconds a client may take to send a request's whole body once its headers are in; a
    /// body that trickles longer is answered 408 `request_timeout` and the connection closed.
    #[arg(long, env = "VIGIL_BODY_READ_TIMEOUT_S", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub body_read_timeout_s: u64,

    /// Seconds a client may take to take a response (or WebSocket frames) once the socket
    /// stops accepting them; a client that does not read is disconnected, freeing its slot.
    #[arg(long, env = "VIGIL_WRITE_TIMEOUT_S", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub write_timeout_s: u64,

    /// Seconds within which every request is answered once it has been read, whatever the
    /// database does (retries and statement timeouts included). A post that runs out of time
    /// before its batch was sent is answered 503 `store_unavailable` (not stored); one whose
    /// batch was sent and not confirmed, 504 `outcome_unknown`.
    #[arg(long, env = "VIGIL_REQUEST_TIMEOUT_S", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(2..=3_600))]
    pub request_timeout_s: u64,

    /// Threads serving HTTP (default: one per CPU; the batcher has a thread of its own).
    #[arg(long, env = "VIGIL_WORKER_THREADS",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub worker_threads: Option<u32>,
}

/// The database: which one, where the embedded one lives, how long a statement may run.
#[derive(Debug, Clone, Args)]
pub struct StoreSettings {
    /// Database: mysql://user:password@host:3306/database or sqlite:///path/vigil.db
    /// (default: the embedded SQLite file in VIGIL_DATA_DIR).
    #[arg(long, env = "DATABASE_URL", value_parser = database_url)]
    pub database_url: Option<SecretUrl>,

    /// Directory of the embedded database (default $XDG_DATA_HOME/vigil or ~/.local/share/vigil).
    #[arg(long, env = "VIGIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Seconds one database statement may run, on the client and (MariaDB) on the server;
    /// must be below VIGIL_REQUEST_TIMEOUT_S.
    #[arg(long, env = "VIGIL_STATEMENT_TIMEOUT_S", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub statement_timeout_s: u64,

    /// Seconds start-up keeps trying to reach a database that does not answer yet (a stack
    /// whose database starts second), with back-off, before it gives up; 0 tries once.
    #[arg(long, env = "VIGIL_DATABASE_WAIT_S", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub database_wait_s: u64,
}

/// Redis and the recent list: where Redis is (one server, or the primary Sentinel names),
/// the names Vigil uses in it, and how many events the recent list keeps (in Redis, or in
/// process without it).
#[derive(Debug, Clone, Args)]
pub struct RedisSettings {
    /// Redis for the recent-events cache and the broadcast between instances: redis://host:6379.
    /// With VIGIL_REDIS_SENTINELS it only gives the data nodes' scheme, user, password and
    /// database (its host is not used: the sentinels name the primary).
    #[arg(long, env = "REDIS_URL", value_parser = redis_url)]
    pub redis_url: Option<SecretUrl>,

    /// Redis Sentinel: the sentinels to ask for the primary, comma-separated host:port
    /// (10.0.0.5:26379,10.0.0.6:26379); needs VIGIL_REDIS_SENTINEL_MASTER.
    #[arg(long, env = "VIGIL_REDIS_SENTINELS", value_parser = parse_sentinels)]
    pub redis_sentinels: Option<SentinelAddrs>,

    /// Redis Sentinel: the name the sentinels monitor the primary under (e.g. mymaster);
    /// needs VIGIL_REDIS_SENTINELS.
    #[arg(long, env = "VIGIL_REDIS_SENTINEL_MASTER", value_parser = parse_sentinel_master)]
    pub redis_sentinel_master: Option<String>,

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
}

/// The ingest pipeline's bounds: its event budget and the size of a database batch.
#[derive(Debug, Clone, Args)]
pub struct IngestSettings {
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
}

/// WebSocket clients: how many, how far behind one may fall, how much a resume replays, how
/// often they are pinged.
#[derive(Debug, Clone, Args)]
pub struct WsSettings {
    /// Frames queued for one WebSocket client; a client that falls this far behind is closed
    /// (1008 "slow consumer") instead of slowing the hub or other clients.
    #[arg(long, env = "VIGIL_WS_CLIENT_QUEUE", default_value_t = 1_024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub ws_client_queue: u32,

    /// Most stored events replayed to a client resuming with `/ws?since=<id>`; past it the
    /// replay ends with `"complete":false` and the client resumes again from its last id.
    #[arg(long, env = "VIGIL_WS_RESUME_MAX", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub ws_resume_max: u32,

    /// Seconds between server pings on each WebSocket; a client silent for three intervals
    /// (no frame, no pong) is closed.
    #[arg(long, env = "VIGIL_WS_PING_INTERVAL_S", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub ws_ping_interval_s: u64,

    /// Most open WebSocket clients; past it upgrades are refused with 503.
    #[arg(long, env = "VIGIL_WS_MAX_CLIENTS", default_value_t = 20_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub ws_max_clients: u32,
}

/// Access control: tokens, browser origins, trusted proxies and the limits per producer.
#[derive(Debug, Clone, Args)]
pub struct SecuritySettings {
    /// Tokens that may post events, comma-separated (each 16-256 characters of
    /// A-Z a-z 0-9 . _ ~ -); unset: anyone may post.
    #[arg(long, env = "VIGIL_INGEST_TOKENS", value_parser = TokensParser)]
    pub ingest_tokens: Option<Tokens>,

    /// Tokens that may read events and open /ws, comma-separated; unset: anyone may read.
    #[arg(long, env = "VIGIL_READ_TOKENS", value_parser = TokensParser)]
    pub read_tokens: Option<Tokens>,

    /// Browser origins allowed to call the API (CORS), comma-separated
    /// (https://app.example.com) or `*`; unset: none.
    #[arg(long, env = "VIGIL_CORS_ORIGINS", value_parser = Origins::parse)]
    pub cors_origins: Option<Origins>,

    /// Browser origins allowed to open /ws, comma-separated or `*`; unset: any (upgrades
    /// without an Origin header, from non-browser clients, are always allowed).
    #[arg(long, env = "VIGIL_WS_ORIGINS", value_parser = Origins::parse)]
    pub ws_origins: Option<Origins>,

    /// Ingest requests per second per token, fractions allowed (0.5: one every 2 s);
    /// unset: unlimited. Requests without a token (open ingest) have no token bucket.
    #[arg(long, env = "VIGIL_INGEST_RATE_PER_TOKEN", value_parser = parse_rate)]
    pub ingest_rate_per_token: Option<f64>,

    /// Ingest requests per second per client address, fractions allowed; unset: unlimited.
    #[arg(long, env = "VIGIL_INGEST_RATE_PER_ADDR", value_parser = parse_rate)]
    pub ingest_rate_per_addr: Option<f64>,

    /// Requests a token or address may make at once before its rate applies (default: one
    /// second's worth, at least 1).
    #[arg(long, env = "VIGIL_INGEST_RATE_BURST",
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub ingest_rate_burst: Option<u32>,

    /// Most open WebSocket clients per client address; past it upgrades get 429.
    #[arg(long, env = "VIGIL_WS_MAX_CLIENTS_PER_ADDR", default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub ws_max_clients_per_addr: u32,

    /// Proxies (address blocks, comma-separated: 10.0.0.0/8,fd00::/8) whose X-Forwarded-For
    /// names the client; unset: the TCP peer is the client.
    #[arg(long, env = "VIGIL_TRUSTED_PROXIES", value_parser = TrustedProxies::parse)]
    pub trusted_proxies: Option<TrustedProxies>,
}

/// What is deleted, and when: old events, and idempotency records past their time.
#[derive(Debug, Clone, Args)]
pub struct RetentionSettings {
    /// Delete events older than this (`30d`, `12h`, `90m`; at least `1m`; `off`, the default,
    /// keeps everything). Deletion runs in small batches that never stall ingest.
    #[arg(long, env = "VIGIL_RETENTION", value_parser = parse_retention)]
    pub retention: Option<Duration>,

    /// How long an `Idempotency-Key` is remembered after the request that stored its events
    /// (`24h`, `90m`, `30s`; at least `1s`). A retry within it gets the original answer.
    #[arg(long, env = "VIGIL_IDEMPOTENCY_TTL", default_value = "24h",
          value_parser = parse_idempotency_ttl)]
    pub idempotency_ttl: Duration,
}

/// Stopping: how long load balancers get to look away, and how long the queue gets to drain.
#[derive(Debug, Clone, Args)]
pub struct ShutdownSettings {
    /// Seconds to drain queued events after SIGTERM/SIGINT before answering the rest 503.
    #[arg(long, env = "VIGIL_SHUTDOWN_TIMEOUT_S", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub shutdown_timeout_s: u64,

    /// Seconds between SIGTERM and closing the listener, while `/api/ready` already answers
    /// 503: time for a load balancer to stop sending before this instance stops accepting.
    #[arg(long, env = "VIGIL_DRAIN_DELAY_S", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=600))]
    pub drain_delay_s: u64,
}

/// What Vigil tells operators: where `/metrics` is served and how logs are written.
#[derive(Debug, Clone, Args)]
pub struct TelemetrySettings {
    /// Serve `/metrics` on this address only (e.g. 127.0.0.1:9100, kept off the public
    /// listener); unset: `/metrics` is served on VIGIL_ADDR.
    #[arg(long, env = "VIGIL_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Log format: text or json (filter with RUST_LOG, default info).
    #[arg(long, env = "VIGIL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Config {
    /// Parses flags and environment; on a bad value, or settings that do not go together,
    /// prints why and exits with code 2.
    pub fn from_env_and_args() -> Config {
        let config = Config::try_parse().unwrap_or_else(|error| exit_with(&error));
        if let Err(error) = config.checked() {
            error.exit();
        }
        config
    }

    /// Parses these arguments (the first is the program name) plus the environment, and
    /// checks they go together.
    pub fn from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let config = Config::try_parse_from(args)?;
        config.checked()?;
        Ok(config)
    }

    /// [`check_combinations`](Self::check_combinations) as clap's error (exit code 2).
    fn checked(&self) -> Result<(), clap::Error> {
        self.check_combinations().map_err(|problem| {
            Config::command().error(clap::error::ErrorKind::ArgumentConflict, problem)
        })
    }

    /// Settings that are valid alone but not together; the message names the variables.
    pub fn check_combinations(&self) -> Result<(), String> {
        match (
            &self.redis.redis_sentinels,
            &self.redis.redis_sentinel_master,
        ) {
            (Some(_), None) => {
                return Err(
                    "VIGIL_REDIS_SENTINELS is set but VIGIL_REDIS_SENTINEL_MASTER is not: \
                            set both to find the Redis primary through Sentinel, or neither"
                        .into(),
                );
            }
            (None, Some(_)) => {
                return Err(
                    "VIGIL_REDIS_SENTINEL_MASTER is set but VIGIL_REDIS_SENTINELS is not: \
                            set both to find the Redis primary through Sentinel, or neither"
                        .into(),
                );
            }
            _ => {}
        }
        if self.store.statement_timeout_s >= self.http.request_timeout_s {
            return Err(format!(
                "VIGIL_STATEMENT_TIMEOUT_S ({}) must be below VIGIL_REQUEST_TIMEOUT_S ({}): a \
                 request must be answerable after its statement timed out",
                self.store.statement_timeout_s, self.http.request_timeout_s
            ));
        }
        Ok(())
    }
}

impl HttpSettings {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_s)
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.body_read_timeout_s)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_s)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_s)
    }

    /// HTTP worker threads: as configured, else one per CPU.
    ///
    /// One per CPU because cached reads are served on these threads and scale with them,
    /// while ingest is bound by the batcher's own thread; the setting is for hosts where Vigil
    /// shares its cores with the database and should leave it room.
    pub fn worker_threads(&self) -> usize {
        self.worker_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            |threads| threads as usize,
        )
    }
}

impl StoreSettings {
    /// The embedded database's directory: `VIGIL_DATA_DIR`, else `$XDG_DATA_HOME/vigil`,
    /// else `$HOME/.local/share/vigil`. Never relative to the current directory unless the
    /// user gave a relative `VIGIL_DATA_DIR`.
    pub fn resolved_data_dir(&self) -> Result<PathBuf, String> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        default_data_dir(
            std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
            std::env::var_os("HOME").map(PathBuf::from),
        )
    }

    pub fn statement_timeout(&self) -> Duration {
        Duration::from_secs(self.statement_timeout_s)
    }

    pub fn database_wait(&self) -> Duration {
        Duration::from_secs(self.database_wait_s)
    }
}

impl RedisSettings {
    /// Whether Redis serves the cache and the broadcast: `REDIS_URL` or Sentinel is set.
    pub fn uses_redis(&self) -> bool {
        self.redis_url.is_some() || self.redis_sentinels.is_some()
    }

    /// The setting that names Redis, for the start-up lines: `VIGIL_REDIS_SENTINELS` or
    /// `REDIS_URL`.
    pub fn redis_setting(&self) -> &'static str {
        if self.redis_sentinels.is_some() {
            "VIGIL_REDIS_SENTINELS"
        } else {
            "REDIS_URL"
        }
    }
}

impl WsSettings {
    pub fn ws_ping_interval(&self) -> Duration {
        Duration::from_secs(self.ws_ping_interval_s)
    }
}

impl SecuritySettings {
    /// The rules these settings set, for [`Security::new`](crate::security::Security::new).
    pub fn rules(&self) -> Rules {
        Rules {
            ingest_tokens: self.ingest_tokens.clone(),
            read_tokens: self.read_tokens.clone(),
            cors_origins: self.cors_origins.clone(),
            ws_origins: self.ws_origins.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
            ingest_rate_per_token: self.ingest_rate_per_token,
            ingest_rate_per_addr: self.ingest_rate_per_addr,
            ingest_rate_burst: self.ingest_rate_burst,
            ws_max_clients_per_addr: self.ws_max_clients_per_addr,
        }
    }
}

impl RetentionSettings {
    /// The retention period, if retention is on.
    pub fn period(&self) -> Option<Duration> {
        self.retention.filter(|period| !period.is_zero())
    }
}

impl ShutdownSettings {
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_s)
    }

    pub fn drain_delay(&self) -> Duration {
        Duration::from_secs(self.drain_delay_s)
    }
}

/// The default data directory. Per the XDG base directory spec, an unset, empty or
/// relative `XDG_DATA_HOME` is ignored.
fn default_data_dir(
    xdg_data_home: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Result<PathBuf, String> {
    if let Some(xdg) = xdg_data_home.filter(|dir| dir.is_absolute()) {
        return Ok(xdg.join("vigil"));
    }
    if let Some(home) = home.filter(|dir| dir.is_absolute()) {
        return Ok(home.join(".local/share/vigil"));
    }
    Err(
        "neither XDG_DATA_HOME nor HOME is set: set VIGIL_DATA_DIR to the directory of the \
         embedded database, or DATABASE_URL to mysql://… or sqlite://…"
            .into(),
    )
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let optional = |value: Option<String>| value.unwrap_or_else(|| "(unset)".into());
        write!(
            f,
            "addr={} database_url={} redis_url={} redis_sentinels={} redis_sentinel_master={} \
             data_dir={} redis_recent_key={} \
             redis_channel={} recent_size={} max_body_bytes={} max_bulk_events={} \
             queue_events={} batch_max_rows={} batch_max_bytes={} shutdown_timeout_s={} \
             max_connections={} header_read_timeout_s={} body_read_timeout_s={} write_timeout_s={} \
             request_timeout_s={} \
             statement_timeout_s={} database_wait_s={} ws_client_queue={} \
             ws_resume_max={} ws_ping_interval_s={} ws_max_clients={} worker_threads={} \
             metrics_addr={} drain_delay_s={} retention={} idempotency_ttl={} ingest_tokens={} \
             read_tokens={} \
             cors_origins={} ws_origins={} ingest_rate_per_token={} ingest_rate_per_addr={} \
             ingest_rate_burst={} ws_max_clients_per_addr={} trusted_proxies={} log_format={}",
            self.http.addr,
            optional(self.store.database_url.as_ref().map(ToString::to_string)),
            optional(self.redis.redis_url.as_ref().map(ToString::to_string)),
            optional(self.redis.redis_sentinels.as_ref().map(ToString::to_string)),
            optional(self.redis.redis_sentinel_master.clone()),
            optional(
                self.store
                    .data_dir
                    .as_ref()
                    .map(|p| p.display().to_string())
            ),
            self.redis.redis_recent_key,
            self.redis.redis_channel,
            self.redis.recent_size,
            self.http.max_body_bytes,
            self.http.max_bulk_events,
            self.ingest.queue_events,
            self.ingest.batch_max_rows,
            self.ingest.batch_max_bytes,
            self.shutdown.shutdown_timeout_s,
            self.http.max_connections,
            self.http.header_read_timeout_s,
            self.http.body_read_timeout_s,
            self.http.write_timeout_s,
            self.http.request_timeout_s,
            self.store.statement_timeout_s,
            self.store.database_wait_s,
            self.ws.ws_client_queue,
            self.ws.ws_resume_max,
            self.ws.ws_ping_interval_s,
            self.ws.ws_max_clients,
            self.http.worker_threads(),
            optional(self.telemetry.metrics_addr.map(|addr| addr.to_string())),
            self.shutdown.drain_delay_s,
            optional(self.retention.period().map(readable_duration)),
            readable_duration(self.retention.idempotency_ttl),
            optional(
                self.security
                    .ingest_tokens
                    .as_ref()
                    .map(ToString::to_string)
            ),
            optional(self.security.read_tokens.as_ref().map(ToString::to_string)),
            optional(self.security.cors_origins.as_ref().map(ToString::to_string)),
            optional(self.security.ws_origins.as_ref().map(ToString::to_string)),
            optional(
                self.security
                    .ingest_rate_per_token
                    .map(|rate| rate.to_string())
            ),
            optional(
                self.security
                    .ingest_rate_per_addr
                    .map(|rate| rate.to_string())
            ),
            optional(
                self.security
                    .ingest_rate_burst
                    .map(|burst| burst.to_string())
            ),
            self.security.ws_max_clients_per_addr,
            optional(
                self.security
                    .trusted_proxies
                    .as_ref()
                    .map(ToString::to_string)
            ),
            self.telemetry.log_format.name(),
        )
    }
}

/// A duration as the settings take it: `30d`, `12h`, `15m` or `90s`.
fn readable_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0 => "0s".to_owned(),
        _ if seconds.is_multiple_of(86_400) => format!("{}d", seconds / 86_400),
        _ if seconds.is_multiple_of(3_600) => format!("{}h", seconds / 3_600),
        _ if seconds.is_multiple_of(60) => format!("{}m", seconds / 60),
        _ => format!("{seconds}s"),
    }
}

/// Parses a token list like [`Tokens::parse`], but, unlike a plain value parser, never lets
/// clap echo the value it refused: a bad token list is often a real token with a typo.
#[derive(Debug, Clone, Copy)]
struct TokensParser;

impl clap::builder::TypedValueParser for TokensParser {
    type Value = Tokens;

    fn parse_ref(
        &self,
        command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Tokens, clap::Error> {
        let name = arg.map_or_else(String::new, |arg| {
            let flag = arg
                .get_long()
                .map_or_else(String::new, |long| format!("--{long}"));
            match arg.get_env() {
                Some(env) => format!("{flag} ({})", env.to_string_lossy()),
                None => flag,
            }
        });
        let refused = |problem: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for {name}: {problem}\n"),
            )
            .with_cmd(command)
        };
        let text = value
            .to_str()
            .ok_or_else(|| refused("tokens are ASCII".into()))?;
        Tokens::parse(text).map_err(refused)
    }
}

/// A rate in requests per second: positive, finite, at most ten million.
fn parse_rate(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|rate| rate.is_finite() && *rate > 0.0 && *rate <= 10_000_000.0)
        .ok_or_else(|| "a rate in requests per second, e.g. 50 or 0.5".to_owned())
}

/// `VIGIL_REDIS_SENTINELS`: host:port entries, comma-separated.
fn parse_sentinels(text: &str) -> Result<SentinelAddrs, String> {
    text.parse().map_err(|problem| {
        format!("VIGIL_REDIS_SENTINELS lists sentinels as host:port,host:port: {problem}")
    })
}

/// `VIGIL_REDIS_SENTINEL_MASTER`: the name the sentinels monitor the primary under.
fn parse_sentinel_master(text: &str) -> Result<String, String> {
    vigil_bus::check_master_name(text)
        .map(|()| text.to_owned())
        .map_err(|problem| format!("VIGIL_REDIS_SENTINEL_MASTER: {problem}"))
}

/// `VIGIL_RETENTION`: a period (see [`crate::retention::parse_period`]); `off` is zero.
fn parse_retention(text: &str) -> Result<Duration, String> {
    crate::retention::parse_period(text).map(Option::unwrap_or_default)
}

/// `VIGIL_IDEMPOTENCY_TTL`: a duration of at least one second.
fn parse_idempotency_ttl(text: &str) -> Result<Duration, String> {
    crate::retention::parse_duration(text, 1)
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
            // Unencoded `/`, `#`, `?` in the password: hidden all the same.
            (
                "mysql://vigil:pa/ss-Pa55@127.0.0.1:1/vigil",
                "mysql://vigil:***@127.0.0.1:1/vigil",
            ),
            (
                "mysql://vigil:p#a?s/s@db/vigil?ssl-mode=REQUIRED",
                "mysql://vigil:***@db/vigil?ssl-mode=REQUIRED",
            ),
            ("mysql://db:3306/vigil?user=a@b", "mysql://db:***@b"),
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
            "--ingest-tokens",
            "ingest-secret-0123456789,other-ingest-secret-0123",
            "--read-tokens",
            "read-secret-0123456789",
        ])
        .unwrap();
        let shown = format!("{config} {config:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("t0ken") && !shown.contains("secret-"),
            "{shown}"
        );
        assert!(shown.contains("ingest_tokens=<2 tokens>"), "{shown}");
    }

    #[test]
    fn a_refused_token_is_not_echoed() {
        let error = Config::try_parse_from(["vigil", "--ingest-tokens", "secret+with+plus+signs"])
            .unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let shown = error.to_string();
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("VIGIL_INGEST_TOKENS"), "{shown}");
    }

    #[test]
    fn the_data_dir_defaults_to_xdg_then_home() {
        let xdg = Some(PathBuf::from("/xdg"));
        let home = Some(PathBuf::from("/home/u"));
        assert_eq!(
            default_data_dir(xdg.clone(), home.clone()),
            Ok(PathBuf::from("/xdg/vigil"))
        );
        assert_eq!(
            default_data_dir(Some(PathBuf::from("relative")), home.clone()),
            Ok(PathBuf::from("/home/u/.local/share/vigil"))
        );
        assert_eq!(
            default_data_dir(None, home),
            Ok(PathBuf::from("/home/u/.local/share/vigil"))
        );
        let error = default_data_dir(None, None).unwrap_err();
        assert!(error.contains("VIGIL_DATA_DIR"), "{error}");
        let given = Config::try_parse_from(["vigil", "--data-dir", "/data"]).unwrap();
        assert_eq!(given.store.resolved_data_dir(), Ok(PathBuf::from("/data")));
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
            ["vigil", "--metrics-addr", "9100"],
            ["vigil", "--drain-delay-s", "601"],
            ["vigil", "--ingest-tokens", "too-short"],
            ["vigil", "--read-tokens", "has a space in it, sadly"],
            ["vigil", "--cors-origins", "app.example.com"],
            ["vigil", "--ws-origins", "https://a.test/"],
            ["vigil", "--trusted-proxies", "10.0.0.0/40"],
            ["vigil", "--ingest-rate-per-addr", "0"],
            ["vigil", "--ingest-rate-per-token", "NaN"],
            ["vigil", "--redis-sentinels", "sentinel-without-port"],
            ["vigil", "--redis-sentinel-master", "two words"],
        ] {
            assert!(Config::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn sentinel_settings_come_in_pairs_and_name_the_missing_variable() {
        let parse = |args: &[&str]| {
            let mut all = vec!["vigil"];
            all.extend_from_slice(args);
            Config::try_parse_from(all).unwrap()
        };
        let only_sentinels = parse(&["--redis-sentinels", "10.0.0.5:26379,10.0.0.6:26379"]);
        let problem = only_sentinels.check_combinations().unwrap_err();
        assert!(problem.contains("VIGIL_REDIS_SENTINEL_MASTER"), "{problem}");
        let only_master = parse(&["--redis-sentinel-master", "mymaster"]);
        let problem = only_master.check_combinations().unwrap_err();
        assert!(problem.contains("VIGIL_REDIS_SENTINELS"), "{problem}");

        let both = parse(&[
            "--redis-sentinels",
            "10.0.0.5:26379",
            "--redis-sentinel-master",
            "mymaster",
            "--redis-url",
            "redis://:s3cret@ignored:6379/2",
        ]);
        assert!(both.check_combinations().is_ok());
        assert!(both.redis.uses_redis());
        assert_eq!(both.redis.redis_setting(), "VIGIL_REDIS_SENTINELS");
        let shown = both.to_string();
        assert!(shown.contains("redis_sentinels=10.0.0.5:26379"), "{shown}");
        assert!(shown.contains("redis_sentinel_master=mymaster"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");

        let error =
            Config::from_args(["vigil", "--redis-sentinel-master", "mymaster"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(
            error.to_string().contains("VIGIL_REDIS_SENTINELS"),
            "{error}"
        );
        let error = Config::try_parse_from(["vigil", "--redis-sentinels", "nowhere"]).unwrap_err();
        assert!(
            error.to_string().contains("VIGIL_REDIS_SENTINELS"),
            "{error}"
        );
        assert!(!parse(&[]).redis.uses_redis());
    }
}
