//! What every request handler can reach. Built once by [`crate::Application::build`].

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use vigil_core::Limits;
use vigil_ingest::IngestQueue;
use vigil_store::Store;

use crate::cache::RecentCache;
use crate::config::Config;
use crate::metrics::{Exporter, Metrics};
use crate::security::Security;
use vigil_realtime::Hub;

pub struct AppState {
    pub config: Config,
    /// Tokens, origins and rate limits.
    pub security: Security,
    /// Validation bounds, derived from the configuration once.
    pub limits: Limits,
    /// The ingest pipeline's entrance.
    pub ingest: IngestQueue,
    /// The database, for reads (writes go through `ingest`).
    pub store: Store,
    /// The recent list behind the cache rule: Redis's when `REDIS_URL` is set, the
    /// in-process one in the embedded mode (SQLite, no Redis), else none.
    pub cache: Option<RecentCache>,
    /// The realtime hub behind `/ws`.
    pub hub: Hub,
    /// What the HTTP layer records for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Encodes every metric for a scrape.
    pub exporter: Arc<Exporter>,
    /// Set when graceful shutdown begins: `/api/ready` answers 503 from then on.
    pub draining: AtomicBool,
}
