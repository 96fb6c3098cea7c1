//! Operations against the running stack: every metric that the alert rules
//! (`deploy/prometheus/rules/`) and the Grafana dashboard (`deploy/grafana/dashboards/`) name is
//! one the four services expose on `/metrics` (or the output of a recording rule); every alert
//! has a summary, a description and a runbook section; and the new operational series carry
//! what they claim — consumer lag of every group, end-to-end freshness, build info, process
//! metrics, open cases per street — and the admin endpoint takes a district token.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use promql_parser::parser::{self, Expr};
use serde_json::{json, Value};

use crate::app::{spawn_app, TestApp};
use crate::geometry::{interior_point, load_grids};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every metric name a PromQL expression selects.
fn selected_metrics(expr: &Expr, out: &mut BTreeSet<String>) {
    match expr {
        Expr::VectorSelector(vs) => {
            out.insert(
                vs.name
                    .clone()
                    .unwrap_or_else(|| panic!("a selector without a metric name: {vs}")),
            );
        }
        Expr::MatrixSelector(ms) => selected_metrics(&Expr::VectorSelector(ms.vs.clone()), out),
        Expr::Aggregate(a) => {
            selected_metrics(&a.expr, out);
            if let Some(p) = &a.param {
                selected_metrics(p, out);
            }
        }
        Expr::Unary(u) => selected_metrics(&u.expr, out),
        Expr::Binary(b) => {
            selected_metrics(&b.lhs, out);
            selected_metrics(&b.rhs, out);
        }
        Expr::Paren(p) => selected_metrics(&p.expr, out),
        Expr::Subquery(s) => selected_metrics(&s.expr, out),
        Expr::Call(c) => {
            for a in &c.args.args {
                selected_metrics(a, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Grafana's interval variables, as Prometheus would see them.
fn without_grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
}

struct Rules {
    /// (where, expression) of every rule.
    exprs: Vec<(String, String)>,
    recorded: BTreeSet<String>,
    /// alert name → annotations.
    alerts: BTreeMap<String, BTreeMap<String, String>>,
}

fn load_rules() -> Rules {
    let mut rules = Rules {
        exprs: Vec::new(),
        recorded: BTreeSet::new(),
        alerts: BTreeMap::new(),
    };
    let dir = repo().join("deploy/prometheus/rules");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no rule files in {}", dir.display());
    for file in files {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for group in doc["groups"].as_sequence().unwrap() {
            for rule in group["rules"].as_sequence().unwrap() {
                let expr = rule["expr"].as_str().unwrap().to_owned();
                if let Some(name) = rule["record"].as_str() {
                    rules.recorded.insert(name.to_owned());
                    rules.exprs.push((format!("record {name}"), expr));
                } else {
                    let name = rule["alert"].as_str().unwrap().to_owned();
                    let annotations = rule["annotations"]
                        .as_mapping()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| {
                                    (
                                        k.as_str().unwrap().to_owned(),
                                        v.as_str().unwrap().to_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    rules.exprs.push((format!("alert {name}"), expr));
                    rules.alerts.insert(name, annotations);
                }
            }
        }
    }
    rules
}

/// (panel title, expression) of every query of every dashboard.
fn dashboard_exprs() -> Vec<(String, String)> {
    let dir = repo().join("deploy/grafana/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let dash: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let mut panels: Vec<&Value> = Vec::new();
        for p in dash["panels"].as_array().unwrap() {
            panels.push(p);
            panels.extend(p["panels"].as_array().into_iter().flatten());
        }
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((
                    format!("{}: {}", path.display(), p["title"].as_str().unwrap_or("")),
                    t["expr"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    assert!(out.len() > 20, "dashboards hold only {} queries", out.len());
    out
}

/// The metric names of a scrape: families from `# TYPE` lines, with the series a histogram or
/// summary family is queried by.
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        names.insert(name.to_owned());
        if kind == "histogram" || kind == "summary" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

/// Value of the sample `series` (name with labels, as exposed) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn scrape(app: &TestApp, base: &str) -> String {
    let r = app
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{base}/metrics");
    r.text().await.unwrap()
}

async fn scrape_all(app: &TestApp) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    for (name, base) in [
        ("ingest", &app.ingest_url),
        ("enrich", &app.enrich_url),
        ("sink", &app.sink_url),
        ("dashboard-api", &app.dashboard_url),
    ] {
        out.insert(name, scrape(app, base).await);
    }
    out
}

#[test]
fn every_alert_has_a_summary_a_description_and_a_runbook_section() {
    let rules = load_rules();
    let runbook = std::fs::read_to_string(repo().join("deploy/RUNBOOK.md")).unwrap();
    let headings: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    assert!(rules.alerts.len() >= 10, "{:?}", rules.alerts.keys());
    for (name, annotations) in &rules.alerts {
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                annotations.get(key).is_some_and(|v| !v.trim().is_empty()),
                "alert {name} has no {key}"
            );
        }
        let anchor = annotations["runbook_url"]
            .rsplit_once('#')
            .map(|(_, a)| a.to_owned())
            .unwrap_or_default();
        assert_eq!(anchor, name.to_lowercase(), "runbook_url of {name}");
        assert!(
            headings.contains(&anchor),
            "deploy/RUNBOOK.md has no section `## {name}`"
        );
    }
    // every alert has a unit test that fires it and one that expects it silent
    let tests =
        std::fs::read_to_string(repo().join("deploy/prometheus/tests/alerts_test.yml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&tests).unwrap();
    let mut fired = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for t in doc["tests"].as_sequence().unwrap() {
        for case in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            if case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| a.is_empty())
            {
                silent.insert(name);
            } else {
                fired.insert(name);
            }
        }
    }
    for name in rules.alerts.keys() {
        assert!(fired.contains(name), "no promtool case fires {name}");
        assert!(
            silent.contains(name),
            "no promtool case keeps {name} silent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rules_and_dashboards_name_only_metrics_the_services_expose() {
    let app = spawn_app().await;
    // The sink is ready once its migrations ran: reads of the clue before that are refused.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !app
        .http
        .get(format!("{}/readyz", app.sink_url))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "the sink never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Traffic that makes the labelled series exist: a report, a refused request, an accepted
    // case, and a read of the dashboard.
    let grids = load_grids();
    let g = &grids[0];
    let p = interior_point(g);
    let r = app
        .post_clue(
            &json!({"category": "manhole_cover", "lat": p.y(), "lon": p.x(), "description": "ops"}),
            "ops-1",
        )
        .await;
    assert_eq!(r.status(), 202);
    let clue = r.json::<Value>().await.unwrap()["clue_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = app
        .post_clue(
            &json!({"category": "manhole_cover", "lat": 95.0, "lon": 0.0}),
            "ops-2",
        )
        .await;
    assert!(refused.status().is_client_error());
    app.clue_view(&clue).await;
    let office = app.street_tokens[g.street_code.as_str()].clone();
    let (status, body) = app
        .transition(&office, &clue, json!({"action": "accept"}), None)
        .await;
    assert_eq!(status, 200, "{body:#}");
    app.summary().await;

    // Wait for the periodic series: lag of every group, the case gauges showing the accepted
    // case, both facts (report, accept) measured end to end.
    let street = &g.street_code;
    let open_series = format!("gridclue_dashboard_open_cases{{street=\"{street}\"}}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let scrapes = loop {
        let s = scrape_all(&app).await;
        let groups_seen = ["gridclue-enrich", "gridclue-enrich-dedupe"]
            .iter()
            .all(|g| {
                s["enrich"].contains(&format!(
                    "gridclue_enrich_consumer_lag_messages{{group=\"{g}\""
                ))
            })
            && s["sink"].contains("gridclue_sink_consumer_lag_messages{group=\"gridclue-sink\"");
        let measured = sample(
            &s["sink"],
            "gridclue_sink_end_to_end_freshness_seconds_count",
        )
        .is_some_and(|c| c >= 2.0);
        let open = sample(&s["dashboard-api"], &open_series) == Some(1.0);
        if groups_seen && measured && open {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "lag of every group {groups_seen}, freshness measured {measured}, open case {open}:\n{}\n{}",
            s["sink"],
            s["dashboard-api"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let mut exposed: BTreeSet<String> = BTreeSet::new();
    for (service, text) in &scrapes {
        let names = exposed_names(text);
        for common in [
            "gridclue_build_info",
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
        ] {
            assert!(names.contains(common), "{service} does not expose {common}");
        }
        let commit_line = text
            .lines()
            .find(|l| l.starts_with("gridclue_build_info{"))
            .unwrap();
        assert!(
            commit_line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
                && commit_line.contains("commit=\"")
                && commit_line.ends_with(" 1"),
            "{commit_line}"
        );
        exposed.extend(names);
    }
    // Prometheus's own series per target.
    exposed.insert("up".to_owned());
    // Series born only of a fault (a Kafka log reset, a failed insert): the services' own
    // registries show them under that name once it happens.
    let sink = gridclue_sink::metrics::SinkMetrics::new();
    sink.log_reset_detected
        .with_label_values(&["clues.events", "0"])
        .set(1);
    // …a log that lost its tail (GridclueKafkaLogTruncated)…
    sink.log_truncations
        .with_label_values(&["clues.events", "0"])
        .inc();
    // …a view the sink could not repair after a crash (GridclueAggregatesMayBeShort)…
    sink.view_repairs
        .with_label_values(&["fact_flow_hourly", "unresolved"])
        .inc();
    // …and facts skipped as stored (GridclueSinkStalled counts them as progress).
    sink.skipped.with_label_values(&["duplicate"]).inc();
    let enrich = gridclue_enrich::metrics::EnrichMetrics::new();
    enrich
        .log_reset_detected
        .with_label_values(&["clues.commands", "0"])
        .set(1);
    // The hotspot detector (not part of this stack): its alerts counter, once one is raised.
    let hotspots = gridclue_enrich::hotspots::HotspotMetrics::new();
    hotspots.alerts.with_label_values(&["garbage"]).inc();
    hotspots
        .log_reset_detected
        .with_label_values(&["clues.events", "0"])
        .set(1);
    for registry in [&sink.registry, &enrich.registry, &hotspots.registry] {
        exposed.extend(exposed_names(&gridclue_core::telemetry::render(registry)));
    }

    // The caught-up pipeline has no lag; the end-to-end freshness of a test clue is seconds at
    // most (a loose sanity bound, not a speed claim).
    let lag = sample(
        &scrapes["sink"],
        "gridclue_sink_consumer_lag_seconds{group=\"gridclue-sink\",partition=\"0\",topic=\"clues.events\"}",
    );
    assert!(lag.is_some(), "{}", scrapes["sink"]);
    let sum = sample(
        &scrapes["sink"],
        "gridclue_sink_end_to_end_freshness_seconds_sum",
    )
    .unwrap();
    assert!(
        (0.0..120.0).contains(&sum),
        "end-to-end freshness sum {sum}"
    );
    assert!(
        scrapes["enrich"].contains("gridclue_enrich_dlq_total{reason=\"undecodable\"} 0"),
        "DLQ reasons start at 0"
    );

    let rules = load_rules();
    let mut unknown = Vec::new();
    let mut checked = 0;
    for (origin, expr) in rules.exprs.iter().cloned().chain(dashboard_exprs()) {
        let parsed = parser::parse(&without_grafana_variables(&expr))
            .unwrap_or_else(|e| panic!("{origin}: {expr}: {e}"));
        let mut names = BTreeSet::new();
        selected_metrics(&parsed, &mut names);
        assert!(!names.is_empty(), "{origin} selects no metric: {expr}");
        for name in names {
            checked += 1;
            let known = exposed.contains(&name) || rules.recorded.contains(&name);
            if !known {
                unknown.push(format!("{origin}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics named but not exposed:\n{}",
        unknown.join("\n")
    );
    assert!(checked > 50, "only {checked} metric references checked");

    // The admin endpoint of enrich takes a district token, nothing less.
    let reload = |token: Option<String>| {
        let mut req = app
            .http
            .post(format!("{}/admin/reload-map", app.enrich_url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(reload(None).await.unwrap().status(), 401);
    assert_eq!(
        reload(Some(app.reporter_token.clone()))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(reload(Some(office)).await.unwrap().status(), 403);
    assert_eq!(
        reload(Some(app.district_token.clone()))
            .await
            .unwrap()
            .status(),
        200
    );

    app.stop().await;
}
