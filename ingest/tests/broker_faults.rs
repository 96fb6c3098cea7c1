//! Against the mock cluster: brokers or the partition leader going away mid-request give a
//! bounded 503 with Retry-After and no half-written command; once they are back, a retry with
//! the same Idempotency-Key succeeds under the same clue id. Graceful shutdown drains in-flight
//! requests and flushes the producer.

mod common;

use std::time::{Duration, Instant};

use common::*;
use gridclue_core::{ClueId, ReporterId};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::json;

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    key: &str,
) -> (u16, Option<String>, serde_json::Value) {
    let r = http
        .post(format!("{url}/v1/clues"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&clue_json())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.json().await.unwrap())
}

/// Connections, metadata and the producer id in place (a busy machine may need a retry); the
/// "warm" clue is on the topic once.
async fn warm_up(http: &reqwest::Client, url: &str, token: &str) {
    for _ in 0..10 {
        let (status, _, body) = post(http, url, token, "warm").await;
        if status == 202 {
            return;
        }
        assert_eq!(status, 503, "{body}");
    }
    panic!("the mock cluster never acknowledged the warm-up clue");
}

fn expected_id(env: &Env, key: &str) -> ClueId {
    ClueId::from_idempotency_key(&ReporterId::parse(&env.reporter_id).unwrap(), key)
}

/// Every record on the topic is a whole command; those of `id` all carry that id and its report
/// command id, and there is at least one; every other record is the warm-up clue.
async fn assert_topic_holds(bootstrap: &str, id: ClueId, warm: ClueId) -> usize {
    let b = bootstrap.to_owned();
    let records = tokio::task::spawn_blocking(move || read_topic(&b, 2))
        .await
        .unwrap();
    let mine: Vec<_> = records
        .iter()
        .filter(|(k, _)| *k == id.to_string())
        .collect();
    assert!(!mine.is_empty(), "the retried command is on the topic");
    for (_, c) in &mine {
        assert_eq!(c.clue_id, id);
        assert_eq!(c.command_id, gridclue_core::CommandId::for_report(id));
    }
    assert!(
        records
            .iter()
            .all(|(_, c)| c.clue_id == id || c.clue_id == warm),
        "no other record appeared: {records:?}"
    );
    mine.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_brokers_down_mid_request_then_retry_succeeds() {
    let cluster = cluster(3);
    let bootstrap = cluster.bootstrap_servers();
    let env = Env::new("alldown");
    let mut config = env.config(&bootstrap);
    config.produce_timeout_ms = 1_500;
    let server = Server::start(config).await;
    let http = reqwest::Client::new();

    // Warm up: metadata and connections are in place.
    warm_up(&http, &server.url, &env.reporter).await;

    // Slow brokers, so the next produce is in flight when they go down.
    for b in 1..=3 {
        cluster
            .broker_round_trip_time(b, Duration::from_millis(800))
            .unwrap();
    }
    let request = {
        let (http, url, token) = (http.clone(), server.url.clone(), env.reporter.clone());
        tokio::spawn(async move { post(&http, &url, &token, "k-down").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    cluster.broker_down(-1).unwrap();
    let (status, retry, body) = request.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "broker_unavailable");
    assert_eq!(retry.as_deref(), Some("2"));
    // Bounded by the configured produce timeout (1.5 s), not librdkafka's default message
    // timeout (300 s); the margin is wide so a loaded machine cannot fail it.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the wait is bounded by produce_timeout_ms"
    );

    // Back up: the same key succeeds, with the id derived from the key.
    for b in 1..=3 {
        cluster.broker_round_trip_time(b, Duration::ZERO).unwrap();
    }
    cluster.broker_up(-1).unwrap();
    let id = expected_id(&env, "k-down");
    let mut accepted = None;
    for _ in 0..20 {
        let (status, _, body) = post(&http, &server.url, &env.reporter, "k-down").await;
        if status == 202 {
            accepted = Some(body);
            break;
        }
        assert_eq!(status, 503, "{body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let body = accepted.expect("the retry is accepted once the brokers are back");
    assert_eq!(body["clue_id"], id.to_string());
    // A second retry answers the same.
    let (status, _, again) = post(&http, &server.url, &env.reporter, "k-down").await;
    assert_eq!((status, &again), (202, &body));

    let copies = assert_topic_holds(&bootstrap, id, expected_id(&env, "warm")).await;
    // The failed attempt may or may not have reached the log before the brokers went down;
    // either way every copy has the same clue id, and the clue processor keeps one.
    eprintln!("copies of the retried command on the topic: {copies}");
    assert!(copies <= 2, "{copies} copies");
    server.stop().await.unwrap();
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_leader_down_then_retry_succeeds() {
    let cluster = cluster(1);
    let bootstrap = cluster.bootstrap_servers();
    cluster.partition_leader(TOPIC, 0, Some(2)).unwrap();
    let env = Env::new("leader");
    let mut config = env.config(&bootstrap);
    config.produce_timeout_ms = 2_000;
    let server = Server::start(config).await;
    let http = reqwest::Client::new();
    warm_up(&http, &server.url, &env.reporter).await;

    cluster.broker_down(2).unwrap();
    let started = Instant::now();
    let (status, retry, body) = post(&http, &server.url, &env.reporter, "k-leader").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "broker_unavailable");
    assert!(retry.is_some());
    // Bounded by the configured produce timeout (2 s), not librdkafka's default (300 s).
    assert!(started.elapsed() < Duration::from_secs(60));

    cluster.broker_up(2).unwrap();
    let id = expected_id(&env, "k-leader");
    let mut ok = false;
    for _ in 0..20 {
        let (status, _, body) = post(&http, &server.url, &env.reporter, "k-leader").await;
        if status == 202 {
            assert_eq!(body["clue_id"], id.to_string());
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(ok, "the retry is accepted once the leader is back");
    assert_topic_holds(&bootstrap, id, expected_id(&env, "warm")).await;
    server.stop().await.unwrap();
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_errors_give_503_and_a_batch_retry_lands_every_clue() {
    let cluster = cluster(3);
    let bootstrap = cluster.bootstrap_servers();
    let env = Env::new("errors");
    let mut config = env.config(&bootstrap);
    config.produce_timeout_ms = 1_000;
    let server = Server::start(config).await;
    let http = reqwest::Client::new();
    warm_up(&http, &server.url, &env.reporter).await;

    // Every produce request fails with a retriable error until the stack is cleared.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 2000],
    );
    let queue: Vec<_> = (0..3)
        .map(|i| {
            let mut c = clue_json();
            c["idempotency_key"] = json!(format!("offline-{i}"));
            c
        })
        .collect();
    let send = || {
        http.post(format!("{}/v1/clues:batch", server.url))
            .bearer_auth(&env.reporter)
            .json(&json!({"clues": queue}))
            .send()
    };
    let r = send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "broker_unavailable");

    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    let mut answer = None;
    for _ in 0..20 {
        let r = send().await.unwrap();
        if r.status().as_u16() == 200 {
            answer = Some(r.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let answer = answer.expect("the batch goes through once the errors stop");
    assert_eq!(answer["accepted"], 3, "{answer}");
    let ids: Vec<ClueId> = (0..3)
        .map(|i| expected_id(&env, &format!("offline-{i}")))
        .collect();
    let b = bootstrap.clone();
    let records = tokio::task::spawn_blocking(move || read_topic(&b, 4))
        .await
        .unwrap();
    for id in &ids {
        assert!(records.iter().any(|(_, c)| c.clue_id == *id), "{id} landed");
    }
    assert!(records
        .iter()
        .all(|(_, c)| ids.contains(&c.clue_id) || c.clue_id == expected_id(&env, "warm")));
    server.stop().await.unwrap();
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_in_flight_requests_and_flushes() {
    let cluster = cluster(3);
    let bootstrap = cluster.bootstrap_servers();
    let env = Env::new("drain");
    let server = Server::start(env.config(&bootstrap)).await;
    let http = reqwest::Client::new();
    warm_up(&http, &server.url, &env.reporter).await;
    for b in 1..=3 {
        cluster
            .broker_round_trip_time(b, Duration::from_millis(700))
            .unwrap();
    }
    let in_flight: Vec<_> = (0..5)
        .map(|i| {
            let (http, url, token) = (http.clone(), server.url.clone(), env.reporter.clone());
            tokio::spawn(async move { post(&http, &url, &token, &format!("drain-{i}")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = server.url.clone();
    server.request_stop();
    for r in in_flight {
        let (status, _, body) = r.await.unwrap();
        assert_eq!(status, 202, "in-flight request finished: {body}");
    }
    server.task.await.unwrap().unwrap();
    // The listener is closed after shutdown.
    assert!(http.get(format!("{url}/healthz")).send().await.is_err());
    let b = bootstrap.clone();
    let records = tokio::task::spawn_blocking(move || read_topic(&b, 6))
        .await
        .unwrap();
    for i in 0..5 {
        let id = expected_id(&env, &format!("drain-{i}"));
        assert!(records.iter().any(|(_, c)| c.clue_id == id));
    }
    drop(cluster);
}
