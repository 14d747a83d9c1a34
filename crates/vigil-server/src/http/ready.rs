//! `GET /api/ready`: whether a load balancer should send this instance traffic.
//!
//! Ready means the database answers a trivial query within [`STORE_PING_DEADLINE`], the
//! batcher can write (`"store":"down"` while it cannot reach the database, `"settling"` while
//! it finds out whether a batch committed: posts are refused with 503 then), and the
//! process is not draining (shutdown has begun): `200 {"ready":true,"store":"up","redis":…}`.
//! Otherwise `503` with `"ready":false` and `Retry-After`, so the balancer stops sending
//! before this instance stops accepting. Redis down is degraded, not unready: ingest and
//! reads go on without it, so `"redis":"down"` still answers 200 (`"off"` without
//! `REDIS_URL`, the embedded mode's in-process list included). Liveness is `/api/health`,
//! which never looks at dependencies.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::RETRY_AFTER;
use http::{HeaderValue, Response, StatusCode};

use vigil_ingest::StoreState;

use super::{Body, json};
use crate::state::AppState;

/// How long the database gets to answer a readiness ping.
const STORE_PING_DEADLINE: Duration = Duration::from_secs(1);
/// Seconds a balancer is told to wait before asking again after a 503.
const RETRY_AFTER_S: u32 = 1;

pub async fn ready(state: &AppState) -> Response<Body> {
    let store = async {
        matches!(
            tokio::time::timeout(STORE_PING_DEADLINE, state.store.ping()).await,
            Ok(Ok(()))
        )
    };
    let redis = async {
        let answered = match &state.cache {
            Some(cache) => cache.ping_redis().await,
            None => None,
        };
        match answered {
            None => "off",
            Some(true) => "up",
            Some(false) => "down",
        }
    };
    let (store_answers, redis) = tokio::join!(store, redis);
    // The batcher's view counts too: a database that answers pings while the writer cannot
    // connect, or while a batch's outcome is being settled, refuses posts with 503.
    let store = match state.ingest.store_state() {
        StoreState::Up if store_answers => "up",
        StoreState::Settling => "settling",
        _ => "down",
    };
    let store_up = store == "up";
    let draining = state.draining.load(Ordering::Acquire);
    let ready = store_up && !draining;

    let mut body = String::with_capacity(80);
    body.push_str(if ready {
        r#"{"ready":true"#
    } else {
        r#"{"ready":false"#
    });
    body.push_str(r#","store":""#);
    body.push_str(store);
    body.push('"');
    body.push_str(r#","redis":""#);
    body.push_str(redis);
    body.push('"');
    if draining {
        body.push_str(r#","draining":true"#);
    }
    body.push('}');

    if ready {
        return json(StatusCode::OK, Bytes::from(body));
    }
    let mut response = json(StatusCode::SERVICE_UNAVAILABLE, Bytes::from(body));
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
    response
}
