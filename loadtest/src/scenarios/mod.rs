//! The goose HTTP load tests of `vigil-load`: Vigil's API as sites and dashboards use it.
//!
//! Goose owns the command line (`--host`, `--users`, `--run-time`, `--scenarios`,
//! `--throttle-requests`, `--report-file`, …); what is Vigil's own comes from environment
//! variables ([`Settings`]). Scenarios, each runnable alone (`--scenarios ingestsingle`) or
//! together with their weights:
//!
//! | scenario (`--scenarios` name) | weight | what each user does, in a loop |
//! | --- | --- | --- |
//! | `IngestSingle` (`ingestsingle`) | 1 | `POST /api/events`, one event, expects 201 |
//! | `IngestBulk` (`ingestbulk`) | 1 | `POST /api/events`, a JSON array of `VIGIL_LOAD_BULK` events, expects 201 |
//! | `ReadRecent` (`readrecent`) | 1 | `GET /api/events?page=1&size=20` (the cached page), expects 200 |
//! | `ReadFiltered` (`readfiltered`) | 1 | `GET /api/events?<VIGIL_LOAD_FILTER>&size=20` (from the database), expects 200 |
//! | `Site` (`site`) | 4 | a site: transactions weighted 70 single events : 2 bulks of 20 : 20 recent pages : 8 filtered reads |
//!
//! Weights decide how goose spreads users over the scenarios it runs. Without `--scenarios`
//! only `site` runs (the default set here); `--scenarios ingestsingle,readrecent` runs those
//! two, users split by weight.
//! Events come from [`events`]: varied sources, types, levels and payload sizes, numbered
//! across all users from one counter so every body of a run differs.

pub mod events;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use goose::prelude::*;

/// Default events per bulk request (`VIGIL_LOAD_BULK`).
pub const DEFAULT_BULK_EVENTS: usize = 100;
/// Events per bulk request in the site mix: a gateway flushing its buffer.
pub const SITE_BULK_EVENTS: usize = 20;
/// Default filter of the filtered read (`VIGIL_LOAD_FILTER`).
pub const DEFAULT_FILTER: &str = "type=GAS&level=WARN";
/// Where goose sends requests unless `--host` says otherwise.
pub const DEFAULT_HOST: &str = "http://127.0.0.1:3000";

/// Vigil's own settings, from the environment (goose owns the command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Events per bulk request in `IngestBulk` (`VIGIL_LOAD_BULK`, 1–5000).
    pub bulk_events: usize,
    /// Query string of `ReadFiltered` (`VIGIL_LOAD_FILTER`), without `size`.
    pub filter: String,
    /// Seed of the event generator (`VIGIL_LOAD_SEED`): the same seed sends the same bodies.
    pub seed: u64,
}

impl Settings {
    /// Reads the settings from `VIGIL_LOAD_*` variables, with defaults for those unset.
    pub fn from_env() -> Result<Settings, String> {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Settings::from_env`] over any lookup (tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let bulk_events = match lookup("VIGIL_LOAD_BULK") {
            None => DEFAULT_BULK_EVENTS,
            Some(text) => match text.trim().parse::<usize>() {
                Ok(n) if (1..=5000).contains(&n) => n,
                _ => return Err(format!("VIGIL_LOAD_BULK must be 1 to 5000, not {text:?}")),
            },
        };
        let filter = lookup("VIGIL_LOAD_FILTER").unwrap_or_else(|| DEFAULT_FILTER.to_owned());
        if filter.contains(['#', ' ']) || filter.split('&').any(|pair| pair.starts_with("size=")) {
            return Err(format!(
                "VIGIL_LOAD_FILTER is a query string without size, like {DEFAULT_FILTER}, not {filter:?}"
            ));
        }
        let seed = match lookup("VIGIL_LOAD_SEED") {
            None => 1,
            Some(text) => text
                .trim()
                .parse()
                .map_err(|_| format!("VIGIL_LOAD_SEED must be an integer, not {text:?}"))?,
        };
        Ok(Settings {
            bulk_events,
            filter,
            seed,
        })
    }

    /// The path of the filtered read.
    pub fn filtered_path(&self) -> String {
        if self.filter.is_empty() {
            "/api/events?size=20".to_owned()
        } else {
            format!("/api/events?{}&size=20", self.filter)
        }
    }
}

/// The settings of this process's run, set once by [`attack`] before any user starts.
static SETTINGS: OnceLock<Settings> = OnceLock::new();
/// The next event's sequence number, shared by every user.
static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);

fn settings() -> &'static Settings {
    SETTINGS.get().expect("attack() sets the settings first")
}

/// Takes `count` consecutive sequence numbers.
fn take_seqs(count: usize) -> u64 {
    NEXT_SEQ.fetch_add(count as u64, Ordering::Relaxed)
}

/// Goose with Vigil's scenarios and defaults: host [`DEFAULT_HOST`], controllers off. Goose
/// reads its own flags from the command line.
pub fn attack(settings: Settings) -> Result<GooseAttack, GooseError> {
    // A second call (tests) keeps the first settings: they are process-wide.
    let _ = SETTINGS.set(settings);
    Ok(GooseAttack::initialize()?
        .set_default(GooseDefault::Host, DEFAULT_HOST)?
        .set_default(GooseDefault::NoTelnet, true)?
        .set_default(GooseDefault::NoWebSocket, true)?
        .set_default(GooseDefault::Scenarios, "site")?
        .register_scenario(
            scenario!("IngestSingle")
                .set_weight(1)?
                .register_transaction(transaction!(ingest_single).set_name("ingest single")),
        )
        .register_scenario(
            scenario!("IngestBulk")
                .set_weight(1)?
                .register_transaction(transaction!(ingest_bulk).set_name("ingest bulk")),
        )
        .register_scenario(
            scenario!("ReadRecent")
                .set_weight(1)?
                .register_transaction(transaction!(read_recent).set_name("read recent")),
        )
        .register_scenario(
            scenario!("ReadFiltered")
                .set_weight(1)?
                .register_transaction(transaction!(read_filtered).set_name("read filtered")),
        )
        .register_scenario(
            scenario!("Site")
                .set_weight(4)?
                .register_transaction(
                    transaction!(ingest_single)
                        .set_name("ingest single")
                        .set_weight(70)?,
                )
                .register_transaction(
                    transaction!(site_bulk)
                        .set_name("ingest bulk")
                        .set_weight(2)?,
                )
                .register_transaction(
                    transaction!(read_recent)
                        .set_name("read recent")
                        .set_weight(20)?,
                )
                .register_transaction(
                    transaction!(read_filtered)
                        .set_name("read filtered")
                        .set_weight(8)?,
                ),
        ))
}

/// POSTs `body` as JSON, expecting 201; the request is reported under `name`.
async fn post_json(user: &mut GooseUser, name: &str, body: String) -> TransactionResult {
    let builder = user
        .get_request_builder(&GooseMethod::Post, "/api/events")?
        .header("content-type", "application/json")
        .body(body);
    let request = GooseRequest::builder()
        .method(GooseMethod::Post)
        .path("/api/events")
        .name(name)
        .set_request_builder(builder)
        .expect_status_code(201)
        .build();
    user.request(request).await?;
    Ok(())
}

/// GETs `path`, expecting 200, reported under `name`.
async fn get(user: &mut GooseUser, name: &str, path: &str) -> TransactionResult {
    let request = GooseRequest::builder()
        .path(path)
        .name(name)
        .expect_status_code(200)
        .build();
    user.request(request).await?;
    Ok(())
}

async fn ingest_single(user: &mut GooseUser) -> TransactionResult {
    let body = events::event_body(settings().seed, take_seqs(1));
    post_json(user, "ingest 1 event", body).await
}

async fn ingest_bulk(user: &mut GooseUser) -> TransactionResult {
    let count = settings().bulk_events;
    let body = events::bulk_body(settings().seed, take_seqs(count), count);
    let name = format!("ingest {count} events");
    post_json(user, &name, body).await
}

async fn site_bulk(user: &mut GooseUser) -> TransactionResult {
    let body = events::bulk_body(
        settings().seed,
        take_seqs(SITE_BULK_EVENTS),
        SITE_BULK_EVENTS,
    );
    post_json(user, "ingest 20 events", body).await
}

async fn read_recent(user: &mut GooseUser) -> TransactionResult {
    get(user, "recent page (size 20)", "/api/events?page=1&size=20").await
}

async fn read_filtered(user: &mut GooseUser) -> TransactionResult {
    let path = settings().filtered_path();
    get(user, "filtered page (size 20)", &path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn settings_have_defaults_and_read_the_environment() {
        let defaults = Settings::from_lookup(lookup(&[])).unwrap();
        assert_eq!(defaults.bulk_events, DEFAULT_BULK_EVENTS);
        assert_eq!(
            defaults.filtered_path(),
            "/api/events?type=GAS&level=WARN&size=20"
        );
        let set = Settings::from_lookup(lookup(&[
            ("VIGIL_LOAD_BULK", "1000"),
            ("VIGIL_LOAD_FILTER", "type=SMOKE,GAS"),
            ("VIGIL_LOAD_SEED", "9"),
        ]))
        .unwrap();
        assert_eq!(
            set,
            Settings {
                bulk_events: 1000,
                filter: "type=SMOKE,GAS".into(),
                seed: 9
            }
        );
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        for pairs in [
            [("VIGIL_LOAD_BULK", "0")],
            [("VIGIL_LOAD_BULK", "5001")],
            [("VIGIL_LOAD_BULK", "many")],
            [("VIGIL_LOAD_SEED", "x")],
            [("VIGIL_LOAD_FILTER", "type=GAS&size=5")],
        ] {
            let error = Settings::from_lookup(lookup(&pairs)).unwrap_err();
            assert!(error.contains(pairs[0].0), "{error}");
        }
    }
}
