//! The operations files at the repository root, checked by what runs without a Docker engine:
//! every metric the Grafana dashboard queries is one a running Vigil exports, and
//! docker-compose.yml, the Prometheus config and Grafana's provisioning hold what they must.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value as Json;
use serde_norway::Value as Yaml;

use crate::helpers::TestApp;
use crate::metrics::scrape;

fn repo_file(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&full)
        .unwrap_or_else(|error| panic!("read {}: {error}", full.display()))
}

fn yaml(path: &str) -> Yaml {
    serde_norway::from_str(&repo_file(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// Every `expr` of every panel (rows may nest panels).
fn exprs(panels: &[Json], out: &mut Vec<String>) {
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(expr.to_owned());
            }
        }
        if let Some(nested) = panel["panels"].as_array() {
            exprs(nested, out);
        }
    }
}

/// The metric names in a PromQL expression: identifiers starting `vigil_` (label names,
/// functions and `le` never do).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("vigil_") {
        let preceded_by_identifier = rest[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        if !preceded_by_identifier {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Whether the sample name `name` belongs to a family a scrape declared (`# TYPE` names have
/// no `_total`/`_info`/`_bucket`/`_sum`/`_count` suffix in OpenMetrics).
fn exported(name: &str, families: &std::collections::BTreeMap<String, String>) -> bool {
    let suffixed = [
        ("_total", "counter"),
        ("_info", "info"),
        ("_bucket", "histogram"),
        ("_sum", "histogram"),
        ("_count", "histogram"),
    ];
    families
        .get(name)
        .is_some_and(|kind| kind == "gauge" || kind == "unknown")
        || suffixed.iter().any(|(suffix, kind)| {
            name.strip_suffix(suffix)
                .and_then(|family| families.get(family))
                .is_some_and(|declared| declared == kind)
        })
}

#[test]
fn metric_names_are_read_from_promql() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(vigil_http_request_duration_seconds_bucket[5m]))) / x_vigil_not"
        ),
        vec!["vigil_http_request_duration_seconds_bucket"]
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let dashboard: Json = serde_json::from_str(&repo_file("grafana/dashboards/vigil.json"))
        .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "vigil-overview");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut all = Vec::new();
    exprs(panels, &mut all);
    assert!(all.len() >= 15, "{all:?}");
    let used: BTreeSet<String> = all.iter().flat_map(|expr| metric_names(expr)).collect();
    for required in [
        "vigil_events_accepted_total",
        "vigil_http_request_duration_seconds_bucket",
        "vigil_batch_rows_bucket",
        "vigil_ingest_queue_depth",
        "vigil_ingest_rejected_total",
        "vigil_ws_clients",
        "vigil_ws_frames_sent_total",
        "vigil_ws_slow_consumer_drops_total",
        "vigil_cache_hits_total",
        "vigil_db_errors_total",
        "vigil_redis_errors_total",
    ] {
        assert!(used.contains(required), "the dashboard shows {required}");
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    assert!(titles.iter().any(|t| t.contains("p50 / p99")), "{titles:?}");

    let app = TestApp::spawn_with_redis(&[]).await;
    let scrape = scrape(&app).await;
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| !exported(name, &scrape.families))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not export: {missing:?}\n{}",
        scrape.text
    );
    app.stop().await.drop_database().await;
}

#[test]
fn grafana_is_provisioned_with_prometheus_and_the_dashboard_folder() {
    let datasources = yaml("grafana/provisioning/datasources/prometheus.yml");
    let source = &datasources["datasources"][0];
    assert_eq!(source["type"].as_str(), Some("prometheus"));
    assert_eq!(source["uid"].as_str(), Some("prometheus"));
    assert_eq!(source["url"].as_str(), Some("http://prometheus:9090"));

    let dashboards = yaml("grafana/provisioning/dashboards/vigil.yml");
    let provider = &dashboards["providers"][0];
    assert_eq!(provider["type"].as_str(), Some("file"));
    assert_eq!(
        provider["options"]["path"].as_str(),
        Some("/var/lib/grafana/dashboards")
    );

    let dashboard: Json =
        serde_json::from_str(&repo_file("grafana/dashboards/vigil.json")).unwrap();
    let mut uids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] != "row" {
            uids.insert(panel["datasource"]["uid"].as_str().unwrap_or("").to_owned());
        }
    }
    assert_eq!(uids, BTreeSet::from(["prometheus".to_owned()]));
}

#[test]
fn prometheus_scrapes_vigil_by_its_service_name() {
    let config = yaml("prometheus/prometheus.yml");
    let job = &config["scrape_configs"][0];
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    let targets = job["static_configs"][0]["targets"]
        .as_sequence()
        .expect("targets");
    assert_eq!(targets[0].as_str(), Some("vigil:3000"));
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    let service = &compose["services"][name];
    assert!(!service.is_null(), "service {name}");
    service
}

fn ports(service: &Yaml) -> Vec<String> {
    service["ports"]
        .as_sequence()
        .map(|ports| {
            ports
                .iter()
                .filter_map(|port| port.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn env<'a>(service: &'a Yaml, name: &str) -> &'a str {
    service["environment"][name]
        .as_str()
        .unwrap_or_else(|| panic!("environment {name}"))
}

#[test]
fn docker_compose_wires_the_services_as_documented() {
    let compose = yaml("docker-compose.yml");

    let mysql = service(&compose, "mysql");
    assert!(mysql["image"].as_str().unwrap().starts_with("mysql:8"));
    assert_eq!(ports(mysql), ["3307:3306"]);
    assert!(
        mysql["healthcheck"]["test"][1]
            .as_str()
            .unwrap()
            .contains("mysqladmin ping")
    );

    let redis = service(&compose, "redis");
    assert!(redis["image"].as_str().unwrap().starts_with("redis:7"));
    assert_eq!(ports(redis), ["6379:6379"]);
    assert!(!redis["healthcheck"]["test"].is_null());

    let vigil = service(&compose, "vigil");
    assert_eq!(vigil["build"]["dockerfile"].as_str(), Some("Dockerfile"));
    assert_eq!(ports(vigil), ["3000:3000"]);
    for dependency in ["mysql", "redis"] {
        assert_eq!(
            vigil["depends_on"][dependency]["condition"].as_str(),
            Some("service_healthy"),
            "vigil waits for {dependency} to be healthy"
        );
    }
    let database_url = env(vigil, "DATABASE_URL");
    assert!(
        database_url.starts_with("mysql://") && database_url.contains("@mysql:3306/"),
        "{database_url}"
    );
    assert_eq!(env(vigil, "REDIS_URL"), "redis://redis:6379");
    for (name, value) in vigil["environment"].as_mapping().unwrap() {
        let value = value.as_str().unwrap_or_default();
        assert!(
            !value.contains("localhost") && !value.contains("127.0.0.1"),
            "{name:?}={value}: containers reach each other by service name"
        );
    }

    // Every setting reaches the container: a user who fills .env gets what it says.
    let passed: Vec<&str> = vigil["environment"]
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(Yaml::as_str)
        .collect();
    let fixed_by_the_stack = ["VIGIL_ADDR", "VIGIL_DATA_DIR"];
    for setting in <vigil_server::config::Config as clap::CommandFactory>::command()
        .get_arguments()
        .filter_map(|argument| argument.get_env())
        .filter_map(|name| name.to_str())
        .filter(|name| !fixed_by_the_stack.contains(name))
    {
        assert!(
            passed.contains(&setting),
            "{setting} is not passed to the vigil service"
        );
    }
    let example = repo_file(".env.example");
    for line in example.lines() {
        let line = line.trim_start_matches(['#', ' ']);
        if let Some((name, _)) = line.split_once('=')
            && name.starts_with("VIGIL_")
            && !name.contains(' ')
        {
            assert!(
                passed.contains(&name),
                ".env.example offers {name}, which the vigil service never gets"
            );
        }
    }

    let prometheus = service(&compose, "prometheus");
    assert_eq!(ports(prometheus), ["9090:9090"]);
    assert!(
        prometheus["volumes"][0]
            .as_str()
            .unwrap()
            .starts_with("./prometheus/prometheus.yml:")
    );

    let grafana = service(&compose, "grafana");
    assert_eq!(ports(grafana), ["3001:3000"]);
    assert_eq!(env(grafana, "GF_AUTH_ANONYMOUS_ENABLED"), "true");
    assert_eq!(env(grafana, "GF_AUTH_ANONYMOUS_ORG_ROLE"), "Viewer");
    let volumes: Vec<&str> = grafana["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(volumes.contains(&"./grafana/provisioning:/etc/grafana/provisioning:ro"));
    assert!(volumes.contains(&"./grafana/dashboards:/var/lib/grafana/dashboards:ro"));
}

#[test]
fn the_dockerfile_builds_in_rust_and_runs_slim_as_non_root() {
    let dockerfile = repo_file("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[0].contains("rust:") && stages[0].contains(" AS build"));
    assert!(stages[1].contains("debian:") && stages[1].contains("-slim"));
    assert!(dockerfile.contains("cargo build --release --locked"));
    let user = dockerfile
        .lines()
        .rfind(|line| line.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && user != "USER 0", "{user}");
    assert!(dockerfile.contains("EXPOSE 3000"));

    let ignored = repo_file(".dockerignore");
    assert!(ignored.lines().any(|line| line == "target/"));
    let example = repo_file(".env.example");
    for setting in [
        "MYSQL_PASSWORD=",
        "VIGIL_DRAIN_DELAY_S=",
        "GRAFANA_ADMIN_PASSWORD=",
    ] {
        assert!(example.contains(setting), "{setting}");
    }
}
