//! `POST /v1/clues/{id}/transitions` and its poll route against a mock cluster, with no clue
//! processor running: the command on `clues.commands` carries the token's role, id and scope;
//! without a verdict the request answers 202 with a `Location`; a verdict that then appears on
//! `clues.outcomes` (written here as the processor writes it) answers the poll and every retry
//! under the same Idempotency-Key, which produces nothing more.

mod common;

use std::time::{Duration, Instant};

use common::*;
use gridclue_core::codes::ActorScope;
use gridclue_core::roles::{RefusalClass, RefusalReason};
use gridclue_core::tokens::{TokenFile, TokenKind};
use gridclue_core::wire::{ActorKind, Command, Lifecycle, OutcomeRecord, Verdict, OUTCOMES_TOPIC};
use gridclue_core::{Action, ClueId, CommandId, Status};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

const STREET: &str = "310199003";

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut r = http.post(url).bearer_auth(token).json(body);
    if let Some(k) = key {
        r = r.header("Idempotency-Key", k);
    }
    r.send().await.unwrap()
}

async fn write_outcome(producer: &FutureProducer, o: &OutcomeRecord) {
    producer
        .send(
            FutureRecord::to(OUTCOMES_TOPIC)
                .key(&o.clue_id.to_string())
                .payload(&o.encode()),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transition_waits_for_its_verdict_and_retries_get_it_without_producing() {
    let env = Env::new("transitions");
    let tokens_path = env.dir.join("tokens.json");
    let mut tokens = TokenFile::read(&tokens_path).unwrap();
    let (street, street_rec) = tokens
        .issue(
            TokenKind::Street,
            None,
            Some(ActorScope::parse(STREET).unwrap()),
            "street office",
        )
        .unwrap();
    tokens.write(&tokens_path).unwrap();
    let mock = cluster(3);
    mock.create_topic(OUTCOMES_TOPIC, 3, 3).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let server = Server::start(gridclue_ingest::IngestConfig {
        transition_wait_ms: 300,
        ..env.config(&bootstrap)
    })
    .await;
    let http = reqwest::Client::new();
    let clue = ClueId::new_random();
    let url = format!("{}/v1/clues/{clue}/transitions", server.url);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .map_or(true, |r| r.status() != 200)
    {
        assert!(Instant::now() < deadline, "ingest never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // No processor: the verdict does not come within the wait.
    let dispatch = json!({"action": "dispatch", "department": "water_affairs"});
    let r = post(&http, &url, &street, &dispatch, Some("d-1")).await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(r.headers()["retry-after"], "1");
    let pending: Value = r.json().await.unwrap();
    assert_eq!(pending["outcome"], "pending");
    assert_eq!(pending["poll_url"], location);
    let command_id: CommandId = CommandId(pending["command_id"].as_str().unwrap().parse().unwrap());
    assert_eq!(
        command_id,
        CommandId::for_transition(&street_rec.id, clue, "d-1")
    );
    // The command carries the token's role, public id and scope.
    let produced = read_topic(&bootstrap, 1);
    assert_eq!(produced.len(), 1);
    let (key, cmd) = &produced[0];
    assert_eq!(key, &clue.to_string());
    assert_eq!(cmd.command_id, command_id);
    assert_eq!(
        (
            cmd.actor.kind,
            cmd.actor.id.as_str(),
            cmd.actor.scope.as_ref().map(ActorScope::as_str)
        ),
        (ActorKind::Street, street_rec.id.as_str(), Some(STREET))
    );
    assert_eq!(
        cmd.command,
        Command::Lifecycle(Lifecycle::Dispatch {
            department: "water_affairs".parse().unwrap()
        })
    );
    let poll = |token: String| {
        let (http, url) = (http.clone(), format!("{}{location}", server.url));
        async move { http.get(url).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(poll(street.clone()).await.status(), 202);
    // Another token may not read it.
    assert_eq!(poll(env.district.clone()).await.status(), 404);

    // The verdict appears (as the processor writes it); the consumer may still be positioning
    // itself, so it is written again until the poll sees it — copies are harmless.
    let verdict = OutcomeRecord {
        v: gridclue_core::wire::SCHEMA_VERSION,
        command_id,
        clue_id: clue,
        action: Action::Dispatch,
        actor_id: street_rec.id.clone(),
        decided_at_ms: gridclue_core::wire::now_ms(),
        verdict: Verdict::Applied {
            status: Status::Dispatched,
            seq: 2,
            deadline_ms: Some(1_796_365_800_000),
        },
    };
    let producer = gridclue_core::kafka::producer_config(
        &gridclue_core::kafka::KafkaSettings::dev_broker(&bootstrap),
        5_000,
    )
    .create::<FutureProducer>()
    .unwrap();
    let answered = loop {
        write_outcome(&producer, &verdict).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = poll(street.clone()).await;
        if r.status() != 202 {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the verdict never reached ingest"
        );
    };
    assert_eq!(answered.status(), 200);
    let body: Value = answered.json().await.unwrap();
    assert_eq!(
        (
            &body["outcome"],
            &body["status"],
            &body["seq"],
            &body["deadline"]
        ),
        (
            &json!("applied"),
            &json!("dispatched"),
            &json!(2),
            &json!("2026-12-04T14:30:00+08:00")
        )
    );

    // Retries under the same key get the same answer at once and produce nothing.
    for _ in 0..3 {
        let r = post(&http, &url, &street, &dispatch, Some("d-1")).await;
        assert_eq!(r.status(), 200);
        let again: Value = r.json().await.unwrap();
        assert_eq!(again["seq"], 2);
        assert_eq!(again["command_id"], body["command_id"]);
    }
    let r = post(
        &http,
        &url,
        &street,
        &json!({"action": "reject", "reason": "x"}),
        Some("d-1"),
    )
    .await;
    assert_eq!(r.status(), 409);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "idempotency_key_reused");
    assert_eq!(read_topic(&bootstrap, 1).len(), 1, "nothing produced again");

    // A refusal reads as problem+json with the processor's reason and the clue's status.
    let r = post(
        &http,
        &url,
        &street,
        &json!({"action": "accept"}),
        Some("a-1"),
    )
    .await;
    assert_eq!(r.status(), 202);
    let refusal = OutcomeRecord {
        command_id: CommandId::for_transition(&street_rec.id, clue, "a-1"),
        action: Action::Accept,
        verdict: Verdict::Refused {
            class: RefusalClass::Conflict,
            reason: RefusalReason::IllegalTransition,
            detail: "accept is not allowed while the clue is dispatched".into(),
            status: Some(Status::Dispatched),
        },
        ..verdict.clone()
    };
    let r = loop {
        write_outcome(&producer, &refusal).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = post(
            &http,
            &url,
            &street,
            &json!({"action": "accept"}),
            Some("a-1"),
        )
        .await;
        if r.status() != 202 {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the refusal never reached ingest"
        );
    };
    assert_eq!(r.status(), 409);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: Value = r.json().await.unwrap();
    assert_eq!(
        (
            &problem["code"],
            &problem["clue_status"],
            &problem["action"]
        ),
        (
            &json!("illegal_transition"),
            &json!("dispatched"),
            &json!("accept")
        )
    );

    // Before anything is produced: who is asking, and the body's shape.
    let r = http.post(&url).json(&dispatch).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(&url)
        .bearer_auth(&street)
        .header("content-type", "text/plain")
        .body("accept")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = post(
        &http,
        &url,
        &street,
        &json!({"action": "rate", "rating": "5"}),
        None,
    )
    .await;
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(
        (&problem["code"], &problem["field"]),
        (&json!("invalid_field"), &json!("rating"))
    );
    let r = post(
        &http,
        &url,
        &street,
        &json!({"action": "supervise", "note": "x".repeat(20_000)}),
        None,
    )
    .await;
    assert_eq!(r.status(), 413);
    let r = post(
        &http,
        &format!("{}/v1/clues/not-a-uuid/transitions", server.url),
        &street,
        &dispatch,
        None,
    )
    .await;
    assert_eq!(r.status(), 404);
    // On the topic: the dispatch once (its retries came after its verdict), the accept once per
    // request made before its verdict was known, and nothing of the refused requests.
    let produced = read_topic(&bootstrap, 2);
    let dispatches = produced
        .iter()
        .filter(|(_, c)| c.command_id == command_id)
        .count();
    let accepts = produced
        .iter()
        .filter(|(_, c)| c.command_id == refusal.command_id)
        .count();
    assert_eq!(dispatches, 1);
    assert!(accepts >= 1);
    assert_eq!(produced.len(), dispatches + accepts, "{produced:?}");
    server.stop().await.unwrap();
}
