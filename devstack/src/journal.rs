//! The dev broker's journal on disk: every record of every topic, in the order the broker
//! assigned their offsets, plus the topic layout and the consumer groups' committed offsets.
//!
//! A journal directory holds
//!
//! - `records.journal`: an append-only log of frames `len: u32 | crc32: u32 | body` (little
//!   endian) after an 8-byte magic. A frame whose length or checksum does not hold ends the log:
//!   that is what a process killed in the middle of a write leaves, and [`scan`] reports how many
//!   bytes it cut so the caller can truncate the file before appending again;
//! - `topics.json`: the topics and their partition counts (written before the first record of a
//!   new topic);
//! - `groups.json`: the last snapshot of the consumer groups' committed offsets.
//!
//! JSON files are replaced atomically (temporary file, fsync, rename).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// First bytes of `records.journal` (format version 1).
const MAGIC: &[u8; 8] = b"GCJRNL01";
/// A frame larger than this is not a frame but garbage (the mock's own record limit is 1 MB).
const MAX_FRAME_BYTES: u32 = 64 * 1024 * 1024;

pub const RECORDS_FILE: &str = "records.journal";
pub const TOPICS_FILE: &str = "topics.json";
pub const GROUPS_FILE: &str = "groups.json";

/// Errors reading or writing a journal directory.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("journal {path}: not a gridclue dev broker journal (unknown header)")]
    NotAJournal { path: PathBuf },
    #[error("journal {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One record as the broker served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (epoch ms), when it had one.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Headers in order; a header value may be null.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl JournalRecord {
    fn encode_body(&self, out: &mut Vec<u8>) {
        put_bytes(out, Some(self.topic.as_bytes()));
        out.extend_from_slice(&self.partition.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.timestamp_ms.unwrap_or(-1).to_le_bytes());
        put_bytes(out, self.key.as_deref());
        put_bytes(out, self.value.as_deref());
        out.extend_from_slice(&(self.headers.len() as u32).to_le_bytes());
        for (name, value) in &self.headers {
            put_bytes(out, Some(name.as_bytes()));
            put_bytes(out, value.as_deref());
        }
    }

    fn decode_body(body: &[u8]) -> Option<JournalRecord> {
        let mut r = Cursor { rest: body };
        let topic = String::from_utf8(r.bytes()??).ok()?;
        let partition = i32::from_le_bytes(r.array()?);
        let offset = i64::from_le_bytes(r.array()?);
        let timestamp = i64::from_le_bytes(r.array()?);
        let key = r.bytes()?;
        let value = r.bytes()?;
        let count = u32::from_le_bytes(r.array()?);
        let mut headers = Vec::new();
        for _ in 0..count {
            let name = String::from_utf8(r.bytes()??).ok()?;
            headers.push((name, r.bytes()?));
        }
        r.rest.is_empty().then_some(JournalRecord {
            topic,
            partition,
            offset,
            timestamp_ms: (timestamp >= 0).then_some(timestamp),
            key,
            value,
            headers,
        })
    }
}

/// `len: i32` (-1 for null) then the bytes.
fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            out.extend_from_slice(&(b.len() as i32).to_le_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&(-1i32).to_le_bytes()),
    }
}

struct Cursor<'a> {
    rest: &'a [u8],
}

impl Cursor<'_> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.rest.split_first_chunk::<N>()?;
        self.rest = tail;
        Some(*head)
    }

    /// `None` when the body is too short; `Some(None)` for a null.
    fn bytes(&mut self) -> Option<Option<Vec<u8>>> {
        let len = i32::from_le_bytes(self.array()?);
        if len < 0 {
            return Some(None);
        }
        let len = len as usize;
        if self.rest.len() < len {
            return None;
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Some(Some(head.to_vec()))
    }
}

/// Appends frames to `records.journal`; [`JournalWriter::sync`] makes them durable.
pub struct JournalWriter {
    path: PathBuf,
    out: BufWriter<File>,
    frame: Vec<u8>,
    unsynced_records: u64,
    bytes_written: u64,
}

impl JournalWriter {
    /// Opens the records file of `dir` for appending, writing the header when it is new. Call it
    /// after [`scan`] truncated a torn tail.
    pub fn open(dir: &Path) -> Result<JournalWriter, JournalError> {
        let path = dir.join(RECORDS_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        if len == 0 {
            file.write_all(MAGIC).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
            sync_dir(dir)?;
        }
        Ok(JournalWriter {
            path,
            out: BufWriter::with_capacity(1 << 20, file),
            frame: Vec::new(),
            unsynced_records: 0,
            bytes_written: 0,
        })
    }

    /// Buffers one record (not yet durable).
    pub fn append(&mut self, record: &JournalRecord) -> Result<(), JournalError> {
        self.frame.clear();
        self.frame.extend_from_slice(&[0; 8]);
        record.encode_body(&mut self.frame);
        let body_len = (self.frame.len() - 8) as u32;
        let crc = crc32fast::hash(&self.frame[8..]);
        self.frame[..4].copy_from_slice(&body_len.to_le_bytes());
        self.frame[4..8].copy_from_slice(&crc.to_le_bytes());
        self.out
            .write_all(&self.frame)
            .map_err(io_err(&self.path))?;
        self.unsynced_records += 1;
        self.bytes_written += self.frame.len() as u64;
        Ok(())
    }

    /// Records appended since the last [`JournalWriter::sync`].
    pub fn unsynced_records(&self) -> u64 {
        self.unsynced_records
    }

    /// Bytes of frames appended through this writer.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Hands the buffered frames to the operating system without fsyncing them: from then on
    /// they survive a kill of this process (not a crash of the machine).
    pub fn write_out(&mut self) -> Result<(), JournalError> {
        self.out.flush().map_err(io_err(&self.path))
    }

    /// Writes the buffered frames and fsyncs the file. Returns how many records it made durable.
    pub fn sync(&mut self) -> Result<u64, JournalError> {
        if self.unsynced_records == 0 {
            return Ok(0);
        }
        self.out.flush().map_err(io_err(&self.path))?;
        self.out.get_ref().sync_data().map_err(io_err(&self.path))?;
        Ok(std::mem::take(&mut self.unsynced_records))
    }
}

/// What [`scan`] found in `records.journal`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanSummary {
    /// Whole, valid records read.
    pub records: u64,
    /// Length of the valid prefix of the file.
    pub valid_bytes: u64,
    /// Bytes after the valid prefix: a torn or corrupt tail.
    pub torn_bytes: u64,
}

/// Reads every valid record of `dir`'s journal in order and hands it to `each` (which may fail:
/// its error stops the scan). A missing file is an empty journal. When the file ends in a torn or
/// corrupt frame, the frames before it are read and the rest is counted in
/// [`ScanSummary::torn_bytes`]; [`truncate_torn_tail`] cuts it.
pub fn scan<E>(
    dir: &Path,
    mut each: impl FnMut(JournalRecord) -> Result<(), E>,
) -> Result<Result<ScanSummary, E>, JournalError> {
    let path = dir.join(RECORDS_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ok(ScanSummary::default())),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let file_len = file.metadata().map_err(io_err(&path))?.len();
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut summary = ScanSummary::default();
    if file_len == 0 {
        return Ok(Ok(summary));
    }
    if file_len < MAGIC.len() as u64 {
        // A header cut short by a crash at creation: nothing was journaled after it.
        summary.torn_bytes = file_len;
        return Ok(Ok(summary));
    }
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic).map_err(io_err(&path))?;
    if &magic != MAGIC {
        return Err(JournalError::NotAJournal { path });
    }
    summary.valid_bytes = MAGIC.len() as u64;
    let mut body = Vec::new();
    loop {
        let mut head = [0u8; 8];
        match read_full(&mut input, &mut head).map_err(io_err(&path))? {
            0 => break,
            8 => {}
            _ => break, // torn frame header
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_FRAME_BYTES {
            break;
        }
        body.resize(len as usize, 0);
        if read_full(&mut input, &mut body).map_err(io_err(&path))? < body.len()
            || crc32fast::hash(&body) != crc
        {
            break;
        }
        let Some(record) = JournalRecord::decode_body(&body) else {
            break;
        };
        if let Err(e) = each(record) {
            return Ok(Err(e));
        }
        summary.records += 1;
        summary.valid_bytes += 8 + u64::from(len);
    }
    summary.torn_bytes = file_len - summary.valid_bytes;
    Ok(Ok(summary))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Cuts `records.journal` to the valid prefix [`scan`] found (a header-only file when nothing
/// valid was left).
pub fn truncate_torn_tail(dir: &Path, summary: &ScanSummary) -> Result<(), JournalError> {
    let path = dir.join(RECORDS_FILE);
    let mut file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    if summary.valid_bytes < MAGIC.len() as u64 {
        file.set_len(0).map_err(io_err(&path))?;
        file.seek(SeekFrom::Start(0)).map_err(io_err(&path))?;
        file.write_all(MAGIC).map_err(io_err(&path))?;
    } else {
        file.set_len(summary.valid_bytes).map_err(io_err(&path))?;
    }
    file.sync_all().map_err(io_err(&path))
}

/// The topics of a journal and their partition counts.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicLayout {
    pub topics: BTreeMap<String, i32>,
}

/// One committed offset of a group (the commit's metadata string is not kept).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The committed offsets of every journaled group.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsets {
    pub groups: BTreeMap<String, Vec<CommittedOffset>>,
}

/// Reads a JSON file of the journal; `None` when it does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> Result<Option<T>, JournalError> {
    let path = dir.join(name);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| JournalError::Json { path, source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Replaces a JSON file of the journal atomically and durably.
pub fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), JournalError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| JournalError::Json {
        path: path.clone(),
        source,
    })?;
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    result.map_err(io_err(&path))?;
    sync_dir(dir)
}

/// Makes a rename or a new file in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64) -> JournalRecord {
        JournalRecord {
            topic: "clues.commands".into(),
            partition,
            offset,
            timestamp_ms: Some(1_700_000_000_000 + offset),
            key: Some(format!("clue-{offset}").into_bytes()),
            value: Some(vec![offset as u8; (offset % 7) as usize]),
            headers: vec![
                ("trace".into(), Some(b"abc".to_vec())),
                ("none".into(), None),
            ],
        }
    }

    fn read_all(dir: &Path) -> (Vec<JournalRecord>, ScanSummary) {
        let mut got = Vec::new();
        let summary = scan(dir, |r| {
            got.push(r);
            Ok::<_, std::convert::Infallible>(())
        })
        .unwrap()
        .unwrap();
        (got, summary)
    }

    #[test]
    fn records_roundtrip_with_nulls_and_headers() {
        let dir = tempfile::tempdir().unwrap();
        let mut records: Vec<JournalRecord> = (0..50).map(|o| record((o % 3) as i32, o)).collect();
        records.push(JournalRecord {
            topic: "clues.dlq".into(),
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: None,
            value: None,
            headers: vec![],
        });
        records.push(JournalRecord {
            key: Some(vec![]),
            value: Some(vec![]),
            ..record(1, 99)
        });
        let mut w = JournalWriter::open(dir.path()).unwrap();
        for r in &records {
            w.append(r).unwrap();
        }
        assert_eq!(w.sync().unwrap(), records.len() as u64);
        assert_eq!(w.sync().unwrap(), 0, "nothing left to sync");
        drop(w);
        let (got, summary) = read_all(dir.path());
        assert_eq!(got, records);
        assert_eq!(summary.records, records.len() as u64);
        assert_eq!(summary.torn_bytes, 0);

        // appending after a reopen continues the same log
        let mut w = JournalWriter::open(dir.path()).unwrap();
        w.append(&record(2, 100)).unwrap();
        w.sync().unwrap();
        assert_eq!(read_all(dir.path()).0.len(), records.len() + 1);
    }

    #[test]
    fn a_torn_or_corrupt_tail_ends_the_log_and_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = JournalWriter::open(dir.path()).unwrap();
        for o in 0..10 {
            w.append(&record(0, o)).unwrap();
        }
        w.sync().unwrap();
        drop(w);
        let path = dir.path().join(RECORDS_FILE);
        let whole = fs::metadata(&path).unwrap().len();

        // half a frame, as a kill in the middle of a write leaves it
        let mut bytes = fs::read(&path).unwrap();
        let frame_of_10 = {
            let mut w = Vec::new();
            record(0, 10).encode_body(&mut w);
            w.len() + 8
        };
        let mut tail = vec![0u8; frame_of_10];
        tail[..4].copy_from_slice(&((frame_of_10 - 8) as u32).to_le_bytes());
        bytes.extend_from_slice(&tail[..frame_of_10 / 2]);
        fs::write(&path, &bytes).unwrap();
        let (got, summary) = read_all(dir.path());
        assert_eq!(got.len(), 10);
        assert_eq!(summary.valid_bytes, whole);
        assert_eq!(summary.torn_bytes, (frame_of_10 / 2) as u64);
        truncate_torn_tail(dir.path(), &summary).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), whole);

        // a flipped bit in the last frame: the checksum refuses it and the frames before stay
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let (got, summary) = read_all(dir.path());
        assert_eq!(got.len(), 9);
        assert_eq!(got.last().unwrap().offset, 8);
        assert!(summary.torn_bytes > 0);
    }

    #[test]
    fn a_missing_or_foreign_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_all(dir.path()).1, ScanSummary::default());
        fs::write(dir.path().join(RECORDS_FILE), b"something else entirely").unwrap();
        assert!(matches!(
            scan(dir.path(), |_| Ok::<_, std::convert::Infallible>(())),
            Err(JournalError::NotAJournal { .. })
        ));
    }

    #[test]
    fn json_files_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_json::<GroupOffsets>(dir.path(), GROUPS_FILE).unwrap(),
            None
        );
        let mut offsets = GroupOffsets::default();
        offsets.groups.insert(
            "gridclue-sink".into(),
            vec![CommittedOffset {
                topic: "clues.events".into(),
                partition: 2,
                offset: 41,
            }],
        );
        write_json(dir.path(), GROUPS_FILE, &offsets).unwrap();
        assert_eq!(
            read_json::<GroupOffsets>(dir.path(), GROUPS_FILE).unwrap(),
            Some(offsets)
        );
    }
}
