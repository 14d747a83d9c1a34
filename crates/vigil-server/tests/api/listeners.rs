//! WebSocket clients for the fault tests: each reads `/ws` in a task of its own, recording
//! when every event arrived, and at the end checks it received exactly the acknowledged
//! events it subscribed to, each once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::helpers::TestApp;
use crate::ws::{Received, WsClient, id_of};

/// How long clients get, once the producers stop, to have received everything.
pub const DELIVERY_BOUND: Duration = Duration::from_secs(60);

/// A WebSocket client reading in its own task; each id arrives with when it was read.
pub struct Listener {
    arrivals: tokio::sync::mpsc::UnboundedReceiver<(u64, Instant)>,
    task: tokio::task::JoinHandle<()>,
    /// Only events at this level are sent to it (`None`: all).
    level: Option<&'static str>,
}

impl Listener {
    /// Connects to `app`'s `/ws`, filtered to `level` if given.
    pub async fn connect(app: &TestApp, level: Option<&'static str>) -> Listener {
        let path = match level {
            Some(level) => format!("/ws?level={level}"),
            None => "/ws".to_owned(),
        };
        let mut client = WsClient::connect(app.addr, &path).await;
        let (sender, arrivals) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match client.next().await {
                    Received::Text(text) => {
                        if sender.send((id_of(&text), Instant::now())).is_err() {
                            return;
                        }
                    }
                    Received::Close(code, reason) => {
                        panic!("the server closed a listener: {code} {reason}")
                    }
                }
            }
        });
        Listener {
            arrivals,
            task,
            level,
        }
    }

    /// Reads until every id in `expected` arrived; panics on a duplicate, an unexpected id, or
    /// a miss after [`DELIVERY_BOUND`]. When each arrived.
    pub async fn expect_exactly(mut self, expected: &HashSet<u64>) -> HashMap<u64, Instant> {
        let deadline = tokio::time::Instant::now() + DELIVERY_BOUND;
        let mut received = HashMap::new();
        while received.len() < expected.len() {
            let (id, at) = tokio::time::timeout_at(deadline, self.arrivals.recv())
                .await
                .unwrap_or_else(|_| {
                    let missing: Vec<_> = expected
                        .iter()
                        .filter(|id| !received.contains_key(*id))
                        .take(10)
                        .collect();
                    panic!(
                        "{} of {} events never reached the {:?} client, e.g. {missing:?}",
                        expected.len() - received.len(),
                        expected.len(),
                        self.level
                    )
                })
                .expect("the client is still connected");
            assert!(expected.contains(&id), "{id} was never acknowledged");
            assert!(received.insert(id, at).is_none(), "{id} arrived twice");
        }
        self.task.abort();
        received
    }
}
