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
//! (u64, little-endian), then the payload. A new segment starts once the active one is full
//! (see below); the next segment's first position says where the previous one ends.
//!
//! # Segments are zero-filled ahead of need
//! A `fdatasync` that must also record a larger file size writes the inode as well: on ext4
//! without a journal (this project's test VM) a second synchronous write before the disk's cache
//! flush; with ext4's journal, a journal commit, which in the default `data=ordered` mode first
//! writes the data of every other file it allocated blocks for (the index's tables, the
//! projection's pages). So, as PostgreSQL does with its WAL, the next segment is written full of
//! zeros ([`SEGMENT_BYTES`]) and synced by a background thread while the active one fills (from
//! a quarter of its size on); appending overwrites blocks the file already has, within its
//! size, and its `fdatasync` writes the journal's own pages and nothing else. A segment started
//! before its successor was ready is an ordinary growing file of [`UNPREPARED_BYTES`]; a new
//! journal's first segment is one (small journals, tests among them, never zero-fill 64 MiB), and
//! so is the first after every opening (see [`Segments::open`]).
//!
//! # Torn writes
//! An append is acknowledged only after its `fdatasync`. So a record that is cut short or fails
//! its checksum at the end of the last segment was never acknowledged: opening cuts the file
//! there, with the zeros of a prepared segment (a zero header ends the records). The same
//! anywhere else is corruption, and opening fails.

use super::background;
use crate::store::{Position, Result, StoreError};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use xxhash_rust::xxh3::xxh3_64;

/// A prepared segment's size: the next one starts once the active one is full.
const SEGMENT_BYTES: u64 = 64 << 20;
/// The size of a segment started while no prepared one was ready.
const UNPREPARED_BYTES: u64 = 4 << 20;
/// Zero-filling syncs every this many bytes, then pauses for [`FILL_PAUSE`], so the disk never
/// queues a long burst of it ahead of the journal's own syncs: at most 100 MiB/s, which still
/// prepares a segment before a journal appending 75 MiB/s (about 190,000 orders/s) fills the
/// three quarters left of the active one.
const FILL_SYNC: u64 = 1 << 20;
const FILL_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);
/// Zero-filling writes one page at a time (see [`prepare`]).
const PAGE: usize = 4096;
/// The next segment, zero-filled and synced, waiting for its first position.
const PREPARED: &str = "next.prepared";
/// The next segment while it is being zero-filled.
const PREPARING: &str = "next.preparing";
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
    /// Bytes of records in the active segment.
    len: u64,
    /// The active segment's size: once `len` reaches it, the next append starts a new one.
    capacity: u64,
    next: Next,
    shared: Shared,
}

/// The segment after the active one.
enum Next {
    /// Not asked for yet.
    None,
    /// Being zero-filled by a background thread.
    Preparing(JoinHandle<std::io::Result<()>>),
    /// [`PREPARED`] is ready.
    Ready,
    /// Zero-filling failed; the next segment will be an unprepared one.
    Failed,
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

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
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
    if header == [0; HEADER] {
        // The zero-filled rest of a prepared segment (no record has a zero length and checksum: the empty
        // payload's checksum is not zero).
        return Ok(None);
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
    /// Appends go to a new segment: reading the last one to its end left its pages cached as
    /// large folios, and a small write into a large folio makes its `fdatasync` write the whole
    /// folio.
    pub(super) fn open(dir: &Path) -> Result<Segments> {
        std::fs::create_dir_all(dir).map_err(|error| io_error("create the directory", error))?;
        for leftover in [PREPARING, PREPARED] {
            // A next segment of an earlier run: prepared again when needed.
            match std::fs::remove_file(dir.join(leftover)) {
                Err(error) if error.kind() != ErrorKind::NotFound => {
                    return Err(io_error("remove a prepared segment", error));
                }
                _ => {}
            }
        }
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
        let mut head = 0;
        while let Some(&first) = firsts.last() {
            let count = cut_after_last_record(&segment_path(dir, first))?;
            if count > 0 {
                head = first + count - 1;
                break;
            }
            // A crash between starting a segment and its first record: the next append
            // starts it again.
            std::fs::remove_file(segment_path(dir, first))
                .map_err(|error| io_error("remove an empty segment", error))?;
            sync_dir(dir).map_err(|error| io_error("sync the directory", error))?;
            firsts.pop();
        }
        Ok(Segments {
            file: None,
            len: 0,
            capacity: 0,
            next: Next::None,
            shared: Shared {
                dir: dir.to_path_buf(),
                firsts: Arc::new(RwLock::new(firsts)),
                head: Arc::new(AtomicU64::new(head)),
                checkpoints: Arc::new(Mutex::new(BTreeMap::new())),
            },
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
        if start == 0 || (head > 0 && start != head + 1) {
            return Err(corrupt(format!(
                "an append at position {start} after position {head}"
            )));
        }
        // The next segment starts here, before anything is written, rather than after the
        // append that filled the active one: an error then fails this append, which wrote
        // nothing, and never one whose records are already synced.
        if self.file.is_none() || self.len >= self.capacity {
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
        file.write_all_at(&buffer, self.len)
            .and_then(|()| file.sync_data())
            .map_err(|error| io_error("append", error))?;
        self.len += buffer.len() as u64;
        if !checkpoints.is_empty()
            && let Ok(mut known) = self.shared.checkpoints.lock()
        {
            known.extend(checkpoints);
        }
        self.shared.head.store(position, Ordering::Release);
        if self.len >= self.capacity / 4 && matches!(self.next, Next::None) {
            let dir = self.shared.dir.clone();
            self.next = match std::thread::Builder::new()
                .name("oms-journal-prep".into())
                .spawn(move || {
                    background::yield_the_disk();
                    prepare(&dir)
                }) {
                Ok(handle) => Next::Preparing(handle),
                Err(error) => {
                    tracing::warn!(%error, "could not start preparing the next journal segment");
                    Next::Failed
                }
            };
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

    /// Starts the segment whose first position is `first`; it holds nothing yet. It is the
    /// prepared one when that is ready, else an unprepared one (the preparation, if still
    /// running, is kept for the segment after).
    fn start_segment(&mut self, first: Position) -> Result<()> {
        if matches!(&self.next, Next::Preparing(handle) if handle.is_finished()) {
            self.wait_for_next();
        }
        let path = segment_path(&self.shared.dir, first);
        let prepared = matches!(self.next, Next::Ready);
        if prepared {
            std::fs::rename(self.shared.dir.join(PREPARED), &path)
                .map_err(|error| io_error("start a prepared segment", error))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            // A prepared segment keeps its zeros.
            .truncate(false)
            .open(&path)
            .map_err(|error| io_error("create a segment", error))?;
        sync_dir(&self.shared.dir).map_err(|error| io_error("sync the directory", error))?;
        self.file = Some(file);
        self.len = 0;
        self.capacity = if prepared {
            SEGMENT_BYTES
        } else {
            UNPREPARED_BYTES
        };
        if !matches!(self.next, Next::Preparing(_)) {
            self.next = Next::None;
        }
        if let Ok(mut firsts) = self.shared.firsts.write() {
            firsts.push(first);
        }
        if self.head() == 0 {
            self.shared.head.store(first - 1, Ordering::Release);
        }
        Ok(())
    }

    /// Waits for the next segment's preparation, if one is running.
    fn wait_for_next(&mut self) {
        if let Next::Preparing(handle) = std::mem::replace(&mut self.next, Next::None) {
            self.next = match handle.join() {
                Ok(Ok(())) => Next::Ready,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "could not prepare the next journal segment");
                    Next::Failed
                }
                Err(_) => Next::Failed,
            };
        }
    }
}

impl Drop for Segments {
    /// Lets a running preparation finish, so no thread writes into the directory after it
    /// closes (a reopening removes what it finds there).
    fn drop(&mut self) {
        self.wait_for_next();
    }
}

/// Zero-fills [`PREPARING`] to [`SEGMENT_BYTES`], syncing as it goes, then names it
/// [`PREPARED`]. It writes a page at a time: the page cache keeps what a write brought in as
/// folios of that write's size (ext4 on Linux 6.16 and later), and a larger folio would make
/// each of the journal's small appends into it write the whole folio back.
fn prepare(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(PREPARING);
    let file = File::create(&path)?;
    let page = [0u8; PAGE];
    let mut written = 0;
    while written < SEGMENT_BYTES {
        file.write_all_at(&page, written)?;
        written += PAGE as u64;
        if written.is_multiple_of(FILL_SYNC) {
            file.sync_data()?;
            std::thread::sleep(FILL_PAUSE);
        }
    }
    file.sync_all()?;
    std::fs::rename(&path, dir.join(PREPARED))?;
    sync_dir(dir)
}

/// Reads the segment at `path` to the end of its records and cuts the file there: a torn
/// record, and the zeros of a prepared segment, go (a group's later records may have reached the
/// disk before its earlier ones; left there, they could pass for records after the next append).
/// Gives how many records it holds.
fn cut_after_last_record(path: &Path) -> Result<u64> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
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
    let size = file
        .metadata()
        .map_err(|error| io_error("stat", error))?
        .len();
    if size > valid {
        file.set_len(valid)
            .and_then(|()| file.sync_all())
            .map_err(|error| io_error("cut the last segment", error))?;
    }
    Ok(count)
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
    use std::io::Write;

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

    /// A closed journal holding positions 1 to `last`, in one segment.
    fn closed_journal(last: Position) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        append_range(&mut segments, 1..=last);
        dir
    }

    /// Appends `range` with `segments`, opens `dir` again and checks that it holds exactly
    /// positions 1 to the range's end, the appended records included.
    fn append_then_read_back(
        dir: &Path,
        mut segments: Segments,
        range: std::ops::RangeInclusive<Position>,
    ) {
        let (first, last) = (*range.start(), *range.end());
        append_range(&mut segments, range);
        drop(segments);
        let all = Segments::open(dir).unwrap().shared().read(1, 100).unwrap();
        assert_eq!(positions(&all), (1..=last).collect::<Vec<_>>());
        assert_eq!(all[first as usize - 1].1, payload(first));
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
        let dir = closed_journal(10);
        // A crash in the middle of the next record: a header and half of the payload.
        let path = segment_path(dir.path(), 1);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        let torn = b"half of an entry";
        file.write_all(&(torn.len() as u32 * 2).to_le_bytes())
            .unwrap();
        file.write_all(&xxh3_64(torn).to_le_bytes()).unwrap();
        file.write_all(torn).unwrap();
        drop(file);
        let segments = Segments::open(dir.path()).unwrap();
        assert_eq!(segments.head(), 10);
        append_then_read_back(dir.path(), segments, 11..=11);
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
        let big = vec![7u8; UNPREPARED_BYTES as usize];
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

    #[test]
    fn a_prepared_segment_is_filled_within_its_size_and_cut_at_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        let chunk = vec![3u8; 64 << 10];
        let mut appended = 0;
        let mut append = |segments: &mut Segments, count: usize| {
            for _ in 0..count {
                segments.append(None, [chunk.as_slice()]).unwrap();
                appended += 1;
            }
        };
        // A quarter of the first (unprepared) segment asks for the next one.
        append(&mut segments, 20);
        assert!(matches!(segments.next, Next::Preparing(_)));
        segments.wait_for_next();
        assert!(matches!(segments.next, Next::Ready));
        append(&mut segments, 50);
        let firsts = segments.shared().firsts.read().unwrap().clone();
        assert_eq!(firsts.len(), 2, "{firsts:?}");
        let prepared = segment_path(dir.path(), firsts[1]);
        assert_eq!(std::fs::metadata(&prepared).unwrap().len(), SEGMENT_BYTES);
        assert_eq!(segments.capacity, SEGMENT_BYTES);
        let records = segments.len;
        drop(segments);
        // Reopened: the prepared segment is cut to its records, and appends go to a new one.
        let mut segments = Segments::open(dir.path()).unwrap();
        assert_eq!(segments.head(), 70);
        assert_eq!(std::fs::metadata(&prepared).unwrap().len(), records);
        append(&mut segments, 5);
        assert_eq!(segments.shared().firsts.read().unwrap().len(), 3);
        drop(segments);
        let segments = Segments::open(dir.path()).unwrap();
        assert_eq!(segments.head(), appended);
        let all = segments.shared().read(1, 1000).unwrap();
        assert_eq!(positions(&all), (1..=appended).collect::<Vec<_>>());
        assert!(all.iter().all(|(_, bytes)| *bytes == chunk));
    }

    #[test]
    fn records_past_a_torn_write_are_cut_not_revived() {
        let dir = closed_journal(10);
        let end = std::fs::metadata(segment_path(dir.path(), 1))
            .unwrap()
            .len();
        // A group's later record reached the disk, its earlier one did not (zeros).
        let ghost = b"never acknowledged";
        let mut image = (ghost.len() as u32).to_le_bytes().to_vec();
        image.extend_from_slice(&xxh3_64(ghost).to_le_bytes());
        image.extend_from_slice(ghost);
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(dir.path(), 1))
            .unwrap();
        file.write_all_at(&image, end + 100).unwrap();
        drop(file);
        let mut segments = Segments::open(dir.path()).unwrap();
        assert_eq!(segments.head(), 10);
        let cut = std::fs::metadata(segment_path(dir.path(), 1))
            .unwrap()
            .len();
        assert_eq!(cut, end);
        let next = vec![5u8; 100 - HEADER];
        segments.append(None, [next.as_slice()]).unwrap();
        drop(segments);
        let segments = Segments::open(dir.path()).unwrap();
        assert_eq!(segments.head(), 11);
        let all = segments.shared().read(1, 100).unwrap();
        assert_eq!(all.last().unwrap().1, next);
    }

    #[test]
    fn an_empty_last_segment_is_removed_and_started_again() {
        let dir = closed_journal(5);
        // A crash after a prepared segment took its name, before its first record.
        std::fs::write(segment_path(dir.path(), 6), vec![0u8; 8192]).unwrap();
        let segments = Segments::open(dir.path()).unwrap();
        assert_eq!(segments.head(), 5);
        assert_eq!(segments.shared().firsts.read().unwrap().clone(), vec![1]);
        append_then_read_back(dir.path(), segments, 6..=7);
    }

    /// A segment that cannot be started fails the append that needs it, before writing: never
    /// the append that filled the previous one, whose records are synced and stay.
    #[test]
    fn a_segment_that_cannot_start_fails_only_the_append_that_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = Segments::open(dir.path()).unwrap();
        // Where the second segment's file would go, a directory: creating it fails.
        std::fs::create_dir(segment_path(dir.path(), 2)).unwrap();
        let full = vec![1u8; UNPREPARED_BYTES as usize];
        assert_eq!(segments.append(None, [full.as_slice()]).unwrap().0, 1);
        assert_eq!(segments.head(), 1);
        assert!(segments.append(None, [b"second".as_slice()]).is_err());
        assert_eq!(segments.head(), 1);
        std::fs::remove_dir(segment_path(dir.path(), 2)).unwrap();
        assert_eq!(segments.append(None, [b"second".as_slice()]).unwrap().0, 2);
        drop(segments);
        let all = Segments::open(dir.path())
            .unwrap()
            .shared()
            .read(1, 10)
            .unwrap();
        assert_eq!(positions(&all), vec![1, 2]);
        assert_eq!(all[1].1, b"second");
    }
}
