//! The one error type of the bus. Every failure here means "Redis cannot help right now": the
//! caller answers from the database instead, and nothing acknowledged depends on it.

use std::time::Duration;

/// Why a bus operation failed. Messages never contain the Redis URL (nor its password).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The Redis URL could not be used; `reason` is the redis crate's description, which names
    /// the problem (scheme, database number, missing TLS support) but not the URL.
    #[error("invalid redis url: {reason}")]
    InvalidUrl { reason: String },
    /// The key, channel or list size cannot work.
    #[error("invalid redis bus settings: {0}")]
    InvalidNames(&'static str),
    /// Redis answered with an error, or the connection failed.
    #[error("redis command failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time (slow, hung, or still reconnecting).
    #[error("redis did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// Redis answered with something the bus cannot interpret.
    #[error("unexpected redis reply: {0}")]
    UnexpectedReply(&'static str),
    /// The sentinel settings cannot work (no sentinel listed, a bad primary name, a data-node
    /// URL that is not `redis://` or `rediss://`).
    #[error("invalid redis sentinel settings: {0}")]
    InvalidSentinels(String),
    /// The sentinels named no reachable primary at the last lookup (a failover under way, or
    /// no sentinel answering); the next lookup is at most a moment away.
    #[error("redis sentinel named no primary at the last lookup")]
    NoPrimary,
    /// A refill's ticket was taken on a primary that is no longer the primary: the list it
    /// would repair is another server's. Nothing was written; the next miss refills.
    #[error("the redis primary changed since the refill ticket was taken")]
    PrimaryChanged,
}

impl BusError {
    /// Turns a redis crate error met while parsing the URL into [`BusError::InvalidUrl`].
    pub(crate) fn invalid_url(error: &redis::RedisError) -> BusError {
        let reason = error.to_string().replace(" - InvalidClientConfig", "");
        BusError::InvalidUrl {
            reason: reason.to_lowercase(),
        }
    }
}
