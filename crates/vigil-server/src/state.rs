//! What every request handler can reach. Built once by [`crate::Application::build`].

use vigil_core::Limits;
use vigil_ingest::IngestQueue;
use vigil_store::Store;

use crate::cache::RecentCache;
use crate::config::Config;
use crate::ws::Hub;

pub struct AppState {
    pub config: Config,
    /// Validation bounds, derived from the configuration once.
    pub limits: Limits,
    /// The ingest pipeline's entrance.
    pub ingest: IngestQueue,
    /// The database, for reads (writes go through `ingest`).
    pub store: Store,
    /// The Redis recent list, when `REDIS_URL` is set.
    pub cache: Option<RecentCache>,
    /// The realtime hub behind `/ws`.
    pub hub: Hub,
}
