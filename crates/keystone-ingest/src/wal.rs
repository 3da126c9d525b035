//! The collector's write-ahead log: events are durable on local disk before
//! the HTTP 200, and reach the lake later, exactly once.
//!
//! ```text
//!  requests ─▶ submit(record) ─▶ writer thread: append every pending record,
//!                                 ONE fdatasync for all of them (group commit),
//!                                 publish the durable sequence number
//!           ◀─ wait_durable(seq) ◀┘
//!  every flush interval (or segment size) the writer closes the segment
//!  ─▶ flusher (see `flush.rs`): one Delta commit per group of segments, tagged
//!     with the application transaction (wal id, last segment number), then the
//!     segment files are deleted
//! ```
//!
//! On disk, in the WAL folder:
//!
//! ```text
//!  id                     uuid of this WAL: the Delta application id is "keystone-collect-<id>"
//!  flushed                number of the last segment known committed to the lake
//!  00000000000000000042.wal   a segment: records [len u32][crc32 u32][payload]
//! ```
//!
//! A record's payload is `[events len u32][events Arrow IPC][quarantine Arrow IPC]`.
//! A torn record at the end of a segment (a crash in the middle of a write)
//! fails its length or checksum and is dropped with everything after it: it
//! was never acknowledged, since acknowledgement waits for the fsync.
//!
//! Segment numbers only grow (they are the Delta transaction versions): the
//! next segment number is above every existing segment and above `flushed`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use tokio::sync::watch;

use crate::{Error, Result};

/// One acknowledged unit: the events and rejected rows of one request.
#[derive(Debug, Clone, Default)]
pub struct WalRecord {
    /// Rows of the `events` table.
    pub events: Option<RecordBatch>,
    /// Rows of the `quarantine` table.
    pub quarantine: Option<RecordBatch>,
}

impl WalRecord {
    /// Encode the payload (without the frame).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(4096);
        let events = encode_batch(self.events.as_ref())?;
        let len = u32::try_from(events.len()).map_err(|_| Error::Wal {
            path: "record".into(),
            reason: "a record's events exceed 4 GiB".into(),
        })?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&events);
        out.extend_from_slice(&encode_batch(self.quarantine.as_ref())?);
        Ok(out)
    }

    /// Decode a payload written by [`WalRecord::encode`].
    pub fn decode(payload: &[u8]) -> std::result::Result<Self, String> {
        if payload.len() < 4 {
            return Err("record shorter than its header".into());
        }
        let len = u32::from_le_bytes(payload[..4].try_into().map_err(|_| "header")?) as usize;
        let rest = &payload[4..];
        if rest.len() < len {
            return Err("events part longer than the record".into());
        }
        Ok(Self {
            events: decode_batch(&rest[..len])?,
            quarantine: decode_batch(&rest[len..])?,
        })
    }
}

fn encode_batch(batch: Option<&RecordBatch>) -> Result<Vec<u8>> {
    let Some(batch) = batch.filter(|b| b.num_rows() > 0) else {
        return Ok(Vec::new());
    };
    let mut w = StreamWriter::try_new(Vec::new(), batch.schema_ref())?;
    w.write(batch)?;
    w.finish()?;
    Ok(w.into_inner()?)
}

fn decode_batch(bytes: &[u8]) -> std::result::Result<Option<RecordBatch>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let reader = StreamReader::try_new(bytes, None).map_err(|e| e.to_string())?;
    let schema: SchemaRef = reader.schema();
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    arrow::compute::concat_batches(&schema, &batches)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// A closed segment, ready for the lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Its number: the Delta transaction version it commits under.
    pub number: u64,
    pub path: PathBuf,
    pub bytes: u64,
}

impl Segment {
    /// Every intact record of the segment, in order. A torn tail is dropped
    /// (reported in the second value: bytes ignored).
    pub fn read(&self) -> Result<(Vec<WalRecord>, u64)> {
        let io = |source| Error::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut data = Vec::new();
        File::open(&self.path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(io)?;
        let mut records = Vec::new();
        let mut at = 0usize;
        while data.len() - at >= 8 {
            let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap_or_default()) as usize;
            let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap_or_default());
            let start = at + 8;
            if data.len() - start < len {
                break;
            }
            let payload = &data[start..start + len];
            if crc32fast::hash(payload) != crc {
                break;
            }
            let record = WalRecord::decode(payload).map_err(|reason| Error::Wal {
                path: self.path.display().to_string(),
                reason: format!("record at byte {at}: {reason}"),
            })?;
            records.push(record);
            at = start + len;
        }
        Ok((records, (data.len() - at) as u64))
    }
}

/// Counters shared by the WAL, the flusher and whoever reports them.
#[derive(Debug, Default)]
pub struct WalStats {
    /// Bytes in segments not yet committed to the lake.
    pub pending_bytes: AtomicU64,
    /// fsyncs done (each covers one or more records).
    pub syncs: AtomicU64,
    /// Records appended.
    pub records: AtomicU64,
}

/// The WAL folder's identity and recovery state.
#[derive(Debug)]
pub struct WalDir {
    pub dir: PathBuf,
    /// Delta application id of this WAL's commits.
    pub app_id: String,
    /// Segments left by a previous run (in order), to flush first.
    pub leftover: Vec<Segment>,
    /// The number the next segment gets.
    pub next_segment: u64,
}

const FLUSHED_FILE: &str = "flushed";

impl WalDir {
    /// Open (or create) the WAL folder and find what a previous run left.
    pub fn open(dir: &Path) -> Result<Self> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let id_path = dir.join("id");
        let id = match std::fs::read_to_string(&id_path) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&id_path)(e)),
            _ => {
                let id = uuid::Uuid::new_v4().to_string();
                write_atomic(&id_path, id.as_bytes())?;
                id
            }
        };
        let mut leftover = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".wal"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let bytes = entry.metadata().map_err(io(&entry.path()))?.len();
            leftover.push(Segment {
                number,
                path: entry.path(),
                bytes,
            });
        }
        leftover.sort_by_key(|s| s.number);
        let flushed = read_flushed(dir)?;
        let next_segment = leftover
            .last()
            .map_or(0, |s| s.number)
            .max(flushed.unwrap_or(0))
            + 1;
        Ok(Self {
            dir: dir.to_path_buf(),
            app_id: format!("keystone-collect-{id}"),
            leftover,
            next_segment,
        })
    }

    /// Raise the next segment number above `committed` (the lake's
    /// transaction version for this WAL, which may be ahead of `flushed`).
    pub fn advance_past(&mut self, committed: Option<i64>) {
        if let Some(v) = committed.and_then(|v| u64::try_from(v).ok()) {
            self.next_segment = self.next_segment.max(v + 1);
        }
    }
}

/// The last segment number recorded as committed, if any.
pub fn read_flushed(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(FLUSHED_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().map(Some).map_err(|_| Error::Wal {
            path: path.display().to_string(),
            reason: format!("not a segment number: {s:?}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Record `number` as the last committed segment (before deleting segments).
pub fn write_flushed(dir: &Path, number: u64) -> Result<()> {
    write_atomic(&dir.join(FLUSHED_FILE), number.to_string().as_bytes())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Io {
            path: dir.display().to_string(),
            source,
        })
}

/// How the writer cuts segments.
#[derive(Debug, Clone, Copy)]
pub struct WalOptions {
    /// Close the current segment after this long (if it holds anything).
    pub rotate_interval: Duration,
    /// … or once it is this large.
    pub segment_bytes: u64,
}

/// What the writer publishes after each fsync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durable {
    /// Every record with `seq <= durable` is on disk.
    pub seq: u64,
    /// The WAL failed (write or fsync error): nothing more is durable.
    pub failed: Option<String>,
}

struct Submit {
    seq: u64,
    frame: Vec<u8>,
}

/// The writing side of the WAL: a writer thread fed by a channel.
pub struct WalWriter {
    /// Taking the next sequence number and queueing happen under one lock,
    /// so the writer sees records in sequence order.
    tx: std::sync::Mutex<(u64, Option<mpsc::Sender<Submit>>)>,
    durable: watch::Receiver<Durable>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The WAL folder, for error messages.
    dir: String,
}

impl WalWriter {
    /// Start the writer thread on `dir`, first segment `first_segment`;
    /// closed segments are sent to `closed`.
    pub fn start(
        dir: &Path,
        first_segment: u64,
        opts: WalOptions,
        stats: Arc<WalStats>,
        closed: tokio::sync::mpsc::UnboundedSender<Segment>,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Submit>();
        let (durable_tx, durable) = watch::channel(Durable::default());
        let mut seg = OpenSegment::create_in(dir, first_segment)?;
        let thread = std::thread::Builder::new()
            .name("keystone-wal".into())
            .spawn(move || {
                let mut last_rotate = Instant::now();
                loop {
                    let wait = opts
                        .rotate_interval
                        .saturating_sub(last_rotate.elapsed())
                        .max(Duration::from_millis(1));
                    let first = match rx.recv_timeout(wait) {
                        Ok(s) => Some(s),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    if let Some(first) = first {
                        let mut last_seq = first.seq;
                        let mut group = vec![first];
                        let mut bytes: usize = group[0].frame.len();
                        while bytes < 16 << 20 {
                            match rx.try_recv() {
                                Ok(s) => {
                                    bytes += s.frame.len();
                                    last_seq = s.seq;
                                    group.push(s);
                                }
                                Err(_) => break,
                            }
                        }
                        match seg.append(&group) {
                            Ok(()) => {
                                stats.syncs.fetch_add(1, Ordering::Relaxed);
                                stats
                                    .records
                                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                                stats
                                    .pending_bytes
                                    .fetch_add(bytes as u64, Ordering::Relaxed);
                                durable_tx.send_modify(|d| d.seq = last_seq);
                            }
                            Err(e) => {
                                durable_tx.send_modify(|d| d.failed = Some(e.to_string()));
                                return;
                            }
                        }
                    }
                    let due = last_rotate.elapsed() >= opts.rotate_interval
                        || seg.bytes >= opts.segment_bytes;
                    if due {
                        last_rotate = Instant::now();
                        if seg.bytes > 0 {
                            let next = match OpenSegment::create_in(&seg.dir, seg.number + 1) {
                                Ok(s) => s,
                                Err(e) => {
                                    durable_tx.send_modify(|d| d.failed = Some(e.to_string()));
                                    return;
                                }
                            };
                            let done = std::mem::replace(&mut seg, next);
                            let _ = closed.send(done.close());
                        }
                    }
                }
                // Shutdown: hand over the last segment (or remove it if empty).
                if seg.bytes > 0 {
                    let _ = closed.send(seg.close());
                } else {
                    let _ = std::fs::remove_file(&seg.path);
                }
            })
            .map_err(|source| Error::Io {
                path: "keystone-wal thread".into(),
                source,
            })?;
        Ok(Self {
            tx: std::sync::Mutex::new((1, Some(tx))),
            durable,
            thread: std::sync::Mutex::new(Some(thread)),
            dir: dir.display().to_string(),
        })
    }

    /// Frame `record` and queue it; returns the sequence number to wait for
    /// ([`WalWriter::wait_durable`]).
    pub fn submit(&self, record: &WalRecord) -> Result<u64> {
        let payload = record.encode()?;
        let len = u32::try_from(payload.len()).map_err(|_| Error::Wal {
            path: self.dir.clone(),
            reason: "a record exceeds 4 GiB".into(),
        })?;
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        let stopped = || Error::Wal {
            path: self.dir.clone(),
            reason: "the WAL writer stopped".into(),
        };
        let mut guard = self.tx.lock().map_err(|_| stopped())?;
        let seq = guard.0;
        let tx = guard.1.as_ref().ok_or_else(stopped)?;
        tx.send(Submit { seq, frame }).map_err(|_| stopped())?;
        guard.0 += 1;
        Ok(seq)
    }

    /// What is durable so far, and whether the WAL failed.
    pub fn durable(&self) -> watch::Receiver<Durable> {
        self.durable.clone()
    }

    /// Wait until record `seq` is on disk.
    pub async fn wait_durable(&self, seq: u64) -> Result<()> {
        let mut rx = self.durable.clone();
        let state = rx
            .wait_for(|d| d.seq >= seq || d.failed.is_some())
            .await
            .map_err(|_| Error::Wal {
                path: self.dir.clone(),
                reason: "the WAL writer stopped".into(),
            })?;
        if state.seq >= seq {
            return Ok(());
        }
        Err(Error::Wal {
            path: self.dir.clone(),
            reason: state.failed.clone().unwrap_or_default(),
        })
    }

    /// Stop: write what is queued, close the last segment (sent to the
    /// flusher), and join the thread.
    pub fn close(&self) {
        if let Ok(mut guard) = self.tx.lock() {
            guard.1.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for WalWriter {
    fn drop(&mut self) {
        self.close();
    }
}

struct OpenSegment {
    dir: PathBuf,
    number: u64,
    path: PathBuf,
    file: File,
    bytes: u64,
}

impl OpenSegment {
    fn create_in(dir: &Path, number: u64) -> Result<Self> {
        let path = dir.join(format!("{number:020}.wal"));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })?;
        // The new name must survive a crash as surely as the records in it.
        sync_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            number,
            path,
            file,
            bytes: 0,
        })
    }

    fn append(&mut self, group: &[Submit]) -> Result<()> {
        let io = |source| Error::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut buf = Vec::with_capacity(group.iter().map(|s| s.frame.len()).sum());
        for s in group {
            buf.extend_from_slice(&s.frame);
        }
        self.file.write_all(&buf).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.bytes += buf.len() as u64;
        Ok(())
    }

    fn close(self) -> Segment {
        Segment {
            number: self.number,
            path: self.path,
            bytes: self.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(ids: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(ids.to_vec())),
                Arc::new(Int64Array::from_iter_values(0..ids.len() as i64)),
            ],
        )
        .expect("batch")
    }

    fn opts() -> WalOptions {
        WalOptions {
            rotate_interval: Duration::from_secs(3600),
            segment_bytes: 1 << 30,
        }
    }

    #[tokio::test]
    async fn records_round_trip_through_a_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stats = Arc::new(WalStats::default());
        let wal = WalWriter::start(dir.path(), 7, opts(), stats.clone(), tx).expect("start");
        let a = wal
            .submit(&WalRecord {
                events: Some(batch(&["a", "b"])),
                ..Default::default()
            })
            .expect("a");
        let b = wal
            .submit(&WalRecord {
                quarantine: Some(batch(&["q"])),
                ..Default::default()
            })
            .expect("b");
        wal.wait_durable(b).await.expect("durable");
        assert!(a < b);
        wal.close();
        let seg = rx.recv().await.expect("closed segment");
        assert_eq!(seg.number, 7);
        let (records, torn) = seg.read().expect("read");
        assert_eq!(torn, 0);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].events.as_ref().map(|b| b.num_rows()), Some(2));
        assert!(records[0].quarantine.is_none());
        assert_eq!(
            records[1].quarantine.as_ref().map(|b| b.num_rows()),
            Some(1)
        );
        assert_eq!(stats.records.load(Ordering::Relaxed), 2);
        assert!(stats.pending_bytes.load(Ordering::Relaxed) > 0);
    }

    #[tokio::test]
    async fn a_torn_tail_is_dropped_and_earlier_records_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let wal = WalWriter::start(dir.path(), 1, opts(), Arc::default(), tx).expect("start");
        for ids in [["a"], ["b"]] {
            let seq = wal
                .submit(&WalRecord {
                    events: Some(batch(&ids)),
                    ..Default::default()
                })
                .expect("submit");
            wal.wait_durable(seq).await.expect("durable");
        }
        wal.close();
        let seg = rx.recv().await.expect("segment");
        // Cut the last record in half, then flip a byte of a copy's last record.
        let full = std::fs::read(&seg.path).expect("read");
        std::fs::write(&seg.path, &full[..full.len() - 10]).expect("write");
        let (records, torn) = seg.read().expect("read");
        assert_eq!(records.len(), 1);
        assert!(torn > 0);
        let mut flipped = full.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        std::fs::write(&seg.path, &flipped).expect("write");
        assert_eq!(seg.read().expect("read").0.len(), 1);
    }

    #[tokio::test]
    async fn segments_rotate_and_numbers_survive_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let small = WalOptions {
            rotate_interval: Duration::from_secs(3600),
            segment_bytes: 1,
        };
        let opened = WalDir::open(dir.path()).expect("open");
        assert_eq!(opened.next_segment, 1);
        assert!(opened.app_id.starts_with("keystone-collect-"));
        let wal = WalWriter::start(dir.path(), opened.next_segment, small, Arc::default(), tx)
            .expect("start");
        for id in ["a", "b", "c"] {
            let seq = wal
                .submit(&WalRecord {
                    events: Some(batch(&[id])),
                    ..Default::default()
                })
                .expect("submit");
            wal.wait_durable(seq).await.expect("durable");
        }
        wal.close();
        let mut numbers = Vec::new();
        while let Ok(s) = rx.try_recv() {
            numbers.push(s.number);
        }
        assert_eq!(numbers, vec![1, 2, 3]);

        // A restart finds the three segments and continues after them; the
        // same id is kept.
        let again = WalDir::open(dir.path()).expect("reopen");
        assert_eq!(again.app_id, opened.app_id);
        assert_eq!(
            again.leftover.iter().map(|s| s.number).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(again.next_segment, 4);

        // Flushed and deleted: numbering still continues past them.
        write_flushed(dir.path(), 3).expect("flushed");
        for s in &again.leftover {
            std::fs::remove_file(&s.path).expect("rm");
        }
        let mut third = WalDir::open(dir.path()).expect("reopen");
        assert!(third.leftover.is_empty());
        assert_eq!(third.next_segment, 4);
        third.advance_past(Some(9));
        assert_eq!(third.next_segment, 10);
    }
}
