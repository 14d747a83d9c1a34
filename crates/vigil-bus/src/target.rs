//! Where Vigil's Redis is: one server (`REDIS_URL`), or whichever server Redis Sentinel names
//! primary (`VIGIL_REDIS_SENTINELS` + `VIGIL_REDIS_SENTINEL_MASTER`).
//!
//! Everything in Vigil that talks to Redis reaches it through a [`RedisTarget`]: the
//! publisher's and the cache's connections (`link.rs`), the readiness ping, and the realtime
//! bridge's subscription ([`RedisTarget::subscribe`]). With Sentinel they all follow the
//! primary across a failover, because none of them keeps an address of its own:
//!
//! - the target asks the sentinels which server is primary (redis-rs's `Sentinel`: each
//!   sentinel in turn until one names a primary that is not down and confirms it with `ROLE`),
//!   one lookup at a time, and remembers the answer;
//! - a failed command makes it ask again, in the background and at most every
//!   [`LOOKUP_MIN_INTERVAL`], and every subscription attempt asks again; when the answer names
//!   another server, each link drops its connection to the old one and opens one to the new
//!   one ([`Primary::generation`] says which primary a connection was opened to).
//!
//! A lookup never delays an ack: publishing only queues, and reads fall back to the database
//! within their deadline. While no primary answers (the seconds of a failover) Redis is simply
//! down for Vigil, with the usual consequences: the publisher drops and marks a gap, page-1
//! reads miss, and the bridge reads new events from the database until it is subscribed again.
//!
//! The data nodes are reached with `REDIS_URL`'s scheme (`rediss://` is TLS), user, password
//! and database number; its host and port are not used, since the sentinels name the server.
//! Sentinels themselves are asked without credentials or TLS.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{ConnectionAddr, TlsMode};

use crate::BusError;

/// Bound on one lookup of the primary: asking the sentinels (at most three at once, each
/// connection attempt bounded by redis-rs's one second) and checking the named server's role.
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(2);

/// A lookup answered less than this long ago is reused: a burst of failing commands (every
/// page-1 read while the primary is down) costs one lookup, not one each. Short against a
/// failover (seconds), so the new primary is found soon after the sentinels name it.
pub const LOOKUP_MIN_INTERVAL: Duration = Duration::from_millis(200);

/// The generation of the first primary Sentinel names, and for good of a target's one server
/// without Sentinel.
const FIRST_GENERATION: u64 = 1;

/// The Redis primary a link connects to: a client for it and which one it is. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Primary {
    /// Connects to the primary.
    pub(crate) client: redis::Client,
    /// Grows by one each time the sentinels name a different server (always 1 without
    /// Sentinel): a link whose connection was opened to an older generation opens a new one.
    pub(crate) generation: u64,
}

impl Primary {
    /// The one server of a target without Sentinel.
    fn fixed(client: &redis::Client) -> Primary {
        Primary {
            client: client.clone(),
            generation: FIRST_GENERATION,
        }
    }
}

/// Where Redis is, and the primary found there. Cheap to clone: clones share the lookups.
#[derive(Clone)]
pub struct RedisTarget {
    inner: Arc<Target>,
}

#[expect(
    clippy::large_enum_variant,
    reason = "one per process, allocated once behind an Arc"
)]
enum Target {
    /// One server, always the same.
    Direct {
        client: redis::Client,
        /// `redis at host:port`, for logs (never the password).
        description: String,
    },
    /// The primary the sentinels name.
    Sentinel(SentinelTarget),
}

struct SentinelTarget {
    /// The name the sentinels monitor the primary under.
    master: String,
    /// How to reach the data nodes: `REDIS_URL`'s credentials, database and TLS.
    node: SentinelNodeConnectionInfo,
    /// `primary "name" via sentinels a:1,b:2`, for logs.
    description: String,
    /// redis-rs's sentinel client (it keeps a connection to each sentinel); the lock makes
    /// lookups one at a time, and callers arriving during one share its answer.
    sentinel: tokio::sync::Mutex<Sentinel>,
    /// The last answer.
    known: Mutex<Known>,
    /// A background lookup is under way.
    refreshing: AtomicBool,
}

#[derive(Default)]
struct Known {
    /// The primary last named.
    primary: Option<Primary>,
    /// When the last lookup ended, successful or not.
    looked_up_at: Option<Instant>,
}

impl RedisTarget {
    /// The one Redis at `redis_url` (`redis://`, or `rediss://` for TLS).
    pub fn direct(redis_url: &str) -> Result<RedisTarget, BusError> {
        let client = open_client(redis_url)?;
        let description = format!("redis at {}", client.get_connection_info().addr());
        Ok(RedisTarget {
            inner: Arc::new(Target::Direct {
                client,
                description,
            }),
        })
    }

    /// The primary that `sentinels` name `master`. `data_url`, when given, supplies the
    /// scheme, user, password and database used on the data nodes (its host and port are not
    /// used); without it they are plain `redis://`, database 0, no password. Nothing is
    /// asked yet: the first use looks the primary up.
    pub fn sentinel(
        sentinels: &SentinelAddrs,
        master: &str,
        data_url: Option<&str>,
    ) -> Result<RedisTarget, BusError> {
        if sentinels.0.is_empty() {
            return Err(BusError::InvalidSentinels("no sentinel is listed".into()));
        }
        check_master_name(master).map_err(BusError::InvalidSentinels)?;
        let mut node = SentinelNodeConnectionInfo::default();
        if let Some(data_url) = data_url {
            let info = open_client(data_url)?.get_connection_info().clone();
            node = node.set_redis_connection_info(info.redis_settings().clone());
            match info.addr() {
                ConnectionAddr::TcpTls { insecure, .. } => {
                    node = node.set_tls_mode(if *insecure {
                        TlsMode::Insecure
                    } else {
                        TlsMode::Secure
                    });
                }
                ConnectionAddr::Tcp(..) => {}
                _ => {
                    return Err(BusError::InvalidSentinels(
                        "with sentinels, REDIS_URL must be redis:// or rediss://".into(),
                    ));
                }
            }
        }
        let urls: Vec<String> = sentinels
            .0
            .iter()
            .map(|sentinel| format!("redis://{sentinel}"))
            .collect();
        let sentinel = Sentinel::build(urls).map_err(|error| BusError::invalid_url(&error))?;
        Ok(RedisTarget {
            inner: Arc::new(Target::Sentinel(SentinelTarget {
                description: format!("primary \"{master}\" via sentinels {sentinels}"),
                master: master.to_owned(),
                node,
                sentinel: tokio::sync::Mutex::new(sentinel),
                known: Mutex::new(Known::default()),
                refreshing: AtomicBool::new(false),
            })),
        })
    }

    /// What this target is, for logs; never holds a password.
    pub fn description(&self) -> &str {
        match &*self.inner {
            Target::Direct { description, .. } => description,
            Target::Sentinel(target) => &target.description,
        }
    }

    /// Whether the primary is found through Sentinel.
    pub fn uses_sentinel(&self) -> bool {
        matches!(&*self.inner, Target::Sentinel(_))
    }

    /// The primary's address as last known (`host:port`), for logs and tests; `None` while
    /// no lookup has succeeded.
    pub fn known_primary_addr(&self) -> Option<String> {
        self.known()
            .map(|primary| primary.client.get_connection_info().addr().to_string())
    }

    /// Subscribes to `channels` on the primary, looking it up first (at most
    /// [`LOOKUP_MIN_INTERVAL`] stale). The realtime bridge calls this on every (re)connection,
    /// so that after a failover it subscribes on the new primary.
    pub async fn subscribe(&self, channels: &[&str]) -> Result<redis::aio::PubSub, BusError> {
        let subscribed = async {
            let primary = self.primary().await?;
            let mut pubsub = primary.client.get_async_pubsub().await?;
            pubsub.subscribe(channels).await?;
            Ok(pubsub)
        }
        .await;
        if subscribed.is_err() {
            self.refresh_soon();
        }
        subscribed
    }

    /// Which primary was last looked up ([`Primary::generation`]), without asking anyone.
    pub(crate) fn known_generation(&self) -> Option<u64> {
        match &*self.inner {
            Target::Direct { .. } => Some(FIRST_GENERATION),
            Target::Sentinel(target) => lock(&target.known)
                .primary
                .as_ref()
                .map(|primary| primary.generation),
        }
    }

    /// The primary as last looked up, without asking anyone.
    pub(crate) fn known(&self) -> Option<Primary> {
        match &*self.inner {
            Target::Direct { client, .. } => Some(Primary::fixed(client)),
            Target::Sentinel(target) => lock(&target.known).primary.clone(),
        }
    }

    /// The primary, asking the sentinels unless a lookup ended less than
    /// [`LOOKUP_MIN_INTERVAL`] ago (then its answer, if it found one). Bounded by
    /// [`LOOKUP_DEADLINE`] plus the wait for a lookup already under way.
    pub(crate) async fn primary(&self) -> Result<Primary, BusError> {
        let target = match &*self.inner {
            Target::Direct { client, .. } => return Ok(Primary::fixed(client)),
            Target::Sentinel(target) => target,
        };
        let mut sentinel = target.sentinel.lock().await;
        {
            let known = lock(&target.known);
            if let Some(looked_up_at) = known.looked_up_at
                && looked_up_at.elapsed() < LOOKUP_MIN_INTERVAL
            {
                return known.primary.clone().ok_or(BusError::NoPrimary);
            }
        }
        let found = within(
            LOOKUP_DEADLINE,
            sentinel.async_master_for(&target.master, Some(&target.node)),
        )
        .await;
        drop(sentinel);
        let mut known = lock(&target.known);
        known.looked_up_at = Some(Instant::now());
        let client = found?;
        let address = client.get_connection_info().addr().clone();
        let generation = match &known.primary {
            Some(old) if *old.client.get_connection_info().addr() == address => old.generation,
            Some(old) => {
                tracing::warn!(
                    master = target.master,
                    old = %old.client.get_connection_info().addr(),
                    new = %address,
                    "redis sentinel names a new primary; reconnecting to it"
                );
                old.generation + 1
            }
            None => {
                tracing::info!(
                    master = target.master,
                    primary = %address,
                    "redis sentinel names the primary"
                );
                FIRST_GENERATION
            }
        };
        let primary = Primary { client, generation };
        known.primary = Some(primary.clone());
        Ok(primary)
    }

    /// After a failed command: looks the primary up again in the background (one lookup at a
    /// time), so that the next command goes to a new primary if there is one. No-op without
    /// Sentinel, or outside a tokio runtime.
    pub(crate) fn refresh_soon(&self) {
        let Target::Sentinel(target) = &*self.inner else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if target.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        runtime.spawn(async move {
            if let Err(error) = this.primary().await {
                tracing::debug!(%error, "redis sentinel lookup failed");
            }
            if let Target::Sentinel(target) = &*this.inner {
                target.refreshing.store(false, Ordering::Release);
            }
        });
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.description())
    }
}

/// The sentinels to ask (`VIGIL_REDIS_SENTINELS`): `host:port` entries separated by commas,
/// an IPv6 address in brackets (`[fd00::1]:26379`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelAddrs(pub Vec<SentinelAddr>);

/// One sentinel's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelAddr {
    host: String,
    port: u16,
}

impl FromStr for SentinelAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!(
                "`{text}` has no port (host:port, e.g. 10.0.0.5:26379)"
            ));
        };
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| format!("`{text}` has no valid port (1-65535)"))?;
        let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
        if host.is_empty()
            || (host.contains(':') && !bracketed)
            || host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "/@?#,".contains(c))
        {
            return Err(format!(
                "`{text}` is not host:port (an IPv6 address goes in brackets: [fd00::1]:26379)"
            ));
        }
        Ok(SentinelAddr {
            host: host.to_owned(),
            port,
        })
    }
}

impl FromStr for SentinelAddrs {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let sentinels = text
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<SentinelAddr>, String>>()?;
        Ok(SentinelAddrs(sentinels))
    }
}

impl fmt::Display for SentinelAddr {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}", self.host, self.port)
    }
}

impl fmt::Display for SentinelAddrs {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, sentinel) in self.0.iter().enumerate() {
            if index > 0 {
                formatter.write_str(",")?;
            }
            write!(formatter, "{sentinel}")?;
        }
        Ok(())
    }
}

/// A name the sentinels can monitor a primary under (`VIGIL_REDIS_SENTINEL_MASTER`):
/// non-empty, no spaces or control characters (Sentinel's configuration is space-separated).
pub fn check_master_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the primary's name must be non-empty, without spaces (e.g. mymaster)".into());
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding the lock; if something did, the data is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A client for `redis_url`. `rediss://` runs rustls, whose crypto provider is chosen here
/// (ring) rather than left to rustls's features: a build that unifies features with a crate
/// enabling another provider (the load tests' HTTP client brings aws-lc) would otherwise
/// panic at the first TLS connection. Installing is a no-op when a provider is already set.
pub fn open_client(redis_url: &str) -> Result<redis::Client, BusError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    redis::Client::open(redis_url).map_err(|error| BusError::invalid_url(&error))
}

/// Runs a Redis operation with a bound on its whole duration.
async fn within<T>(
    deadline: Duration,
    operation: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, BusError> {
    match tokio::time::timeout(deadline, operation).await {
        Ok(result) => result.map_err(BusError::from),
        Err(_) => Err(BusError::Timeout(deadline)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_lists_are_host_port_pairs() {
        let list: SentinelAddrs = "10.0.0.5:26379, sentinel-b:26380,[fd00::1]:26379"
            .parse()
            .unwrap();
        assert_eq!(list.0.len(), 3);
        assert_eq!(
            list.to_string(),
            "10.0.0.5:26379,sentinel-b:26380,[fd00::1]:26379"
        );
        for bad in [
            "",
            "host",
            "host:",
            "host:0",
            "host:70000",
            ":26379",
            "a:1,,b:2",
            "fd00::1:26379",
            "user@host:26379",
            "redis://host:26379",
            "two words:26379",
        ] {
            assert!(bad.parse::<SentinelAddrs>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn master_names_have_no_spaces() {
        assert!(check_master_name("mymaster").is_ok());
        assert!(check_master_name("vigil-primary.1").is_ok());
        for bad in ["", "my master", "tab\tname", "line\n"] {
            assert!(check_master_name(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn sentinel_targets_take_credentials_and_tls_from_the_url_but_not_the_host() {
        let sentinels: SentinelAddrs = "127.0.0.1:1".parse().unwrap();
        let target =
            RedisTarget::sentinel(&sentinels, "mymaster", Some("rediss://u:hunter2@ignored/3"))
                .unwrap();
        assert!(target.uses_sentinel());
        assert_eq!(
            target.description(),
            "primary \"mymaster\" via sentinels 127.0.0.1:1"
        );
        assert!(!format!("{target:?}").contains("hunter2"));
        // Nothing answers on port 1: the lookup fails, bounded, and no primary is known.
        assert!(target.primary().await.is_err());
        assert!(target.known_primary_addr().is_none());
        for bad in [
            RedisTarget::sentinel(&sentinels, "my master", None),
            RedisTarget::sentinel(&SentinelAddrs(Vec::new()), "mymaster", None),
            RedisTarget::sentinel(&sentinels, "mymaster", Some("http://x")),
        ] {
            assert!(bad.is_err());
        }
    }

    #[test]
    fn direct_targets_describe_the_address_without_the_password() {
        let target = RedisTarget::direct("redis://:hunter2@127.0.0.1:6390/2").unwrap();
        assert!(!target.uses_sentinel());
        assert_eq!(target.description(), "redis at 127.0.0.1:6390");
        assert_eq!(
            target.known_primary_addr().as_deref(),
            Some("127.0.0.1:6390")
        );
    }
}
