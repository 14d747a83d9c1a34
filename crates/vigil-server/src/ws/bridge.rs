//! The Redis bridge: one subscription per instance to the channel every instance's publisher
//! writes committed events to, feeding this instance's hub.
//!
//! The subscription is kept up for the life of the server: when it drops (Redis restarted, the
//! connection cut, a health-check ping unanswered) the bridge reconnects with capped
//! exponential back-off, logging each attempt at warn with its number and counting it in
//! [`BridgeStats::reconnects`]. Messages arriving together are fanned out together (one hub
//! read lock per run). Redis pub/sub is at-most-once: what was published while the
//! subscription was down is not delivered here (backfill from the database is a later step).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
    /// Starts subscribing to `channel` at `redis_url` and feeding `hub`. Fails only on a URL
    /// the redis client cannot use; Redis being down is retried in the background.
    pub fn start(redis_url: &str, channel: String, hub: Hub) -> redis::RedisResult<Bridge> {
        let client = redis::Client::open(redis_url)?;
        let stats = Arc::new(BridgeStats::default());
        let (subscribed_sender, subscribed) = watch::channel(false);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            client,
            channel,
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

async fn run(
    client: redis::Client,
    channel: String,
    hub: Hub,
    stats: Arc<BridgeStats>,
    subscribed: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut backoff = BACKOFF_START;
    let mut attempt: u64 = 0;
    loop {
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            connected = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe(&client, &channel)) => connected,
        };
        let lost = match connected {
            Ok(Ok(pubsub)) => {
                if attempt > 0 {
                    tracing::info!(attempts = attempt, "redis subscription restored");
                } else {
                    tracing::info!(channel, "subscribed to the event channel");
                }
                attempt = 0;
                backoff = BACKOFF_START;
                stats.subscribed.store(true, Ordering::Relaxed);
                subscribed.send_replace(true);
                let lost = tokio::select! {
                    () = stop.cancelled() => return,
                    lost = pump(pubsub, &hub, &stats) => lost,
                };
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
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// Feeds the hub until the subscription fails; returns why.
async fn pump(pubsub: redis::aio::PubSub, hub: &Hub, stats: &BridgeStats) -> String {
    let (mut sink, mut stream) = pubsub.split();
    let mut health = tokio::time::interval(HEALTH_CHECK_INTERVAL);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    health.tick().await;
    let mut events = Vec::new();
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return "the connection closed".to_owned();
                };
                let mut received = 1;
                // With no client connected, nothing is parsed or framed.
                let listening = hub.client_count() > 0;
                if listening {
                    events.extend(hub.read_event(message.get_payload_bytes()));
                }
                // Whatever else has already arrived goes out under the same read lock.
                while received < MAX_MESSAGES_PER_FAN_OUT {
                    let Some(Some(message)) = stream.next().now_or_never() else {
                        break;
                    };
                    received += 1;
                    if listening {
                        events.extend(hub.read_event(message.get_payload_bytes()));
                    }
                }
                stats.messages.fetch_add(received as u64, Ordering::Relaxed);
                hub.broadcast(&events);
                events.clear();
            }
            _ = health.tick() => {
                match tokio::time::timeout(HEALTH_CHECK_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return error.to_string(),
                    Err(_) => return "a health-check ping went unanswered".to_owned(),
                }
            }
        }
    }
}
