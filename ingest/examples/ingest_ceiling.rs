//! The ceiling ingest is measured against (BENCHMARKS.md): the bare handler a user would write
//! with axum and rdkafka — parse the JSON body, produce it keyed by its `clue_id` with the same
//! producer settings as ingest (acks=all, idempotent, linger 2 ms), answer 202 once the broker
//! acknowledged it. No auth, validation, rate limits, idempotency keys, metrics or logging.
//!
//! It answers `GET /v1/categories` with one category so that `gridclue-load open` can drive it
//! exactly as it drives ingest:
//!
//! ```sh
//! cargo run --release -p gridclue-ingest --example ingest_ceiling -- \
//!     --brokers "$GRIDCLUE_KAFKA_BROKERS" --listen 127.0.0.1:26405
//! gridclue-load open --ingest-url http://127.0.0.1:26405 --mix report=1 --reporters 1 \
//!     --sse 0 --probe-every-ms 0 --rate 5000 --duration 20
//! ```

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    #[arg(long, env = "GRIDCLUE_KAFKA_BROKERS")]
    brokers: String,
    #[arg(long, default_value = "127.0.0.1:26405")]
    listen: String,
    /// Its own topic, so the pipeline never sees these records.
    #[arg(long, default_value = "bench.ceiling")]
    topic: String,
}

#[derive(Clone)]
struct Ceiling {
    producer: FutureProducer,
    topic: String,
}

async fn post_clue(State(c): State<Ceiling>, body: Bytes) -> StatusCode {
    let Ok(clue) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let key = clue["clue_id"].as_str().unwrap_or_default().to_owned();
    let record = FutureRecord::to(&c.topic).key(&key).payload(&body[..]);
    match c.producer.send(record, Duration::from_secs(5)).await {
        Ok(_) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn categories() -> Json<Value> {
    Json(json!({"categories": [{"code": "garbage_pile"}]}))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "5000")
        .create()?;
    let app = Router::new()
        .route("/v1/clues", post(post_clue))
        .route("/v1/categories", get(categories))
        .with_state(Ceiling {
            producer,
            topic: args.topic,
        });
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    eprintln!("ingest ceiling listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
