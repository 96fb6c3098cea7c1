//! Reset Kafka logs in enrich: found before anything is skipped, refused, and rebased
//! deliberately (`gridclue-enrich rebase`).
//!
//! What enrich keeps of a log's position, and how a reset shows:
//!
//! - **Commands** (`clues.commands`, the processor's group): the group's committed offset, and
//!   per clue the position of the last command handled (`applied_offset` in the changelog).
//!   Commands at or below a clue's position are taken as handled. A reset commands log shows as
//!   a committed offset beyond the partition's high watermark, or a state that has handled
//!   commands at positions the log does not reach.
//! - **State** (`clues.state`): every commit of the processor records, in its metadata, where
//!   the changelog partition ended after the state written for the committed commands
//!   ([`CommitNote::state_end`]). A changelog that ends before that lost state.
//! - **Dedupe** (`clues.dedupe`, the dedupe stage's group): a committed offset beyond the high
//!   watermark.
//!
//! Everything enrich stores lives in the same Kafka cluster as the logs, so a new cluster
//! brings an empty group and an empty changelog together: nothing is skipped, and the cluster id
//! needs no check here (the sink, which keeps positions in ClickHouse, checks it).
//!
//! A partition found reset is not consumed (paused; others flow), is logged once, and shows in
//! `gridclue_enrich_log_reset_detected{topic,partition}` and `/readyz` until enrich restarts
//! after `gridclue-enrich rebase`. The rebase joins the group (so every enrich must be stopped),
//! and commits for each partition a position in the new log:
//!
//! - commands: where the handled part of the log ends. The rebase reads the records at the
//!   highest positions the state handled that are still in the log: when one is the command
//!   that clue handled (its command id is among the clue's remembered ones), the log is the same
//!   log as far as that offset (truncated, or a position committed wrongly) and consumption
//!   resumes right after it, so no old command is decided again; when one belongs to another
//!   clue, or nothing can be proven, the log is a new one and is read from its start. Either
//!   way a new **base** (positions are `base + offset`) puts what is read after every position
//!   the state has handled, so no new command is taken as handled by its offset; outbox entries
//!   the old log had not committed are produced again.
//! - state: the changelog as it is now is accepted (state lost with it is gone: commands for
//!   those clues go to the DLQ as unknown clues, not silently).
//! - dedupe: the new log's start (its verdicts are idempotent by command id).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::Context;
use gridclue_core::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::EnrichConfig;

const NOTE_PREFIX: &str = "gridclue-enrich/1";

/// What a commit of the processor's group records beside the commands offset (as the commit's
/// metadata).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitNote {
    /// Added to a command's offset to give its position in the partition's history, the
    /// positions the state's `applied_offset` holds (0 until a rebase).
    pub base: i64,
    /// Where the changelog partition ended after the state written for the committed commands.
    pub state_end: Option<i64>,
    /// Set by a rebase: outbox entries at or after this position are produced again when the
    /// partition's state is next restored.
    pub resend_from: Option<i64>,
}

impl CommitNote {
    pub fn encode(&self) -> String {
        let mut s = format!("{NOTE_PREFIX} base={}", self.base);
        if let Some(e) = self.state_end {
            s.push_str(&format!(" state_end={e}"));
        }
        if let Some(r) = self.resend_from {
            s.push_str(&format!(" resend_from={r}"));
        }
        s
    }

    /// Reads a commit's metadata; anything else (a commit of an older release, none) is the
    /// default note.
    pub fn decode(metadata: &str) -> Self {
        let mut note = Self::default();
        let mut words = metadata.split_whitespace();
        if words.next() != Some(NOTE_PREFIX) {
            return note;
        }
        for word in words {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            let Ok(value) = value.parse::<i64>() else {
                continue;
            };
            match key {
                "base" => note.base = value,
                "state_end" => note.state_end = Some(value),
                "resend_from" => note.resend_from = Some(value),
                _ => {}
            }
        }
        note
    }
}

/// A group's committed position of one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    pub offset: Option<i64>,
    pub note: CommitNote,
}

/// Why a partition's log is taken for a reset one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResetKind {
    /// The group's committed offset is beyond the partition's high watermark.
    CommittedBeyondEnd,
    /// The state changelog ends before the end the last commit recorded.
    ChangelogShort,
    /// The state has handled commands at offsets the commands log does not reach.
    AppliedBeyondEnd,
}

/// A partition enrich refuses to consume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogReset {
    /// The log found reset (`clues.commands`, `clues.state` or `clues.dedupe`)…
    pub topic: String,
    pub partition: i32,
    /// …the consumer group whose partition is refused…
    pub group: String,
    /// …the position enrich holds in that log (committed offset, recorded changelog end, or
    /// the highest handled command's offset), and the log's watermarks.
    pub position: i64,
    pub low: i64,
    pub high: i64,
    pub kind: ResetKind,
    /// The program whose `rebase` command rebases the partition (`gridclue-enrich`,
    /// `gridclue-hotspots`).
    pub rebased_by: &'static str,
}

/// The program that rebases the processor's and the dedupe stage's partitions.
pub const ENRICH: &str = "gridclue-enrich";

impl fmt::Display for LogReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (topic, p, position, high) = (&self.topic, self.partition, self.position, self.high);
        let what = match self.kind {
            ResetKind::CommittedBeyondEnd => {
                format!("group {} committed offset {position}", self.group)
            }
            ResetKind::ChangelogShort => {
                format!(
                    "the last commit of group {} recorded state up to offset {position}",
                    self.group
                )
            }
            ResetKind::AppliedBeyondEnd => {
                format!("the state handled commands up to offset {position}")
            }
        };
        write!(
            f,
            "log reset on {topic} partition {p}: {what}, but the high watermark is {high} (low {}); \
             not consumed until `{by} rebase --topic {topic} --partition {p}` (with every \
             {by} stopped) and a restart",
            self.low,
            by = self.rebased_by,
        )
    }
}

/// A partition's low and high watermarks.
pub type Watermarks = (i64, i64);

/// What the processor knows of a commands partition and its changelog partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessorEvidence {
    pub committed: Committed,
    pub commands: Watermarks,
    pub state: Watermarks,
    /// The highest position handled in the partition's state (None: no state).
    pub max_applied: Option<i64>,
}

/// Topic names and group of the processor (for the reports).
#[derive(Clone, Debug)]
pub struct ProcessorLogs<'a> {
    pub commands_topic: &'a str,
    pub state_topic: &'a str,
    pub group: &'a str,
}

/// The resets a processor partition shows (none: consume it).
pub fn judge_processor(
    logs: &ProcessorLogs<'_>,
    partition: i32,
    e: &ProcessorEvidence,
) -> Vec<LogReset> {
    let mut out = Vec::new();
    let commands = |position: i64, kind: ResetKind| LogReset {
        topic: logs.commands_topic.to_owned(),
        partition,
        group: logs.group.to_owned(),
        position,
        low: e.commands.0,
        high: e.commands.1,
        kind,
        rebased_by: ENRICH,
    };
    if let Some(c) = e.committed.offset {
        if c > e.commands.1 {
            out.push(commands(c, ResetKind::CommittedBeyondEnd));
        }
    }
    if let Some(a) = e.max_applied {
        let offset = a - e.committed.note.base;
        if offset >= e.commands.1 {
            out.push(commands(offset, ResetKind::AppliedBeyondEnd));
        }
    }
    if let Some(end) = e.committed.note.state_end {
        if end > e.state.1 {
            out.push(LogReset {
                topic: logs.state_topic.to_owned(),
                partition,
                group: logs.group.to_owned(),
                position: end,
                low: e.state.0,
                high: e.state.1,
                kind: ResetKind::ChangelogShort,
                rebased_by: ENRICH,
            });
        }
    }
    out
}

/// The reset a partition shows when its group's committed offset is all that says where the
/// group was in the log (the dedupe stage, the hotspot service's loops), if any: the offset is
/// beyond the high watermark. `rebased_by` names the program that rebases it.
pub fn judge_committed(
    topic: &str,
    group: &str,
    partition: i32,
    committed: &Committed,
    wm: Watermarks,
    rebased_by: &'static str,
) -> Option<LogReset> {
    let c = committed.offset?;
    (c > wm.1).then(|| LogReset {
        topic: topic.to_owned(),
        partition,
        group: group.to_owned(),
        position: c,
        low: wm.0,
        high: wm.1,
        kind: ResetKind::CommittedBeyondEnd,
        rebased_by,
    })
}

/// What the processor's partition is rebased to: the commit that replaces the group's.
/// `same_until` is the offset up to which the current log is proven to be the log the state
/// handled ([`prove_same_log`]).
pub fn rebased_processor_commit(
    e: &ProcessorEvidence,
    resets: &[LogReset],
    force: bool,
    same_until: Option<i64>,
) -> (i64, CommitNote) {
    let old = e.committed.note;
    let commands_reset = force
        || resets.iter().any(|r| {
            matches!(
                r.kind,
                ResetKind::CommittedBeyondEnd | ResetKind::AppliedBeyondEnd
            )
        });
    if !commands_reset {
        // Only the changelog was short: keep the commands position, accept the changelog.
        let offset = e.committed.offset.unwrap_or(e.commands.0);
        return (
            offset,
            CommitNote {
                state_end: Some(e.state.1),
                ..old
            },
        );
    }
    let start = same_until.map_or(e.commands.0, |o| o + 1);
    // Everything read from `start` on comes after every handled position.
    let base = e
        .max_applied
        .map_or(old.base, |a| old.base.max(a + 1 - start));
    (
        start,
        CommitNote {
            base,
            state_end: Some(e.state.1),
            resend_from: e.committed.offset.map(|c| old.base + c),
        },
    )
}

/// What the state says a clue handled: its position and the command ids it remembers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    pub clue: gridclue_core::ClueId,
    pub position: i64,
    pub recent: Vec<gridclue_core::CommandId>,
}

/// A record's key and payload, or `None` when no record has exactly the offset asked for.
pub type RecordAt = Option<(Option<String>, Vec<u8>)>;

/// How many handled positions [`prove_same_log`] looks at before it gives up.
pub const PROOF_TRIES: usize = 32;

/// Whether the commands log (watermarks `wm`) is the log the state handled, and as far as which
/// offset: the records at the highest handled positions (`base + offset`) still in the log are
/// read with `record_at`.
/// `Some(o)`: the record at `o` is the command its clue handled. `None`: a record there belongs
/// to another clue (a new log), or nothing could be proven within [`PROOF_TRIES`] records (a
/// handled command the clue does not remember, such as a refused one, proves nothing).
pub fn prove_same_log(
    handled: &[Handled],
    base: i64,
    wm: Watermarks,
    mut record_at: impl FnMut(i64) -> anyhow::Result<RecordAt>,
) -> anyhow::Result<Option<i64>> {
    let mut candidates: Vec<(i64, &Handled)> = handled
        .iter()
        .map(|h| (h.position - base, h))
        .filter(|(o, _)| wm.0 <= *o && *o < wm.1)
        .collect();
    candidates.sort_by_key(|(o, _)| std::cmp::Reverse(*o));
    for (offset, h) in candidates.into_iter().take(PROOF_TRIES) {
        let Some((key, payload)) = record_at(offset)? else {
            continue;
        };
        if key.as_deref() != Some(h.clue.to_string().as_str()) {
            return Ok(None);
        }
        if gridclue_core::wire::CommandEnvelope::decode(&payload)
            .is_ok_and(|cmd| h.recent.contains(&cmd.command_id))
        {
            return Ok(Some(offset));
        }
    }
    Ok(None)
}

/// Reads single records of one partition (for [`prove_same_log`]).
fn record_reader(
    kafka: &KafkaSettings,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> anyhow::Result<impl FnMut(i64) -> anyhow::Result<RecordAt>> {
    let reader: BaseConsumer = gridclue_core::kafka::client_config(kafka)
        .set("group.id", "gridclue-enrich-rebase-check")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?;
    let topic = topic.to_owned();
    Ok(move |offset: i64| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
        reader.assign(&tpl)?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let Some(m) = reader.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = m?;
            if m.partition() != partition || m.offset() < offset {
                continue;
            }
            if m.offset() != offset {
                return Ok(None);
            }
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
            return Ok(Some((key, m.payload().unwrap_or_default().to_vec())));
        }
        anyhow::bail!("reading {topic} partition {partition} at offset {offset} timed out")
    })
}

/// Committed offsets (with notes) of `partitions` of `topic` for `group`, and their watermarks.
/// Reads the group's offsets without joining it.
pub fn positions(
    kafka: &KafkaSettings,
    group: &str,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> anyhow::Result<HashMap<i32, (Committed, Watermarks)>> {
    let client: BaseConsumer = gridclue_core::kafka::consumer_config(kafka, group)
        .create()
        .context("creating a reader of the group's offsets")?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = client
        .committed_offsets(tpl, timeout)
        .with_context(|| format!("committed offsets of group {group} on {topic}"))?;
    let mut out = HashMap::new();
    for el in committed.elements() {
        let wm = client
            .fetch_watermarks(topic, el.partition(), timeout)
            .with_context(|| format!("watermarks of {topic}/{}", el.partition()))?;
        out.insert(el.partition(), (committed_of(&el), wm));
    }
    Ok(out)
}

fn committed_of(el: &rdkafka::topic_partition_list::TopicPartitionListElem<'_>) -> Committed {
    Committed {
        offset: match el.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        },
        note: CommitNote::decode(el.metadata()),
    }
}

/// Joins `group` on `topic` as its only member, hands the committed positions of every
/// partition to `decide`, and commits what it returns (offset and optional metadata per
/// partition). Fails when another member holds any partition: every consumer of the group must
/// be stopped first.
pub fn commit_as_sole_member(
    kafka: &KafkaSettings,
    group: &str,
    topic: &str,
    timeout: Duration,
    decide: impl FnOnce(&HashMap<i32, Committed>) -> anyhow::Result<Vec<(i32, i64, Option<String>)>>,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = gridclue_core::kafka::consumer_config(kafka, group)
        .create()
        .context("creating a member of the group")?;
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("metadata of {topic}"))?;
    let all: HashSet<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(!all.is_empty(), "topic {topic} not found");
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + timeout;
    let mut owned: HashSet<i32> = HashSet::new();
    tracing::info!(
        group,
        topic,
        "joining the group (every consumer of it must be stopped)"
    );
    while owned != all {
        anyhow::ensure!(
            Instant::now() < deadline,
            "group {group} gave this command partitions {owned:?} of {topic}, not all {}: other \
             members hold the rest; stop every gridclue-enrich first",
            all.len()
        );
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
            tracing::warn!(error = %e, "consumer error while joining");
        }
        let assignment = consumer.assignment()?;
        if assignment.count() > 0 {
            // Nothing is read: the command only commits.
            consumer.pause(&assignment)?;
        }
        owned = assignment
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
    }
    let mut tpl = TopicPartitionList::new();
    for p in &all {
        tpl.add_partition(topic, *p);
    }
    let committed: HashMap<i32, Committed> = consumer
        .committed_offsets(tpl, timeout)?
        .elements()
        .iter()
        .map(|el| (el.partition(), committed_of(el)))
        .collect();
    tracing::debug!(group, "all partitions assigned");
    let commits = decide(&committed)?;
    if !commits.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for (p, offset, metadata) in &commits {
            let mut el = tpl.add_partition(topic, *p);
            el.set_offset(Offset::Offset(*offset))?;
            if let Some(m) = metadata {
                el.set_metadata(m);
            }
        }
        consumer
            .commit(&tpl, CommitMode::Sync)
            .with_context(|| format!("committing the new positions for group {group}"))?;
    }
    consumer.unsubscribe();
    tracing::debug!(group, "committed; leaving the group");
    drop(consumer);
    tracing::debug!(group, "left the group");
    Ok(())
}

/// Where a rebased partition is consumed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// The committed position stays (only the changelog was rebased).
    Kept,
    /// Right after this offset: the log is proven to be the one the state handled as far as
    /// here.
    After(i64),
    /// From the log's start: a new log (or one nothing could be proven of).
    FromStart,
}

/// What `gridclue-enrich rebase` did with one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RebaseOutcome {
    Rebased {
        partition: i32,
        group: String,
        /// The commit before and after.
        before: Committed,
        after: Committed,
        /// Where consumption resumes.
        resume: Resume,
        /// What was found (empty when forced on a partition that was not reset).
        resets: Vec<LogReset>,
    },
    /// Named, but not reset: left alone (`force` rebases it anyway).
    NotReset { partition: i32 },
}

/// The `rebase` command's arguments (`gridclue-enrich rebase`, `gridclue-hotspots rebase`).
#[derive(Clone, Debug, clap::Args)]
pub struct RebaseArgs {
    /// The consumed topic (or the processor's changelog) whose partitions to rebase.
    #[arg(long)]
    pub topic: String,
    /// Partitions to rebase; repeat or separate with commas.
    #[arg(long, value_delimiter = ',', required_unless_present = "all_reset")]
    pub partition: Vec<i32>,
    /// Every partition of the topic found reset.
    #[arg(long, conflicts_with = "partition")]
    pub all_reset: bool,
    /// Rebase the named partitions even if their log does not look reset.
    #[arg(long, requires = "partition")]
    pub force: bool,
}

impl RebaseArgs {
    /// The partitions named (`None`: every partition found reset).
    pub fn partitions(&self) -> Option<Vec<i32>> {
        (!self.all_reset).then(|| self.partition.clone())
    }
}

impl fmt::Display for RebaseOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RebaseOutcome::Rebased {
                partition,
                group,
                before,
                after,
                resume,
                resets,
            } => {
                writeln!(
                    f,
                    "partition {partition} (group {group}): committed {:?} → {:?} (base {} → {})",
                    before.offset, after.offset, before.note.base, after.note.base
                )?;
                match resume {
                    Resume::After(o) => write!(
                        f,
                        "  the log is the one the state handled as far as offset {o}: resuming \
                         after it"
                    )?,
                    Resume::FromStart => write!(f, "  read from the log's start")?,
                    Resume::Kept => write!(f, "  the commands position stays")?,
                }
                for r in resets {
                    write!(f, "\n  was: {r}")?;
                }
                Ok(())
            }
            RebaseOutcome::NotReset { partition } => write!(
                f,
                "partition {partition}: not reset; left alone (--force rebases it anyway)"
            ),
        }
    }
}

/// Prints what a `rebase` command did; `false` when a named partition was left alone (not
/// reset), which the command reports with a failing exit status.
pub fn print_outcomes(topic: &str, outcomes: &[RebaseOutcome]) -> bool {
    if outcomes.is_empty() {
        println!("no partition of {topic} is reset");
    }
    for o in outcomes {
        println!("{o}");
    }
    !outcomes
        .iter()
        .any(|o| matches!(o, RebaseOutcome::NotReset { .. }))
}

/// Rebases reset partitions of `topic` (`clues.commands` or `clues.state`: the processor's
/// partition, both logs together; `clues.dedupe`: the dedupe stage's); `partitions` `None`
/// means every partition found reset. Every enrich must be stopped (the command joins the
/// group to commit); start them again afterwards.
pub async fn rebase(
    config: &EnrichConfig,
    topic: &str,
    partitions: Option<Vec<i32>>,
    force: bool,
) -> anyhow::Result<Vec<RebaseOutcome>> {
    let config = config.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || rebase_blocking(&config, &topic, partitions, force)).await?
}

fn rebase_blocking(
    config: &EnrichConfig,
    topic: &str,
    partitions: Option<Vec<i32>>,
    force: bool,
) -> anyhow::Result<Vec<RebaseOutcome>> {
    let timeout = Duration::from_millis(config.restore_timeout_ms.max(30_000));
    let kafka = &config.kafka();
    let processor = topic == config.commands_topic || topic == config.state_topic;
    let (group, consumed) = if processor {
        (&config.group_id, &config.commands_topic)
    } else if topic == config.dedupe_topic {
        (&config.dedupe_group_id, &config.dedupe_topic)
    } else {
        anyhow::bail!(
            "{topic} is none of {}, {}, {}",
            config.commands_topic,
            config.state_topic,
            config.dedupe_topic
        );
    };
    let mut outcomes = Vec::new();
    commit_as_sole_member(kafka, group, consumed, timeout, |committed| {
        let mut ids: Vec<i32> = committed.keys().copied().collect();
        ids.sort_unstable();
        let named = partitions.is_some();
        if let Some(only) = &partitions {
            for p in only {
                anyhow::ensure!(ids.contains(p), "{consumed} has no partition {p}");
            }
            ids.retain(|p| only.contains(p));
        }
        let probe: BaseConsumer = gridclue_core::kafka::client_config(kafka).create()?;
        let states = if processor {
            crate::runner::handled(kafka, &config.state_topic, &ids, timeout)?
        } else {
            HashMap::new()
        };
        let mut commits = Vec::new();
        for p in ids {
            let before = committed.get(&p).cloned().unwrap_or_default();
            let wm = probe.fetch_watermarks(consumed, p, timeout)?;
            let mut resume = Resume::FromStart;
            let (resets, after) = if processor {
                let (handled, state) = states.get(&p).cloned().unwrap_or_default();
                let evidence = ProcessorEvidence {
                    committed: before.clone(),
                    commands: wm,
                    state,
                    max_applied: handled.iter().map(|h| h.position).max(),
                };
                let logs = ProcessorLogs {
                    commands_topic: &config.commands_topic,
                    state_topic: &config.state_topic,
                    group,
                };
                let resets = judge_processor(&logs, p, &evidence);
                let commands_reset = force
                    || resets.iter().any(|r| {
                        matches!(
                            r.kind,
                            ResetKind::CommittedBeyondEnd | ResetKind::AppliedBeyondEnd
                        )
                    });
                let mut same_until = None;
                if commands_reset {
                    let reader = record_reader(kafka, consumed, p, timeout)?;
                    same_until = prove_same_log(&handled, before.note.base, wm, reader)?;
                    resume = same_until.map_or(Resume::FromStart, Resume::After);
                } else {
                    resume = Resume::Kept;
                }
                let (offset, note) =
                    rebased_processor_commit(&evidence, &resets, force, same_until);
                (
                    resets,
                    Committed {
                        offset: Some(offset),
                        note,
                    },
                )
            } else {
                let resets: Vec<LogReset> =
                    judge_committed(consumed, group, p, &before, wm, ENRICH)
                        .into_iter()
                        .collect();
                (
                    resets,
                    Committed {
                        offset: Some(wm.0),
                        note: CommitNote::default(),
                    },
                )
            };
            if resets.is_empty() && !force {
                if named {
                    outcomes.push(RebaseOutcome::NotReset { partition: p });
                }
                continue;
            }
            let offset = after.offset.expect("a rebase commits an offset");
            let metadata = processor.then(|| after.note.encode());
            commits.push((p, offset, metadata));
            outcomes.push(RebaseOutcome::Rebased {
                partition: p,
                group: group.clone(),
                before,
                after,
                resume,
                resets,
            });
        }
        Ok(commits)
    })?;
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs() -> ProcessorLogs<'static> {
        ProcessorLogs {
            commands_topic: "clues.commands",
            state_topic: "clues.state",
            group: "g",
        }
    }

    fn committed(offset: i64, base: i64, state_end: Option<i64>) -> Committed {
        Committed {
            offset: Some(offset),
            note: CommitNote {
                base,
                state_end,
                resend_from: None,
            },
        }
    }

    #[test]
    fn notes_round_trip_and_foreign_metadata_is_the_default() {
        let note = CommitNote {
            base: 1040,
            state_end: Some(77),
            resend_from: Some(1040),
        };
        assert_eq!(CommitNote::decode(&note.encode()), note);
        let plain = CommitNote::default();
        assert_eq!(CommitNote::decode(&plain.encode()), plain);
        assert_eq!(CommitNote::decode(""), plain);
        assert_eq!(CommitNote::decode("someone else's base=5"), plain);
    }

    #[test]
    fn a_consistent_partition_is_consumed() {
        let e = ProcessorEvidence {
            committed: committed(40, 0, Some(12)),
            commands: (0, 45),
            state: (0, 12),
            max_applied: Some(39),
        };
        assert!(judge_processor(&logs(), 1, &e).is_empty());
        // Nothing committed yet, no state: a fresh partition.
        assert!(judge_processor(&logs(), 1, &ProcessorEvidence::default()).is_empty());
    }

    #[test]
    fn each_kind_of_reset_is_found_and_named() {
        let e = ProcessorEvidence {
            committed: committed(1040, 0, Some(30)),
            commands: (0, 40),
            state: (0, 12),
            max_applied: Some(39),
        };
        let resets = judge_processor(&logs(), 1, &e);
        let kinds: Vec<_> = resets
            .iter()
            .map(|r| (r.topic.as_str(), r.kind.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("clues.commands", ResetKind::CommittedBeyondEnd),
                ("clues.state", ResetKind::ChangelogShort)
            ]
        );
        let text = resets[0].to_string();
        for part in [
            "clues.commands partition 1",
            "committed offset 1040",
            "high watermark is 40",
            "gridclue-enrich rebase --topic clues.commands --partition 1",
        ] {
            assert!(text.contains(part), "{text}");
        }
        // A commands log re-created under a state that survived, the group's offsets gone.
        let e = ProcessorEvidence {
            committed: Committed::default(),
            commands: (0, 5),
            state: (0, 12),
            max_applied: Some(39),
        };
        let resets = judge_processor(&logs(), 2, &e);
        assert_eq!(resets.len(), 1);
        assert_eq!(
            (resets[0].kind.clone(), resets[0].position),
            (ResetKind::AppliedBeyondEnd, 39)
        );
        // Positions are compared net of the base.
        let e = ProcessorEvidence {
            committed: committed(10, 1000, None),
            commands: (0, 12),
            state: (0, 3),
            max_applied: Some(1011),
        };
        assert!(judge_processor(&logs(), 2, &e).is_empty());
    }

    #[test]
    fn a_rebase_resumes_after_the_proven_part_or_at_the_start_after_every_handled_position() {
        let e = ProcessorEvidence {
            committed: committed(1040, 0, Some(12)),
            commands: (0, 40),
            state: (0, 12),
            max_applied: Some(39),
        };
        let resets = judge_processor(&logs(), 1, &e);
        // A new log: from its start, every offset after the handled positions.
        let (offset, note) = rebased_processor_commit(&e, &resets, false, None);
        assert_eq!((offset, note.base), (0, 40));
        assert_eq!(
            note.resend_from,
            Some(1040),
            "the old log's uncommitted outbox"
        );
        assert_eq!(note.state_end, Some(12));
        // The same log as far as offset 39 (a position committed beyond it): right after it,
        // positions as before.
        let (offset, note) = rebased_processor_commit(&e, &resets, false, Some(39));
        assert_eq!((offset, note.base), (40, 0));
        // Proven only up to 30 while the state handled up to 39 (a truncated log): after 30,
        // and what is read there comes after position 39.
        let (offset, note) = rebased_processor_commit(&e, &resets, false, Some(30));
        assert_eq!((offset, note.base), (31, 9));
        // A state ahead of the commit (a crash before the commit) pushes the base further.
        let ahead = ProcessorEvidence {
            max_applied: Some(2000),
            ..e.clone()
        };
        let (_, note) = rebased_processor_commit(&ahead, &resets, false, None);
        assert_eq!(note.base, 2001);
        // Only the changelog short: the commands position stays.
        let e = ProcessorEvidence {
            committed: committed(30, 7, Some(50)),
            commands: (0, 40),
            state: (0, 12),
            max_applied: Some(36),
        };
        let resets = judge_processor(&logs(), 1, &e);
        assert_eq!(resets.len(), 1);
        let (offset, note) = rebased_processor_commit(&e, &resets, false, None);
        assert_eq!((offset, note.base, note.state_end), (30, 7, Some(12)));
    }

    fn command(clue: gridclue_core::ClueId, id: u128) -> Vec<u8> {
        gridclue_core::wire::CommandEnvelope {
            v: gridclue_core::wire::SCHEMA_VERSION,
            command_id: gridclue_core::CommandId(uuid::Uuid::from_u128(id)),
            clue_id: clue,
            issued_at_ms: 0,
            actor: gridclue_core::wire::Actor {
                kind: gridclue_core::wire::ActorKind::Staff,
                id: "t".into(),
                group: None,
                scope: None,
            },
            command: gridclue_core::wire::Lifecycle::Accept.into(),
        }
        .encode()
    }

    #[test]
    fn the_same_log_is_proven_by_a_handled_command_and_disproven_by_another_clue() {
        let (a, b) = (
            gridclue_core::ClueId::new_random(),
            gridclue_core::ClueId::new_random(),
        );
        let handled = |clue, position, ids: &[u128]| Handled {
            clue,
            position,
            recent: ids
                .iter()
                .map(|i| gridclue_core::CommandId(uuid::Uuid::from_u128(*i)))
                .collect(),
        };
        // a handled command 7 at offset 20 (base 0); b's last command, at 25, was refused (not
        // remembered): it proves nothing, so 20 is looked at next.
        let state = [handled(a, 20, &[7]), handled(b, 25, &[8])];
        let log: HashMap<i64, (Option<String>, Vec<u8>)> = HashMap::from([
            (20, (Some(a.to_string()), command(a, 7))),
            (25, (Some(b.to_string()), command(b, 9))),
        ]);
        let mut reads = Vec::new();
        let mut read = |o: i64| {
            reads.push(o);
            Ok(log.get(&o).cloned())
        };
        assert_eq!(
            prove_same_log(&state, 0, (0, 30), &mut read).unwrap(),
            Some(20)
        );
        assert_eq!(reads, vec![25, 20]);
        // Positions are offsets plus the base; positions outside the log are not read.
        let shifted = [handled(a, 120, &[7]), handled(b, 500, &[8])];
        assert_eq!(
            prove_same_log(&shifted, 100, (0, 30), |o| Ok(log.get(&o).cloned())).unwrap(),
            Some(20)
        );
        // Another clue's record at a handled position: a new log.
        let other = HashMap::from([(25, (Some(a.to_string()), command(a, 8)))]);
        assert_eq!(
            prove_same_log(&state, 0, (0, 30), |o| Ok(other.get(&o).cloned())).unwrap(),
            None
        );
        // Nothing handled inside the log: nothing proven.
        assert_eq!(
            prove_same_log(&state, 0, (0, 5), |_| -> anyhow::Result<_> {
                panic!("nothing to read")
            })
            .unwrap(),
            None
        );
    }

    #[test]
    fn a_dedupe_partition_is_reset_only_past_its_end() {
        let c = committed(50, 0, None);
        assert!(judge_committed("clues.dedupe", "d", 0, &c, (0, 50), ENRICH).is_none());
        let r = judge_committed("clues.dedupe", "d", 0, &c, (0, 20), ENRICH).unwrap();
        assert_eq!((r.position, r.high), (50, 20));
        assert!(judge_committed(
            "clues.dedupe",
            "d",
            0,
            &Committed::default(),
            (0, 0),
            ENRICH
        )
        .is_none());
        assert!(r
            .to_string()
            .contains("`gridclue-enrich rebase --topic clues.dedupe"));
    }
}
