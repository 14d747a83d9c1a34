//! The event channel, read: one subscription to the channel every instance's publisher writes
//! committed events to, and to its gap channel, as a stream of message runs.
//!
//! This is all the realtime side needs to know of Redis: [`Subscription::open`] subscribes on
//! the primary (asking Sentinel afresh, when configured), [`Subscription::next`] waits for the
//! next run of messages and health-checks the connection meanwhile, and
//! [`Subscription::alive_until`] says until when the subscription is known to have received
//! everything published (its last message, or the last answered ping), which is where a
//! catch-up from the database must start once it is lost. Reconnecting, back-off and catching
//! up are the consumer's (vigil-realtime's bridge).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use redis::aio::{PubSubSink, PubSubStream};
use vigil_core::UnixMillis;

use crate::{BusError, RedisTarget, read_gap_notice};

/// How often the subscription's connection is pinged, to notice a silently dead one…
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// …and how long the answer may take.
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A live subscription to an event channel and its gap channel.
pub struct Subscription {
    sink: PubSubSink,
    stream: PubSubStream,
    events_channel: Arc<str>,
    gap_channel: Arc<str>,
    health: tokio::time::Interval,
    alive_until: UnixMillis,
}

/// One run of messages that arrived together, in arrival order.
pub struct Delivery {
    messages: Vec<redis::Msg>,
    gap_channel: Arc<str>,
}

impl Subscription {
    /// Subscribes to `events_channel` and `gap_channel` on `target`'s primary.
    pub async fn open(
        target: &RedisTarget,
        events_channel: &str,
        gap_channel: &str,
    ) -> Result<Subscription, BusError> {
        let pubsub = target.subscribe(&[events_channel, gap_channel]).await?;
        let (sink, stream) = pubsub.split();
        let mut health = tokio::time::interval(HEALTH_CHECK_INTERVAL);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        health.reset();
        Ok(Subscription {
            sink,
            stream,
            events_channel: Arc::from(events_channel),
            gap_channel: Arc::from(gap_channel),
            health,
            alive_until: UnixMillis::now(),
        })
    }

    /// Until when every message published is known to have been received: the last message,
    /// or the moment the last answered health-check ping was asked.
    pub fn alive_until(&self) -> UnixMillis {
        self.alive_until
    }

    /// Waits for the next messages, returning at most `max` that arrived together; pings the
    /// connection every [`HEALTH_CHECK_INTERVAL`] meanwhile. `Err` with the reason once the
    /// subscription is lost (closed, a ping failed or went unanswered).
    pub async fn next(&mut self, max: usize) -> Result<Delivery, String> {
        loop {
            tokio::select! {
                message = self.stream.next() => {
                    let Some(message) = message else {
                        return Err("the connection closed".to_owned());
                    };
                    let mut messages = Vec::with_capacity(max.min(64));
                    messages.push(message);
                    // Whatever else has already arrived goes out with it.
                    while messages.len() < max {
                        let Some(Some(message)) = self.stream.next().now_or_never() else {
                            break;
                        };
                        messages.push(message);
                    }
                    self.alive_until = UnixMillis::now();
                    let (events_channel, gap_channel) = (&*self.events_channel, &*self.gap_channel);
                    messages.retain(|message| {
                        let channel = message.get_channel_name();
                        channel == events_channel || channel == gap_channel
                    });
                    return Ok(Delivery {
                        messages,
                        gap_channel: Arc::clone(&self.gap_channel),
                    });
                }
                _ = self.health.tick() => {
                    let asked = UnixMillis::now();
                    let ping = self.sink.ping::<redis::Value>();
                    match tokio::time::timeout(HEALTH_CHECK_TIMEOUT, ping).await {
                        // Everything published before the ping was asked has been received.
                        Ok(Ok(_)) => self.alive_until = self.alive_until.max(asked),
                        Ok(Err(error)) => return Err(error.to_string()),
                        Err(_) => return Err("a health-check ping went unanswered".to_owned()),
                    }
                }
            }
        }
    }
}

impl Delivery {
    /// How many messages arrived (events and gap notices).
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The encoded events, in arrival (commit) order.
    pub fn events(&self) -> Vec<&[u8]> {
        self.messages
            .iter()
            .filter(|message| !self.is_gap_notice(message))
            .map(redis::Msg::get_payload_bytes)
            .collect()
    }

    /// The `createdAt` (Unix ms) of each gap notice: a publisher dropped events created from
    /// then on.
    pub fn gap_notices(&self) -> impl Iterator<Item = i64> + '_ {
        self.messages
            .iter()
            .filter(|message| self.is_gap_notice(message))
            .filter_map(|message| read_gap_notice(message.get_payload_bytes()))
    }

    fn is_gap_notice(&self, message: &redis::Msg) -> bool {
        // Only the two channels' messages are kept.
        message.get_channel_name() == &*self.gap_channel
    }
}
