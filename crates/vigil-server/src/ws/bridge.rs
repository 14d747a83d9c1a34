//! The Redis bridge: one subscription per instance to the channel every instance's publisher
//! writes committed events to, feeding this instance's hub.
//!
//! The subscription is kept up for the life of the server: when it drops (Redis restarted, the
//! connection cut, a health-check ping unanswered) the bridge reconnects with capped
//! exponential back-off, logging each attempt at warn with its number and counting it in
//! [`BridgeStats::reconnects`]. Messages arriving together are fanned out together (one hub
//! read lock per run).
//!
//! Redis pub/sub is at-most-once, so the bridge asks the hub to **backfill** from the
//! database whenever the channel may have lost events:
//! - after the subscription comes back, from the last moment it was known alive (the last
//!   message or answered health-check ping), so a silently dead connection loses nothing;
//! - on a gap notice (`<channel>:gaps`, see `vigil_bus::BusNames::gap_channel`): a publisher,
//!   on any instance, dropped events created from then on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use vigil_core::UnixMillis;

use super::hub::Hub;

/// First pause before a reconnect; doubles up to [`BACKOFF_CAP`].
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Bound on connecting and subscribing.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the subscription's connection is pinged, to notice a silently dead one…
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// …and how long the answer may take.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Most messages fanned out under one hub read lock.
const MAX_MESSAGES_PER_FAN_OUT: usize = 256;

/// The bridge's counters, for metrics and tests.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// Reconnect attempts since start (the first connection is not one).
    reconnects: AtomicU64,
    /// Messages received on the channel.
    messages: AtomicU64,
    /// Whether the subscription is up now.
    subscribed: AtomicBool,
}

impl BridgeStats {
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }
}

/// The running bridge.
pub struct Bridge {
    stats: Arc<BridgeStats>,
    /// Follows whether the subscription is up.
    subscribed: watch::Receiver<bool>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Bridge {
    /// Starts subscribing to `channel` (and its gap channel `gap_channel`) at `redis_url` and
    /// feeding `hub`. Fails only on a URL the redis client cannot use; Redis being down is
    /// retried in the background.
    pub fn start(
        redis_url: &str,
        channel: String,
        gap_channel: String,
        hub: Hub,
    ) -> Result<Bridge, vigil_bus::BusError> {
        let client = vigil_bus::open_client(redis_url)?;
        let stats = Arc::new(BridgeStats::default());
        let (subscribed_sender, subscribed) = watch::channel(false);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            client,
            Channels {
                events: channel,
                gaps: gap_channel,
            },
            hub,
            Arc::clone(&stats),
            subscribed_sender,
            stop.clone(),
        ));
        Ok(Bridge {
            stats,
            subscribed,
            stop,
            task,
        })
    }

    pub fn stats(&self) -> Arc<BridgeStats> {
        Arc::clone(&self.stats)
    }

    /// Waits until the subscription is up, at most `limit`; whether it is.
    pub async fn wait_subscribed(&self, limit: Duration) -> bool {
        let mut subscribed = self.subscribed.clone();
        tokio::time::timeout(limit, subscribed.wait_for(|up| *up))
            .await
            .is_ok_and(|up| up.is_ok())
    }

    /// Unsubscribes and stops.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // A bridge dropped without `stop` (start-up failed later on) still ends its task.
        self.stop.cancel();
    }
}

/// The channels the bridge listens to.
struct Channels {
    events: String,
    gaps: String,
}

async fn run(
    client: redis::Client,
    channels: Channels,
    hub: Hub,
    stats: Arc<BridgeStats>,
    subscribed: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut backoff = BACKOFF_START;
    let mut attempt: u64 = 0;
    // When the last subscription was last known to receive everything; `None` before the first.
    let mut alive_until: Option<UnixMillis> = None;
    loop {
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            connected = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe(&client, &channels)) => connected,
        };
        let lost = match connected {
            Ok(Ok(pubsub)) => {
                if let Some(alive_until) = alive_until {
                    tracing::info!(
                        attempts = attempt,
                        "redis subscription restored; backfilling what the channel missed"
                    );
                    hub.request_backfill(alive_until.0);
                } else {
                    tracing::info!(channel = channels.events, "subscribed to the event channel");
                }
                let mut alive = UnixMillis::now();
                attempt = 0;
                backoff = BACKOFF_START;
                stats.subscribed.store(true, Ordering::Relaxed);
                subscribed.send_replace(true);
                let lost = tokio::select! {
                    () = stop.cancelled() => return,
                    lost = pump(pubsub, &channels, &hub, &stats, &mut alive) => lost,
                };
                alive_until = Some(alive);
                stats.subscribed.store(false, Ordering::Relaxed);
                subscribed.send_replace(false);
                lost
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "connecting timed out".to_owned(),
        };
        attempt += 1;
        stats.reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            attempt,
            backoff_ms = backoff.as_millis() as u64,
            error = %lost,
            "redis subscription down; reconnecting"
        );
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
}

async fn subscribe(
    client: &redis::Client,
    channels: &Channels,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub
        .subscribe(&[channels.events.as_str(), channels.gaps.as_str()])
        .await?;
    Ok(pubsub)
}

/// Feeds the hub until the subscription fails; returns why. `alive` follows the last moment
/// the subscription was known to be receiving (a message, an answered ping).
async fn pump(
    pubsub: redis::aio::PubSub,
    channels: &Channels,
    hub: &Hub,
    stats: &BridgeStats,
    alive: &mut UnixMillis,
) -> String {
    let (mut sink, mut stream) = pubsub.split();
    let mut health = tokio::time::interval(HEALTH_CHECK_INTERVAL);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    health.tick().await;
    let mut messages = Vec::with_capacity(MAX_MESSAGES_PER_FAN_OUT);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return "the connection closed".to_owned();
                };
                messages.push(message);
                // Whatever else has already arrived goes out under the same locks.
                while messages.len() < MAX_MESSAGES_PER_FAN_OUT {
                    let Some(Some(message)) = stream.next().now_or_never() else {
                        break;
                    };
                    messages.push(message);
                }
                *alive = UnixMillis::now();
                stats.messages.fetch_add(messages.len() as u64, Ordering::Relaxed);
                for message in &messages {
                    if message.get_channel_name() == channels.gaps
                        && let Some(from_ms) = vigil_bus::read_gap_notice(message.get_payload_bytes())
                    {
                        tracing::warn!(from_ms, "a publisher dropped events; backfilling them");
                        hub.request_backfill(from_ms);
                    }
                }
                let events: Vec<&[u8]> = messages
                    .iter()
                    .filter(|message| message.get_channel_name() == channels.events)
                    .map(|message| message.get_payload_bytes())
                    .collect();
                hub.deliver_paced(&events).await;
                drop(events);
                messages.clear();
            }
            _ = health.tick() => {
                let asked = UnixMillis::now();
                match tokio::time::timeout(HEALTH_CHECK_TIMEOUT, sink.ping::<redis::Value>()).await {
                    // Everything published before the ping was asked has been received.
                    Ok(Ok(_)) => *alive = (*alive).max(asked),
                    Ok(Err(error)) => return error.to_string(),
                    Err(_) => return "a health-check ping went unanswered".to_owned(),
                }
            }
        }
    }
}
