//! The Redis names one deployment uses, from configuration, so that tests and deployments can
//! share a Redis without seeing each other's events.

use crate::BusError;

/// The largest page the cache rule serves from the list (`size <= 50`) plus the one extra entry
/// that tells whether more exist: the list must be able to hold that many.
pub const MIN_RECENT_SIZE: usize = 51;

/// Suffix of the gap hash's key, appended to the recent list's key (see CACHE.md).
const GAP_KEY_SUFFIX: &str = ":gap";

/// Suffix of the gap-notice channel, appended to the event channel's name.
const GAP_CHANNEL_SUFFIX: &str = ":gaps";

/// Key and channel names and the list's length: `VIGIL_REDIS_RECENT_KEY`, `VIGIL_REDIS_CHANNEL`,
/// `VIGIL_RECENT_SIZE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusNames {
    /// The list of the newest encoded events, largest id at the head (`events:recent`).
    pub recent_key: String,
    /// The channel every committed event is published on (`events:new`).
    pub channel: String,
    /// How many entries the list keeps; at least [`MIN_RECENT_SIZE`].
    pub recent_size: usize,
}

impl BusNames {
    /// The gap hash's key: `<recent_key>:gap`.
    pub fn gap_key(&self) -> String {
        format!("{}{GAP_KEY_SUFFIX}", self.recent_key)
    }

    /// The channel gap notices go out on: `<channel>:gaps`. A publisher that dropped events
    /// says so here (`{"gap":{"fromMs":N}}`, N the earliest `createdAt` it dropped), so every
    /// instance's realtime hub backfills them from the database. Kept off the event channel,
    /// whose every message is an event for the original service's subscribers.
    pub fn gap_channel(&self) -> String {
        format!("{}{GAP_CHANNEL_SUFFIX}", self.channel)
    }

    /// Checks the names can work: non-empty, and a list long enough for the cache rule.
    pub fn validate(&self) -> Result<(), BusError> {
        if self.recent_key.is_empty() {
            return Err(BusError::InvalidNames("the recent list key is empty"));
        }
        if self.channel.is_empty() {
            return Err(BusError::InvalidNames("the channel name is empty"));
        }
        if self.recent_size < MIN_RECENT_SIZE {
            return Err(BusError::InvalidNames(
                "the recent list must keep at least 51 entries",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> BusNames {
        BusNames {
            recent_key: "events:recent".to_owned(),
            channel: "events:new".to_owned(),
            recent_size: 100,
        }
    }

    #[test]
    fn default_names_are_valid() {
        assert!(names().validate().is_ok());
        assert_eq!(names().gap_key(), "events:recent:gap");
        assert_eq!(names().gap_channel(), "events:new:gaps");
    }

    #[test]
    fn list_shorter_than_the_cache_rule_needs_is_rejected() {
        let short = BusNames {
            recent_size: MIN_RECENT_SIZE - 1,
            ..names()
        };
        assert!(short.validate().is_err());
        let just_enough = BusNames {
            recent_size: MIN_RECENT_SIZE,
            ..names()
        };
        assert!(just_enough.validate().is_ok());
    }

    #[test]
    fn empty_names_are_rejected() {
        let no_key = BusNames {
            recent_key: String::new(),
            ..names()
        };
        assert!(no_key.validate().is_err());
        let no_channel = BusNames {
            channel: String::new(),
            ..names()
        };
        assert!(no_channel.validate().is_err());
    }
}
