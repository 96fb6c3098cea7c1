//! Poison records for the chaos suite (`gridclue-load poison`): records no client of the public
//! API can send — they go straight to the pipeline's topics, as a buggy or foreign producer
//! would — each with the DLQ reason code the pipeline must give it. Every record is written with
//! `acks=all`; the tool prints (and writes to `--out`) one JSON line per acknowledged record:
//! where it landed and the reason expected for it, so the DLQ can be compared with exactly this
//! set.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use gridclue_core::config::KafkaExtra;
use gridclue_core::kafka::{producer_config, KafkaSettings};
use gridclue_core::wire::{DlqReason, COMMANDS_TOPIC, EVENTS_TOPIC};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

#[derive(clap::Args, Clone, Debug)]
pub struct PoisonArgs {
    /// Kafka bootstrap servers of the stack (var/stack.env: GRIDCLUE_KAFKA_BROKERS).
    #[arg(long, env = "GRIDCLUE_KAFKA_BROKERS")]
    pub brokers: String,
    /// Passthrough librdkafka settings as a JSON object (var/stack.env: GRIDCLUE_KAFKA_EXTRA).
    #[arg(long, env = "GRIDCLUE_KAFKA_EXTRA", default_value = "{}")]
    pub kafka_extra: String,
    /// Rounds of the poison kinds (every round sends one record of each kind).
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Also write the JSON lines here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One kind of poison: where it goes, the reason the pipeline must give it, and its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoisonKind {
    /// Truncated JSON on `clues.commands`.
    TruncatedCommand,
    /// A well-formed command of a schema version from the future.
    FutureVersion,
    /// A well-formed report whose record key is not its clue id.
    WrongKey,
    /// A well-formed report of a category the catalog does not have.
    UnknownCategory,
    /// Bytes that are not a fact on `clues.events` (the sink's input).
    GarbageFact,
}

impl PoisonKind {
    pub const ALL: [PoisonKind; 5] = [
        PoisonKind::TruncatedCommand,
        PoisonKind::FutureVersion,
        PoisonKind::WrongKey,
        PoisonKind::UnknownCategory,
        PoisonKind::GarbageFact,
    ];

    pub fn topic(self) -> &'static str {
        match self {
            PoisonKind::GarbageFact => EVENTS_TOPIC,
            _ => COMMANDS_TOPIC,
        }
    }

    pub fn expected_reason(self) -> DlqReason {
        match self {
            PoisonKind::TruncatedCommand | PoisonKind::GarbageFact => DlqReason::Undecodable,
            PoisonKind::FutureVersion => DlqReason::UnsupportedVersion,
            PoisonKind::WrongKey => DlqReason::KeyMismatch,
            PoisonKind::UnknownCategory => DlqReason::UnknownCategory,
        }
    }

    /// The record: (key, payload). `now_ms` stamps the commands.
    pub fn record(self, now_ms: u64) -> (String, Vec<u8>) {
        let clue = Uuid::new_v4();
        let report = |v: u16, category: &str| {
            json!({
                "v": v,
                "command_id": Uuid::new_v4(),
                "clue_id": clue,
                "issued_at_ms": now_ms,
                "actor": {"kind": "reporter", "id": "tok_chaos_poison"},
                "type": "report",
                "category": category,
                "location": {"lat": 31.2, "lon": 121.4},
                "channel": "api",
            })
            .to_string()
            .into_bytes()
        };
        match self {
            PoisonKind::TruncatedCommand => {
                (clue.to_string(), br#"{"v":1,"type":"report","cat"#.to_vec())
            }
            PoisonKind::FutureVersion => (clue.to_string(), report(u16::MAX, "manhole_cover")),
            PoisonKind::WrongKey => (Uuid::new_v4().to_string(), report(1, "manhole_cover")),
            PoisonKind::UnknownCategory => (clue.to_string(), report(1, "chaos_no_such_category")),
            PoisonKind::GarbageFact => (clue.to_string(), b"\x00not a fact\xff".to_vec()),
        }
    }
}

/// Where one acknowledged poison record landed, and what the DLQ must say about it.
#[derive(Debug, Serialize)]
pub struct Sent {
    pub topic: &'static str,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub reason: DlqReason,
}

pub async fn run(args: PoisonArgs) -> anyhow::Result<()> {
    let extra: KafkaExtra =
        serde_json::from_str(&args.kafka_extra).context("--kafka-extra is not a JSON object")?;
    let kafka = KafkaSettings::new(args.brokers.clone(), extra);
    let producer: FutureProducer = producer_config(&kafka, 30_000)
        .set("client.id", "gridclue-load-poison")
        .create()
        .context("creating the producer")?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut lines = Vec::new();
    for round in 0..args.rounds {
        for kind in PoisonKind::ALL {
            let (key, payload) = kind.record(now_ms);
            let delivery = producer
                .send(
                    FutureRecord::to(kind.topic()).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .with_context(|| format!("sending {kind:?} to {}", kind.topic()))?;
            let sent = Sent {
                topic: kind.topic(),
                partition: delivery.partition,
                offset: delivery.offset,
                key,
                reason: kind.expected_reason(),
            };
            let line = serde_json::to_string(&sent)?;
            println!("{line}");
            lines.push(line);
        }
        eprintln!(
            "poison: round {}/{} acknowledged ({} records)",
            round + 1,
            args.rounds,
            lines.len()
        );
    }
    if let Some(path) = &args.out {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridclue_core::wire::CommandEnvelope;

    #[test]
    fn each_command_kind_fails_the_way_it_claims() {
        let (_, truncated) = PoisonKind::TruncatedCommand.record(1);
        assert!(serde_json::from_slice::<serde_json::Value>(&truncated).is_err());
        // The well-formed ones decode as commands at the current version once the one defect is
        // removed: the reason code is the only thing wrong with them.
        let (key, wrong_key) = PoisonKind::WrongKey.record(1);
        let cmd = CommandEnvelope::decode(&wrong_key).expect("a well-formed command");
        assert_ne!(cmd.clue_id.0.to_string(), key);
        let (key, unknown) = PoisonKind::UnknownCategory.record(1);
        let cmd = CommandEnvelope::decode(&unknown).expect("a well-formed command");
        assert_eq!(cmd.clue_id.0.to_string(), key);
        let (_, future) = PoisonKind::FutureVersion.record(1);
        let mut v: serde_json::Value = serde_json::from_slice(&future).unwrap();
        assert_eq!(v["v"], u16::MAX);
        v["v"] = 1.into();
        CommandEnvelope::decode(v.to_string().as_bytes()).expect("well-formed at version 1");
        assert!(CommandEnvelope::decode(&future).is_err());
    }

    #[test]
    fn every_kind_names_a_topic_and_a_reason() {
        let reasons: Vec<DlqReason> = PoisonKind::ALL
            .iter()
            .map(|k| k.expected_reason())
            .collect();
        assert!(reasons.contains(&DlqReason::Undecodable));
        assert!(PoisonKind::ALL
            .iter()
            .any(|k| k.topic() == EVENTS_TOPIC && k.expected_reason() == DlqReason::Undecodable));
    }
}
