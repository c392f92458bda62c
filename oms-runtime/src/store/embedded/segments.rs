//! The journal's files: records appended in position order to segment files, one `fdatasync`
//! per group commit, and nothing else.
//!
//! # Why not an LSM tree for the journal
//! The journal was a fjall keyspace. fjall registers every flushed or compacted table under
//! its tree's version lock, with five fsyncs, and every insert and read of that tree waits
//! behind it: 60–140 ms, once per flush and per compaction, measured as the half-rate p99 of
//! `scripts/bench-http` (`docs/benchmarks.md`). A journal's keys are its positions: they only
//! grow and are never rewritten, so it needs neither memtables nor compaction. Appending to a
//! file is the whole of its work, and no background task ever holds the appender. No kept crate
//! does just this (the write-ahead-log crates found were young single-author projects, or
//! Raft engines with their own entry model), so the format is ours, and small:
//!
//! # Format
//! A segment is a file `<first position, 20 digits>.log` holding consecutive positions from
//! `first`. A record is the payload's length (u32, little-endian), the payload's xxh3-64
//! (u64, little-endian), then the payload. A new segment starts once the active one passes
//! [`SEGMENT_BYTES`]; the next segment's first position says where the previous one ends.
//!
//! # Torn writes
//! An append is acknowledged only after its `fdatasync`. So a record that is cut short or fails
//! its checksum at the end of the last segment was never acknowledged: opening cuts it off.
//! The same anywhere else is corruption, and opening fails.

use crate::store::{Position, Result, StoreError};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use xxhash_rust::xxh3::xxh3_64;

/// A segment's size before the next one starts.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Length and checksum.
const HEADER: usize = 12;
/// The largest payload a reader accepts: a longer length field is a torn or corrupt header.
const MAX_RECORD: usize = 64 << 20;
/// Every this many positions, the byte offset is remembered, so a read starts near its record.
const CHECKPOINT_EVERY: Position = 1024;

fn io_error(context: &str, error: impl std::fmt::Display) -> StoreError {
    super::db_error(format!("journal segments: {context}: {error}"))
}

fn corrupt(message: String) -> StoreError {
    StoreError::Corrupt {
        table: "journal",
        message,
    }
}

/// The appending side, owned by the journal's writer.
pub(super) struct Segments {
    file: Option<File>,
    /// Bytes in the active segment.
    len: u64,
    shared: Shared,
}

/// The reading side: cheap to clone, safe beside the appender.
#[derive(Clone)]
pub(super) struct Shared {
    dir: PathBuf,
    /// Each segment's first position, ascending; the last is the active one.
    firsts: Arc<RwLock<Vec<Position>>>,
    /// The last position written and synced; readers never look past it.
    head: Arc<AtomicU64>,
    /// Position → (segment's first position, byte offset of its record).
    checkpoints: Arc<Mutex<BTreeMap<Position, (Position, u64)>>>,
}

fn segment_path(dir: &Path, first: Position) -> PathBuf {
    dir.join(format!("{first:020}.log"))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| io_error("sync the directory", error))
}

/// Reads one record at the reader's position: `Ok(None)` at a clean end of file, `Err` with
/// the reason when the bytes there are not a whole, intact record.
fn next_record(
    reader: &mut impl Read,
) -> std::io::Result<Option<std::result::Result<Vec<u8>, String>>> {
    let mut header = [0u8; HEADER];
    let mut filled = 0;
    while filled < HEADER {
        match reader.read(&mut header[filled..])? {
            0 if filled == 0 => return Ok(None),
            0 => {
                return Ok(Some(Err(format!(
                    "a header cut short after {filled} bytes"
                ))));
            }
            n => filled += n,
        }
    }
    let len = u32::from_le_bytes(header[..4].try_into().unwrap_or_default()) as usize;
    let sum = u64::from_le_bytes(header[4..].try_into().unwrap_or_default());
    if len > MAX_RECORD {
        return Ok(Some(Err(format!("a length of {len} bytes"))));
    }
    let mut payload = vec![0; len];
    match reader.read_exact(&mut payload) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::UnexpectedEof => {
            return Ok(Some(Err("a record cut short".into())));
        }
        Err(error) => return Err(error),
    }
    if xxh3_64(&payload) != sum {
        return Ok(Some(Err("a record whose checksum does not match".into())));
    }
    Ok(Some(Ok(payload)))
}

impl Segments {
    /// Opens the segments in `dir` (created if missing), cutting a torn record off the last.
    pub(super) fn open(dir: &Path) -> Result<Segments> {
        std::fs::create_dir_all(dir).map_err(|error| io_error("create the directory", error))?;
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|error| io_error("list", error))? {
            let name = entry.map_err(|error| io_error("list", error))?.file_name();
            let name = name.to_string_lossy();
            if let Some(first) = name.strip_suffix(".log").and_then(|n| n.parse().ok())
                && first > 0
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let shared = Shared {
            dir: dir.to_path_buf(),
            firsts: Arc::new(RwLock::new(firsts.clone())),
            head: Arc::new(AtomicU64::new(0)),
            checkpoints: Arc::new(Mutex::new(BTreeMap::new())),
        };
        let Some(&first) = firsts.last() else {
            return Ok(Segments {
                file: None,
                len: 0,
                shared,
            });
        };
        let path = segment_path(dir, first);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|error| io_error("open the last segment", error))?;
        let (mut count, mut valid) = (0u64, 0u64);
        {
            let mut reader = BufReader::new(&mut file);
            while let Some(record) =
                next_record(&mut reader).map_err(|error| io_error("read", error))?
            {
                match record {
                    Ok(payload) => {
                        count += 1;
                        valid += (HEADER + payload.len()) as u64;
                    }
                    Err(reason) => {
                        tracing::warn!(
                            segment = %path.display(),
                            offset = valid,
                            reason,
                            "cutting off a journal write torn by a crash (never acknowledged)"
                        );
                        break;
                    }
                }
            }
        }
        let on_disk = file
            .metadata()
            .map_err(|error| io_error("stat", error))?
            .len();
        if on_disk > valid {
            file.set_len(valid)
                .and_then(|()| file.sync_all())
                .map_err(|error| io_error("cut off a torn write", error))?;
        }
        shared.head.store(first + count - 1, Ordering::Release);
        Ok(Segments {
            file: Some(file),
            len: valid,
            shared,
        })
    }

    pub(super) fn shared(&self) -> Shared {
        self.shared.clone()
    }

    pub(super) fn head(&self) -> Position {
        self.shared.head.load(Ordering::Acquire)
    }

    /// Appends the payloads at the next positions, syncs, and gives the last position and the
    /// bytes written. With `first` given, the first payload must land at that position (an
    /// import of an earlier journal, which may not start at 1).
    pub(super) fn append<'a>(
        &mut self,
        first: Option<Position>,
        payloads: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(Position, u64)> {
        let head = self.head();
        let start = first.unwrap_or(head + 1);
        if start == 0 || (self.file.is_some() && start != head + 1) {
            return Err(corrupt(format!(
                "an append at position {start} after position {head}"
            )));
        }
        if self.file.is_none() {
            self.start_segment(start)?;
        }
        let active = self.active_first();
        let mut buffer = Vec::new();
        let mut checkpoints = Vec::new();
        let mut position = start - 1;
        for payload in payloads {
            if payload.len() > MAX_RECORD {
                return Err(corrupt(format!("a record of {} bytes", payload.len())));
            }
            position += 1;
            if position.is_multiple_of(CHECKPOINT_EVERY) {
                checkpoints.push((position, (active, self.len + buffer.len() as u64)));
            }
            buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buffer.extend_from_slice(&xxh3_64(payload).to_le_bytes());
            buffer.extend_from_slice(payload);
        }
        if buffer.is_empty() {
            return Ok((head, 0));
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| corrupt("no active segment".into()))?;
        file.write_all(&buffer)
            .and_then(|()| file.sync_data())
            .map_err(|error| io_error("append", error))?;
        self.len += buffer.len() as u64;
        if !checkpoints.is_empty()
            && let Ok(mut known) = self.shared.checkpoints.lock()
        {
            known.extend(checkpoints);
        }
        self.shared.head.store(position, Ordering::Release);
        if self.len >= SEGMENT_BYTES {
            self.start_segment(position + 1)?;
        }
        Ok((position, buffer.len() as u64))
    }

    fn active_first(&self) -> Position {
        self.shared
            .firsts
            .read()
            .ok()
            .and_then(|firsts| firsts.last().copied())
            .unwrap_or(1)
    }

    /// Starts the segment whose first position is `first`; it holds nothing yet.
    fn start_segment(&mut self, first: Position) -> Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(segment_path(&self.shared.dir, first))
            .map_err(|error| io_error("create a segment", error))?;
        sync_dir(&self.shared.dir)?;
        self.file = Some(file);
        self.len = 0;
        if let Ok(mut firsts) = self.shared.firsts.write() {
            firsts.push(first);
        }
        if self.head() == 0 {
            self.shared.head.store(first - 1, Ordering::Release);
        }
        Ok(())
    }
}

impl Shared {
    pub(super) fn head(&self) -> Position {
        self.head.load(Ordering::Acquire)
    }

    /// The first position the segments hold (0 when they hold none).
    pub(super) fn first(&self) -> Position {
        let head = self.head();
        self.firsts
            .read()
            .ok()
            .and_then(|firsts| firsts.first().copied())
            .filter(|&first| first <= head)
            .unwrap_or(0)
    }

    /// Up to `max` payloads from position `from` on, with their positions.
    pub(super) fn read(&self, from: Position, max: usize) -> Result<Vec<(Position, Vec<u8>)>> {
        let head = self.head();
        let from = from.max(self.first());
        let mut out = Vec::new();
        if from == 0 || from > head || max == 0 {
            return Ok(out);
        }
        let last = head.min(from.saturating_add(max as u64 - 1));
        let firsts = self
            .firsts
            .read()
            .map_err(|error| io_error("lock", error))?
            .clone();
        // Where to start: the segment holding `from`, at its nearest known record before it.
        let index = firsts.partition_point(|&first| first <= from) - 1;
        let (mut segment, mut position, mut offset) = (firsts[index], firsts[index], 0);
        if let Ok(known) = self.checkpoints.lock()
            && let Some((&at, &(in_segment, at_offset))) = known.range(..=from).next_back()
            && in_segment == segment
        {
            (position, offset) = (at, at_offset);
        }
        let mut next_firsts = firsts[index + 1..].iter().copied();
        let mut reader = self.open_at(segment, offset)?;
        let mut checkpoints = Vec::new();
        while position <= last {
            if position.is_multiple_of(CHECKPOINT_EVERY) {
                checkpoints.push((position, (segment, offset)));
            }
            let record = next_record(&mut reader).map_err(|error| io_error("read", error))?;
            match record {
                Some(Ok(payload)) => {
                    offset += (HEADER + payload.len()) as u64;
                    if position >= from {
                        out.push((position, payload));
                    }
                    position += 1;
                }
                Some(Err(reason)) => {
                    return Err(corrupt(format!(
                        "segment {segment}, position {position}: {reason}"
                    )));
                }
                None => match next_firsts.next() {
                    Some(next) if next == position => {
                        (segment, offset) = (next, 0);
                        reader = self.open_at(segment, 0)?;
                    }
                    _ => {
                        return Err(corrupt(format!(
                            "segment {segment} ends at position {} of {last}",
                            position - 1
                        )));
                    }
                },
            }
        }
        if let Ok(mut known) = self.checkpoints.lock() {
            known.extend(checkpoints);
        }
        Ok(out)
    }

    fn open_at(&self, segment: Position, offset: u64) -> Result<BufReader<File>> {
        let mut file = File::open(segment_path(&self.dir, segment))
            .map_err(|error| io_error("open a segment", error))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|error| io_error("seek", error))?;
        Ok(BufReader::with_capacity(256 << 10, file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(position: Position) -> Vec<u8> {
        format!("entry {position}")
            .repeat((position % 7) as usize + 1)
            .into_bytes()
    }

    fn append_range(segments: &mut Segments, range: std::ops::RangeInclusive<Position>) {
        let payloads: Vec<Vec<u8>> = range.map(payload).collect();
        segments
            .append(None, payloads.iter().map(Vec::as_slice))
            .unwrap();
    }

    fn positions(read: &[(Position, Vec<u8>)]) -> Vec<Position> {
        read.iter().map(|(position, _)| *position).collect()
    }

    #[test]
    fn appends_are_read_back_in_order_and_after_a_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        assert_eq!(segments.head(), 0);
        assert!(segments.shared().read(1, 10).unwrap().is_empty());
        append_range(&mut segments, 1..=3000);
        append_range(&mut segments, 3001..=3005);
        let shared = segments.shared();
        assert_eq!(shared.head(), 3005);
        let read = shared.read(1020, 10).unwrap();
        assert_eq!(positions(&read), (1020..1030).collect::<Vec<_>>());
        assert_eq!(read[3].1, payload(1023));
        // Reads stop at the head.
        assert_eq!(
            positions(&shared.read(3000, 100).unwrap()),
            vec![3000, 3001, 3002, 3003, 3004, 3005]
        );
        drop(segments);
        let segments = Segments::open(dir.path()).unwrap();
        assert_eq!(segments.head(), 3005);
        let all = segments.shared().read(1, 10_000).unwrap();
        assert_eq!(all.len(), 3005);
        assert!(
            all.iter()
                .all(|(position, bytes)| *bytes == payload(*position))
        );
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_the_next_append_takes_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        append_range(&mut segments, 1..=10);
        drop(segments);
        // A crash in the middle of the next record: a header and half of the payload.
        let path = segment_path(dir.path(), 1);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        let torn = b"half of an entry";
        file.write_all(&(torn.len() as u32 * 2).to_le_bytes())
            .unwrap();
        file.write_all(&xxh3_64(torn).to_le_bytes()).unwrap();
        file.write_all(torn).unwrap();
        drop(file);
        let mut segments = Segments::open(dir.path()).unwrap();
        assert_eq!(segments.head(), 10);
        append_range(&mut segments, 11..=11);
        drop(segments);
        let segments = Segments::open(dir.path()).unwrap();
        let all = segments.shared().read(1, 100).unwrap();
        assert_eq!(positions(&all), (1..=11).collect::<Vec<_>>());
        assert_eq!(all[10].1, payload(11));
    }

    #[test]
    fn a_bad_record_before_the_end_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        append_range(&mut segments, 1..=10);
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 2] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let error = segments.shared().read(1, 10).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    }

    #[test]
    fn reads_cross_segments_and_an_import_keeps_its_first_position() {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        // One payload as large as a segment: each append after it starts a new segment.
        let big = vec![7u8; SEGMENT_BYTES as usize];
        segments.append(Some(41), [big.as_slice()]).unwrap();
        let payloads: Vec<Vec<u8>> = (42..=50).map(payload).collect();
        segments
            .append(None, payloads.iter().map(Vec::as_slice))
            .unwrap();
        segments.append(None, [big.as_slice()]).unwrap();
        segments.append(None, [b"last".as_slice()]).unwrap();
        assert!(segments.append(Some(7), [b"x".as_slice()]).is_err());
        let shared = segments.shared();
        assert_eq!(shared.firsts.read().unwrap().clone(), vec![41, 42, 52]);
        assert_eq!(shared.first(), 41);
        let read = shared.read(1, 100).unwrap();
        assert_eq!(positions(&read), (41..=52).collect::<Vec<_>>());
        assert_eq!(read.last().unwrap().1, b"last");
        drop(segments);
        let segments = Segments::open(dir.path()).unwrap();
        assert_eq!(segments.head(), 52);
        assert_eq!(
            positions(&segments.shared().read(50, 3).unwrap()),
            vec![50, 51, 52]
        );
    }
}
