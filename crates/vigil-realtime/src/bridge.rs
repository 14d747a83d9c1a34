//! The Redis bridge: one subscription per instance to the channel every instance's publisher
//! writes committed events to, feeding this instance's hub.
//!
//! The subscription is kept up for the life of the server: when it drops (Redis restarted or
//! failed over, the connection cut, a health-check ping unanswered) the bridge reconnects with
//! capped exponential back-off, counting each attempt in [`BridgeStats::reconnects`] and logging
//! it with its number (at warn the first and every `WARN_EVERY_ATTEMPTS`th, so that a Redis
//! gone for hours does not flood the log). Each attempt opens a `vigil_bus::Subscription`,
//! which asks Sentinel (when configured) for the primary afresh, so after a failover the bridge
//! subscribes on the new primary; the subscription also health-checks its connection. Messages
//! arriving together are fanned out together (one hub read lock per run).
//!
//! Redis pub/sub is at-most-once, so the bridge asks the hub to **backfill** from the
//! database whenever the channel may have lost events:
//! - **while the subscription is down**, every [`POLL_INTERVAL`], from the moment of the
//!   previous poll (the first from the last moment the subscription was known alive: its last
//!   message or answered health-check ping). Connected clients thus keep receiving every
//!   committed event, read from the database, at most about one poll interval plus one read
//!   late, however long Redis stays away. Each read covers the backfill's look-back plus one
//!   interval, so reads do not grow with the outage. (A connection that dies without being
//!   reset, a partition, is noticed by the subscription's health check within
//!   `vigil_bus::HEALTH_CHECK_INTERVAL` + `HEALTH_CHECK_TIMEOUT`, 15 s; the first poll then
//!   reads from its last sign of life);
//! - once the subscription is back, one last time from the last poll (from the moment it was
//!   last alive if no poll happened), covering what was committed until it was up again;
//! - on a gap notice (`<channel>:gaps`, see `vigil_bus::BusNames::gap_channel`): a publisher,
//!   on any instance, dropped events created from then on.
//!
//! Polls and the live feed overlap freely: the hub's delivery log sends each event once (see
//! `crate::backfill` for the rates up to which that holds). While no client is connected, polls
//! only move their moment on: nobody is owed an event committed before they connected.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use vigil_bus::{RedisTarget, Subscription};
use vigil_core::UnixMillis;

use crate::hub::Hub;

/// First pause before a reconnect; doubles up to [`BACKOFF_CAP`].
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest pause between reconnects. Short: after a failover the broadcast is back about this
/// long after Sentinel names the new primary, and an attempt costs one lookup and one connect.
const BACKOFF_CAP: Duration = Duration::from_secs(1);
/// While reconnecting, one attempt in this many is logged at warn (the others at debug).
const WARN_EVERY_ATTEMPTS: u64 = 60;
/// While the subscription is down, how often the hub is asked to read new events from the
/// database: the extra delivery latency of a Redis outage is about this plus one read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Bound on connecting and subscribing.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
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
    /// Starts subscribing to `channel` (and its gap channel `gap_channel`) on `target`'s
    /// primary and feeding `hub`. Redis being down is retried in the background, while the hub
    /// reads new events from the database.
    pub fn start(target: RedisTarget, channel: String, gap_channel: String, hub: Hub) -> Bridge {
        let stats = Arc::new(BridgeStats::default());
        let (subscribed_sender, subscribed) = watch::channel(false);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            target,
            Channels {
                events: channel,
                gaps: gap_channel,
            },
            hub,
            Arc::clone(&stats),
            subscribed_sender,
            stop.clone(),
        ));
        Bridge {
            stats,
            subscribed,
            stop,
            task,
        }
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
    target: RedisTarget,
    channels: Channels,
    hub: Hub,
    stats: Arc<BridgeStats>,
    subscribed: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let started = UnixMillis::now();
    let mut backoff = BACKOFF_START;
    let mut attempt: u64 = 0;
    let mut catch_up = CatchUp::new();
    loop {
        let connecting = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe(&target, &channels));
        let Some(connected) = catch_up.alongside(&hub, &stop, connecting).await else {
            return;
        };
        let lost = match connected {
            Ok(Ok(subscription)) => {
                if let Some(from) = catch_up.end() {
                    tracing::info!(
                        attempts = attempt,
                        "redis subscription restored; backfilling what the channel missed"
                    );
                    hub.request_backfill(from.0);
                } else {
                    tracing::info!(channel = channels.events, "subscribed to the event channel");
                }
                attempt = 0;
                backoff = BACKOFF_START;
                stats.subscribed.store(true, Ordering::Relaxed);
                subscribed.send_replace(true);
                let mut subscription = subscription;
                let lost = tokio::select! {
                    () = stop.cancelled() => return,
                    lost = pump(&mut subscription, &hub, &stats) => lost,
                };
                stats.subscribed.store(false, Ordering::Relaxed);
                subscribed.send_replace(false);
                // From the last moment it was known to receive everything.
                catch_up.begin(subscription.alive_until());
                lost
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "connecting timed out".to_owned(),
        };
        // Never subscribed yet: clients can only have connected since the bridge started.
        catch_up.begin(started);
        attempt += 1;
        stats.reconnects.fetch_add(1, Ordering::Relaxed);
        if attempt == 1 || attempt.is_multiple_of(WARN_EVERY_ATTEMPTS) {
            tracing::warn!(
                attempt,
                backoff_ms = backoff.as_millis() as u64,
                error = %lost,
                "redis subscription down; reading new events from the database until it is back"
            );
        } else {
            tracing::debug!(attempt, error = %lost, "redis subscription still down");
        }
        let pause = tokio::time::sleep(backoff);
        if catch_up.alongside(&hub, &stop, pause).await.is_none() {
            return;
        }
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
}

async fn subscribe(
    target: &RedisTarget,
    channels: &Channels,
) -> Result<Subscription, vigil_bus::BusError> {
    Subscription::open(target, &channels.events, &channels.gaps).await
}

/// The database polls that stand in for the subscription while it is down (module docs).
struct CatchUp {
    /// Where the next poll reads from: the previous poll's moment (the first poll: when the
    /// subscription was last known alive). `None` while the subscription is up.
    from: Option<UnixMillis>,
    /// Paces the polls.
    ticker: tokio::time::Interval,
}

impl CatchUp {
    fn new() -> CatchUp {
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        CatchUp { from: None, ticker }
    }

    /// Starts polling, the first poll at once reading from `from`; no-op while polling.
    fn begin(&mut self, from: UnixMillis) {
        if self.from.is_none() {
            self.from = Some(from);
            self.ticker.reset_immediately();
        }
    }

    /// Stops polling; where the last backfill must read from (`None` if it was not polling).
    fn end(&mut self) -> Option<UnixMillis> {
        self.from.take()
    }

    /// One poll: asks the hub for the events created since the previous poll (less the
    /// backfill's look-back), and moves on to now. With no client connected it only moves on.
    fn poll(&mut self, hub: &Hub) {
        let Some(from) = self.from else {
            return;
        };
        let now = UnixMillis::now();
        if hub.client_count() > 0 {
            hub.request_backfill(from.0);
        }
        self.from = Some(now);
    }

    /// Runs `operation`, polling meanwhile; `None` if `stop` was cancelled first.
    async fn alongside<T>(
        &mut self,
        hub: &Hub,
        stop: &CancellationToken,
        operation: impl Future<Output = T>,
    ) -> Option<T> {
        let mut operation = std::pin::pin!(operation);
        loop {
            tokio::select! {
                () = stop.cancelled() => return None,
                output = &mut operation => return Some(output),
                _ = self.ticker.tick(), if self.from.is_some() => self.poll(hub),
            }
        }
    }
}

/// Feeds the hub until the subscription fails; returns why. The subscription keeps track of
/// the last moment it was known to be receiving (a message, an answered ping).
async fn pump(subscription: &mut Subscription, hub: &Hub, stats: &BridgeStats) -> String {
    loop {
        let delivery = match subscription.next(MAX_MESSAGES_PER_FAN_OUT).await {
            Ok(delivery) => delivery,
            Err(lost) => return lost,
        };
        stats
            .messages
            .fetch_add(delivery.len() as u64, Ordering::Relaxed);
        for from_ms in delivery.gap_notices() {
            tracing::warn!(from_ms, "a publisher dropped events; backfilling them");
            hub.request_backfill(from_ms);
        }
        // Whatever arrived together goes out under the same locks.
        hub.deliver_paced(&delivery.events()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HubSettings;
    use futures_util::FutureExt;
    use vigil_core::EventFilter;

    fn hub() -> Hub {
        Hub::new(HubSettings {
            client_queue: 16,
            max_clients: 10,
            ping_interval: Duration::from_secs(20),
        })
    }

    /// The moment the hub was asked to backfill from, if it was asked since the last look.
    fn requested(hub: &Hub) -> Option<i64> {
        hub.next_backfill().now_or_never()
    }

    #[tokio::test]
    async fn polls_read_from_the_previous_poll_and_only_while_clients_listen() {
        let hub = hub();
        let mut catch_up = CatchUp::new();
        catch_up.poll(&hub);
        assert_eq!(requested(&hub), None, "no poll while subscribed");

        let lost_at = UnixMillis(1_000);
        catch_up.begin(lost_at);
        catch_up.poll(&hub);
        assert_eq!(requested(&hub), None, "nobody listens: nothing is read");
        let skipped_at = catch_up.from.expect("polling");
        assert!(skipped_at > lost_at, "the cursor moved on all the same");

        let _client = hub.register(EventFilter::default()).unwrap();
        catch_up.poll(&hub);
        assert_eq!(requested(&hub), Some(skipped_at.0));
        let polled_at = catch_up.from.expect("polling");
        catch_up.poll(&hub);
        assert_eq!(requested(&hub), Some(polled_at.0), "from the previous poll");

        catch_up.begin(UnixMillis(5));
        assert!(
            catch_up.from.is_some_and(|from| from.0 > 5),
            "begin while polling is a no-op"
        );
        let last = catch_up.from;
        assert_eq!(
            catch_up.end(),
            last,
            "the last backfill reads from the last poll"
        );
        catch_up.poll(&hub);
        assert_eq!(requested(&hub), None, "no poll once subscribed again");
    }
}
