//! `--storage.path DIR` or `--storage.path s3://BUCKET/PREFIX`: what survives a restart, and
//! what the replicas of an HA set-up share.
//!
//! - Each integration's last published snapshot, so that a restart serves it at once and
//!   buys no refresh before one is due. One file per integration, `snapshot-<name>.bin`: when
//!   its cost data was fetched and the dates it covers, then one record per part of the refresh
//!   (see the parts modules): the part's name, the fingerprint of the settings that shaped its
//!   series, its encoded series, and what it keeps across restarts. A restart serves each
//!   enabled part whose record has its current fingerprint, and refreshes only the others.
//! - Each integration's count of billed Cost Explorer requests of the UTC day
//!   (the daily request cap's), `api-requests-<name>.bin`.
//!
//! Every file is written atomically: a temporary file in the same directory, written, synced,
//! renamed over the old one, and the directory synced, so that a crash leaves the old file or
//! the new one, never half of one. A file starts with a magic string and a format version,
//! names the integration, and ends with a CRC-32 of everything before it. A file that is
//! truncated, corrupt, of another format version (version 2 kept one fingerprint for the whole
//! integration: such a file is refused, and the integration refreshes), or written for another
//! integration is refused ([`LoadError`]): the caller logs it and carries on without it. No file
//! holds credentials: only what is served, and the request count.
//!
//! In S3 ([`s3`]) the objects have the same names and bytes. S3 writes an object whole or not
//! at all, so a reader never sees half of one; the request count is replaced only if it is
//! still the version read ([`Storage::reserve_count`]), so that replicas share the daily cap;
//! and replicas poll a snapshot with its ETag ([`Storage::poll_snapshot`]), sent only when it
//! changed. The leases that decide which replica refreshes live beside them
//! ([`crate::lease`]).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};

use crate::cost_explorer::Period;
use crate::snapshot::EncodedBlock;

pub mod s3;

use s3::{Bucket, Condition, Fetched, Written};
pub use s3::{Location, S3Options};

/// The first bytes of every file this module writes.
pub const MAGIC: &[u8; 8] = b"AWSCOSTX";
/// The format version of snapshot files.
pub const SNAPSHOT_VERSION: u32 = 3;
/// The format version of request count files.
pub const COUNT_VERSION: u32 = 1;
const KIND_SNAPSHOT: u8 = 1;
const KIND_COUNT: u8 = 2;
/// An integration's lease ([`crate::lease`]).
pub(crate) const KIND_LEASE: u8 = 3;
/// A replica's sign of life ([`crate::lease`]).
pub(crate) const KIND_REPLICA: u8 = 4;
/// The prefix of temporary files (removed when found at start-up: a crash left them).
const TEMP_PREFIX: &str = ".tmp-";

/// Why the storage directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--storage.path {path}: {error}")]
pub struct StorageError {
    pub path: String,
    /// Part of the message rather than a source, so that a chain prints it once.
    pub error: io::Error,
}

/// Why a stored file was not used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
    #[error("it is truncated")]
    Truncated,
    #[error("it is not a file of this exporter")]
    Magic,
    #[error("it has format version {found}; this exporter reads version {expected}")]
    Version { found: u32, expected: u32 },
    #[error("its checksum does not match: the file is corrupt")]
    Checksum,
    #[error("it was written for integration {0:?}")]
    OtherIntegration(String),
    #[error("it is malformed: {0}")]
    Malformed(&'static str),
}

/// An integration's snapshot as stored: when its cost data was fetched, the dates it covers,
/// and one record per part it served.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub integration: String,
    pub fetched_at: DateTime<Utc>,
    pub period: Period,
    pub records: Vec<Record>,
}

/// One part's stored series and state.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The part's name.
    pub part: String,
    /// The fingerprint of the settings that shaped its series.
    pub fingerprint: u64,
    /// One block per family of the part, in its order.
    pub blocks: Vec<EncodedBlock>,
    /// What the part keeps across restarts, in its own encoding.
    pub kept: Vec<u8>,
}

/// Where what survives restarts is kept: a local directory, or a bucket and prefix in S3
/// (shared by the replicas of an HA set-up, see [`crate::lease`]).
#[derive(Debug, Clone)]
pub struct Storage {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Dir(PathBuf),
    S3(Arc<Bucket>),
}

/// A block of the daily request count reserved in storage ([`Storage::reserve_count`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// The requests counted as made that day: the caller's own, or more when other replicas
    /// reserved more.
    pub used: u64,
    /// The requests reserved that day (at most the limit): `used` up to it may be sent.
    pub reserved: u64,
}

/// What a poll of an integration's snapshot found ([`Storage::poll_snapshot`]).
#[derive(Debug)]
pub enum Polled {
    /// None is stored.
    Missing,
    /// The one known is still the stored one.
    Unchanged,
    /// Another one, with its version (ETag).
    Changed(Box<Stored>, String),
}

/// The most attempts at a conditional update of the request count before giving up.
const COUNT_ATTEMPTS: usize = 16;

impl Storage {
    /// Creates the directory when missing, checks that it is writable, and removes the
    /// temporary files a crash may have left.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let dir = dir.into();
        let shown = dir.display().to_string();
        let error = |error| StorageError {
            path: shown.clone(),
            error,
        };
        fs::create_dir_all(&dir).map_err(error)?;
        for entry in fs::read_dir(&dir).map_err(error)? {
            let entry = entry.map_err(error)?;
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                let _ = fs::remove_file(entry.path());
            }
        }
        // Writable now, rather than at the first refresh.
        let probe = "write-check";
        write_atomically(&dir, probe, b"").map_err(error)?;
        fs::remove_file(dir.join(probe)).map_err(error)?;
        Ok(Self {
            backend: Backend::Dir(dir),
        })
    }

    /// Connects to a bucket and prefix in S3 and checks that an object can be written and
    /// deleted there.
    pub async fn open_s3(location: Location, options: &S3Options) -> Result<Self, StorageError> {
        let shown = location.to_string();
        let error = |error| StorageError {
            path: shown.clone(),
            error,
        };
        let bucket = Bucket::connect(location, options).await.map_err(error)?;
        let probe = "write-check";
        bucket
            .put(probe, Vec::new(), Condition::Any)
            .await
            .map_err(error)?;
        bucket.delete(probe).await.map_err(error)?;
        Ok(Self {
            backend: Backend::S3(Arc::new(bucket)),
        })
    }

    /// The bucket, when the storage is in S3 (where replicas can share it).
    pub fn bucket(&self) -> Option<&Arc<Bucket>> {
        match &self.backend {
            Backend::S3(bucket) => Some(bucket),
            Backend::Dir(_) => None,
        }
    }

    /// Where an object or file of the storage is, for messages: a path or an `s3://` URL.
    pub fn location(&self, name: &str) -> String {
        match &self.backend {
            Backend::Dir(dir) => dir.join(name).display().to_string(),
            Backend::S3(bucket) => bucket.location().url(name),
        }
    }

    /// The name of the file or object holding an integration's snapshot.
    pub fn snapshot_name(integration: &str) -> String {
        format!("snapshot-{}.bin", file_name_part(integration))
    }

    /// The name of the file or object holding an integration's request count of the day.
    pub fn count_name(integration: &str) -> String {
        format!("api-requests-{}.bin", file_name_part(integration))
    }

    /// Where an integration's snapshot is kept, for messages.
    pub fn snapshot_location(&self, integration: &str) -> String {
        self.location(&Self::snapshot_name(integration))
    }

    /// Where an integration's request count is kept, for messages.
    pub fn count_location(&self, integration: &str) -> String {
        self.location(&Self::count_name(integration))
    }

    /// Writes an integration's snapshot (blocking: call it off the async workers).
    pub fn save_snapshot(&self, stored: &Stored) -> io::Result<()> {
        let bytes = encode_snapshot(stored);
        let name = Self::snapshot_name(&stored.integration);
        match &self.backend {
            Backend::Dir(dir) => write_atomically(dir, &name, &bytes),
            Backend::S3(bucket) => bucket
                .put_blocking(&name, bytes, Condition::Any)
                .map(|_| ()),
        }
    }

    /// Reads an integration's snapshot: `Ok(None)` when there is none (blocking).
    pub fn load_snapshot(&self, integration: &str) -> Result<Option<Stored>, LoadError> {
        self.read(&Self::snapshot_name(integration))?
            .map(|(bytes, _)| decode_snapshot(&bytes, integration))
            .transpose()
    }

    /// Reads an integration's snapshot unless its version is `known` (S3's ETag; a directory
    /// has no versions and always reads). Blocking.
    pub fn poll_snapshot(
        &self,
        integration: &str,
        known: Option<&str>,
    ) -> Result<Polled, LoadError> {
        let name = Self::snapshot_name(integration);
        let (bytes, etag) = match &self.backend {
            Backend::Dir(_) => match self.read(&name)? {
                Some(found) => found,
                None => return Ok(Polled::Missing),
            },
            Backend::S3(bucket) => match bucket.get_blocking(&name, known)? {
                Fetched::Missing => return Ok(Polled::Missing),
                Fetched::Unchanged => return Ok(Polled::Unchanged),
                Fetched::Found { bytes, etag } => (bytes, etag),
            },
        };
        let stored = decode_snapshot(&bytes, integration)?;
        Ok(Polled::Changed(Box::new(stored), etag))
    }

    /// Reads an integration's request count: `Ok(None)` when there is none (blocking).
    pub fn load_count(&self, integration: &str) -> Result<Option<(NaiveDate, u64)>, LoadError> {
        self.read(&Self::count_name(integration))?
            .map(|(bytes, _)| decode_count(&bytes, integration))
            .transpose()
    }

    /// Reserves a block of `block` requests of `day`, after the `used` ones, never past
    /// `limit` (blocking). In a directory the count is the caller's
    /// alone. In S3 replicas share it: the stored count is read and replaced only if it is
    /// still the version read (else read again), so that blocks reserved by several replicas
    /// never overlap and together never pass `limit`; `used` moves up to what others reserved.
    pub fn reserve_count(
        &self,
        integration: &str,
        day: NaiveDate,
        used: u64,
        block: u64,
        limit: u64,
    ) -> io::Result<Reservation> {
        let name = Self::count_name(integration);
        let bucket = match &self.backend {
            Backend::Dir(dir) => {
                let reserved = used.saturating_add(block).min(limit);
                write_atomically(dir, &name, &encode_count(integration, day, reserved))?;
                return Ok(Reservation { used, reserved });
            }
            Backend::S3(bucket) => bucket,
        };
        for attempt in 0..COUNT_ATTEMPTS {
            let (stored, etag) = match bucket.get_blocking(&name, None)? {
                Fetched::Found { bytes, etag } => match decode_count(&bytes, integration) {
                    Ok(count) => (Some(count), Some(etag)),
                    // A count that cannot be read is replaced (only if still the same).
                    Err(_) => (None, Some(etag)),
                },
                Fetched::Missing | Fetched::Unchanged => (None, None),
            };
            let used = match stored {
                Some((stored_day, reserved)) if stored_day == day => used.max(reserved),
                _ => used,
            };
            if used >= limit {
                return Ok(Reservation {
                    used,
                    reserved: used,
                });
            }
            let reserved = used.saturating_add(block).min(limit);
            let condition = match &etag {
                Some(etag) => Condition::Matches(etag),
                None => Condition::Absent,
            };
            match bucket.put_blocking(&name, encode_count(integration, day, reserved), condition)? {
                Written::Done { .. } => return Ok(Reservation { used, reserved }),
                // Another replica reserved first: read again, after a random pause, so that
                // writers racing in step fall out of step.
                Written::Conflict => std::thread::sleep(Duration::from_millis(
                    fastrand::u64(1..=20) * (attempt as u64 + 1),
                )),
            }
        }
        Err(io::Error::other(format!(
            "{}: another writer changed it {COUNT_ATTEMPTS} times in a row",
            bucket.location().url(&name)
        )))
    }

    /// A file's or object's bytes and version: `Ok(None)` when there is none (blocking).
    fn read(&self, name: &str) -> io::Result<Option<(Vec<u8>, String)>> {
        match &self.backend {
            Backend::Dir(dir) => match fs::read(dir.join(name)) {
                Ok(bytes) => Ok(Some((bytes, String::new()))),
                Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(err) => Err(err),
            },
            Backend::S3(bucket) => match bucket.get_blocking(name, None)? {
                Fetched::Found { bytes, etag } => Ok(Some((bytes, etag))),
                Fetched::Missing | Fetched::Unchanged => Ok(None),
            },
        }
    }
}

fn encode_count(integration: &str, day: NaiveDate, reserved: u64) -> Vec<u8> {
    let mut w = Writer::new(KIND_COUNT, COUNT_VERSION);
    w.str(integration);
    w.i64(days_from_ce(day));
    w.u64(reserved);
    w.finish()
}

fn decode_count(bytes: &[u8], integration: &str) -> Result<(NaiveDate, u64), LoadError> {
    let mut r = Reader::open(bytes, KIND_COUNT, COUNT_VERSION)?;
    let name = r.str()?;
    if name != integration {
        return Err(LoadError::OtherIntegration(name.to_string()));
    }
    let day = from_days_from_ce(r.i64()?)?;
    let reserved = r.u64()?;
    r.end()?;
    Ok((day, reserved))
}

/// Temporary file, write, fsync, rename, fsync the directory.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let temp = dir.join(format!(
        "{TEMP_PREFIX}{}-{}-{name}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            // Cost data is business information: readable by the exporter's user only.
            options.mode(0o600);
        }
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// An integration name as part of a file name, safe on every file system whatever the name
/// holds: lower-case ASCII letters, digits and `-` stay, every other byte becomes `_xx` (its
/// hex), so that names differing only in case get different files. A long name is cut and
/// followed by a hash of the whole name; the file itself names its integration, so two names
/// sharing a file would be told apart on reading.
pub fn file_name_part(integration: &str) -> String {
    const MAX: usize = 120;
    let mut out = String::with_capacity(integration.len());
    for byte in integration.bytes() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'-' => out.push(char::from(byte)),
            _ => out.push_str(&format!("_{byte:02x}")),
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    if out.len() > MAX {
        let hash = fnv1a(integration.as_bytes());
        out.truncate(MAX - 17);
        out.push_str(&format!("_{hash:016x}"));
    }
    out
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike the standard library's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A fingerprint of the settings that shape one part's series: FNV-1a over their encoding,
/// stable across builds and platforms (see each part's `fingerprint`).
pub struct Fingerprint(Writer);

impl Fingerprint {
    /// A fingerprint of `part`'s settings.
    pub fn new(part: &str) -> Self {
        let mut w = Writer::default();
        w.str(part);
        Self(w)
    }

    pub fn str(&mut self, text: &str) {
        self.0.str(text);
    }

    pub fn strs(&mut self, texts: &[String]) {
        self.0.strs(texts);
    }

    pub fn u64(&mut self, value: u64) {
        self.0.u64(value);
    }

    pub fn f64(&mut self, value: f64) {
        self.0.f64(value);
    }

    pub fn bool(&mut self, value: bool) {
        self.0.u8(u8::from(value));
    }

    pub fn finish(&self) -> u64 {
        fnv1a(&self.0.buf)
    }
}

fn days_from_ce(day: NaiveDate) -> i64 {
    use chrono::Datelike as _;
    i64::from(day.num_days_from_ce())
}

fn from_days_from_ce(days: i64) -> Result<NaiveDate, LoadError> {
    i32::try_from(days)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .ok_or(LoadError::Malformed("a date out of range"))
}

fn encode_snapshot(stored: &Stored) -> Vec<u8> {
    let mut w = Writer::new(KIND_SNAPSHOT, SNAPSHOT_VERSION);
    w.str(&stored.integration);
    w.i64(stored.fetched_at.timestamp_millis());
    w.i64(days_from_ce(stored.period.today));
    w.i64(days_from_ce(stored.period.data_day));
    w.u64(stored.records.len() as u64);
    for record in &stored.records {
        w.str(&record.part);
        w.u64(record.fingerprint);
        w.u64(record.blocks.len() as u64);
        for block in &record.blocks {
            w.u64(block.samples as u64);
            w.u64(block.dropped as u64);
            w.bytes(&block.text);
        }
        w.bytes(&record.kept);
    }
    w.finish()
}

fn decode_snapshot(bytes: &[u8], integration: &str) -> Result<Stored, LoadError> {
    let mut r = Reader::open(bytes, KIND_SNAPSHOT, SNAPSHOT_VERSION)?;
    let name = r.str()?;
    if name != integration {
        return Err(LoadError::OtherIntegration(name.to_string()));
    }
    let fetched_at = DateTime::<Utc>::from_timestamp_millis(r.i64()?)
        .ok_or(LoadError::Malformed("a time out of range"))?;
    let today = from_days_from_ce(r.i64()?)?;
    let data_day = from_days_from_ce(r.i64()?)?;
    let count = r.count()?;
    let mut records = Vec::with_capacity(count.min(16));
    for _ in 0..count {
        let part = r.str()?.to_string();
        let fingerprint = r.u64()?;
        let blocks_len = r.count()?;
        let mut blocks = Vec::with_capacity(blocks_len.min(64));
        for _ in 0..blocks_len {
            let samples = r.count()?;
            let dropped = r.count()?;
            let text = r.bytes()?;
            if std::str::from_utf8(text).is_err() {
                return Err(LoadError::Malformed("sample text that is not UTF-8"));
            }
            blocks.push(EncodedBlock {
                text: Bytes::copy_from_slice(text),
                samples,
                dropped,
            });
        }
        let kept = r.bytes()?.to_vec();
        records.push(Record {
            part,
            fingerprint,
            blocks,
            kept,
        });
    }
    r.end()?;
    Ok(Stored {
        integration: name.to_string(),
        fetched_at,
        period: Period { today, data_day },
        records,
    })
}

/// Little-endian fields, length-prefixed strings: how every stored file, and each part's kept
/// state within a snapshot file, is written.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(kind: u8, version: u32) -> Self {
        let mut w = Self::default();
        w.buf.extend_from_slice(MAGIC);
        w.u32(version);
        w.u8(kind);
        w
    }

    pub fn u8(&mut self, value: u8) {
        self.buf.push(value);
    }

    fn u32(&mut self, value: u32) {
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    pub fn u64(&mut self, value: u64) {
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    pub fn i64(&mut self, value: i64) {
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    pub fn f64(&mut self, value: f64) {
        self.u64(value.to_bits());
    }

    pub fn f64s(&mut self, values: &[f64]) {
        self.u64(values.len() as u64);
        for value in values {
            self.f64(*value);
        }
    }

    pub fn opt_f64(&mut self, value: Option<f64>) {
        match value {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.f64(v);
            }
        }
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
    }

    pub fn str(&mut self, text: &str) {
        self.bytes(text.as_bytes());
    }

    pub fn strs(&mut self, texts: &[String]) {
        self.u64(texts.len() as u64);
        for text in texts {
            self.str(text);
        }
    }

    /// A map of strings, in key order.
    pub fn map(&mut self, map: &BTreeMap<String, String>) {
        self.u64(map.len() as u64);
        for (key, value) in map {
            self.str(key);
            self.str(value);
        }
    }

    /// The bytes written, without a header or checksum (a part's kept state).
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes with their CRC-32 appended.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let crc = crc32fast::hash(&self.buf);
        self.u32(crc);
        self.buf
    }
}

/// Reads what a [`Writer`] wrote.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads bytes without a header or checksum (a part's kept state).
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Checks the magic, version, kind and checksum; reads the fields after them.
    pub(crate) fn open(bytes: &'a [u8], kind: u8, version: u32) -> Result<Self, LoadError> {
        if bytes.len() < MAGIC.len() {
            return Err(if MAGIC.starts_with(bytes) {
                LoadError::Truncated
            } else {
                LoadError::Magic
            });
        }
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(LoadError::Magic);
        }
        let mut header = Reader {
            rest: &bytes[MAGIC.len()..],
        };
        let found = header.u32()?;
        if found != version {
            return Err(LoadError::Version {
                found,
                expected: version,
            });
        }
        if header.u8()? != kind {
            return Err(LoadError::Malformed("a file of another kind"));
        }
        let Some(body_len) = bytes.len().checked_sub(4) else {
            return Err(LoadError::Truncated);
        };
        if body_len < MAGIC.len() + 5 {
            return Err(LoadError::Truncated);
        }
        let (body, crc) = bytes.split_at(body_len);
        let mut crc_bytes = [0u8; 4];
        crc_bytes.copy_from_slice(crc);
        if crc32fast::hash(body) != u32::from_le_bytes(crc_bytes) {
            // A short file fails here too: most truncations are caught as a bad checksum.
            return Err(LoadError::Checksum);
        }
        Ok(Reader {
            rest: &body[MAGIC.len() + 5..],
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], LoadError> {
        if self.rest.len() < n {
            return Err(LoadError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], LoadError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, LoadError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, LoadError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, LoadError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, LoadError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub fn f64(&mut self) -> Result<f64, LoadError> {
        Ok(f64::from_bits(self.u64()?))
    }

    pub fn f64s(&mut self) -> Result<Vec<f64>, LoadError> {
        let len = self.count()?;
        (0..len).map(|_| self.f64()).collect()
    }

    /// A map of strings.
    pub fn map(&mut self) -> Result<BTreeMap<String, String>, LoadError> {
        let mut map = BTreeMap::new();
        for _ in 0..self.count()? {
            let key = self.str()?.to_string();
            map.insert(key, self.str()?.to_string());
        }
        Ok(map)
    }

    /// A count or length: every item takes at least a byte, so it cannot exceed what is left
    /// of the file.
    pub fn count(&mut self) -> Result<usize, LoadError> {
        let value = self.u64()?;
        usize::try_from(value)
            .ok()
            .filter(|n| *n <= self.rest.len())
            .ok_or(LoadError::Malformed("a length larger than the file"))
    }

    pub fn opt_f64(&mut self) -> Result<Option<f64>, LoadError> {
        Ok(match self.u8()? {
            0 => None,
            1 => Some(self.f64()?),
            _ => return Err(LoadError::Malformed("a bad flag")),
        })
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], LoadError> {
        let len = self.count()?;
        self.take(len)
    }

    pub fn str(&mut self) -> Result<&'a str, LoadError> {
        std::str::from_utf8(self.bytes()?)
            .map_err(|_| LoadError::Malformed("a name that is not UTF-8"))
    }

    /// A list that [`Writer::strs`] wrote.
    pub fn strs(&mut self) -> Result<Vec<String>, LoadError> {
        let count = self.count()?;
        let mut out = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            out.push(self.str()?.to_string());
        }
        Ok(out)
    }

    /// Whether nothing is left to read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Whether everything was read.
    pub fn end(&self) -> Result<(), LoadError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(LoadError::Malformed("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(name: &str) -> Stored {
        let block = |text: &str, samples, dropped| EncodedBlock {
            text: Bytes::from(text.to_string()),
            samples,
            dropped,
        };
        Stored {
            integration: name.to_string(),
            fetched_at: DateTime::from_timestamp(1_795_000_000, 123_000_000).unwrap(),
            period: Period::new(NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(), 1),
            records: vec![
                Record {
                    part: "costs".into(),
                    fingerprint: 42,
                    blocks: vec![
                        block(
                            "aws_cost_daily_usd{integration=\"x\",account_name=\"Prod \\\"main\\\"\\n\"} 0.5\n",
                            1,
                            0,
                        ),
                        block("", 0, 0),
                    ],
                    kept: vec![1, 2, 3],
                },
                Record {
                    part: "tags".into(),
                    fingerprint: u64::MAX,
                    blocks: vec![block("t 1\nt 2\n", 2, 7)],
                    kept: Vec::new(),
                },
            ],
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_snapshot_round_trips_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let original = stored("payer");
        storage.save_snapshot(&original).unwrap();
        assert_eq!(storage.load_snapshot("payer").unwrap(), Some(original));
        // Only the file itself: no temporary file left behind.
        assert_eq!(files(dir.path()), vec!["snapshot-payer.bin"]);
        assert!(storage.load_snapshot("other").unwrap().is_none());
    }

    #[test]
    fn bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        storage.save_snapshot(&stored("payer")).unwrap();
        let path = dir.path().join(Storage::snapshot_name("payer"));
        let good = fs::read(&path).unwrap();
        let load = |bytes: &[u8]| {
            fs::write(&path, bytes).unwrap();
            storage.load_snapshot("payer").map(|_| ())
        };
        for cut in [0, 3, 8, 12, 13, 20, good.len() / 2, good.len() - 1] {
            let result = load(&good[..cut]);
            assert!(
                matches!(result, Err(LoadError::Truncated | LoadError::Checksum)),
                "cut at {cut}: {result:?}"
            );
        }
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x40;
        assert!(matches!(load(&flipped), Err(LoadError::Checksum)));
        let mut version = good.clone();
        version[8] = 9;
        assert!(matches!(
            load(&version),
            Err(LoadError::Version {
                found: 9,
                expected: SNAPSHOT_VERSION
            })
        ));
        assert!(matches!(load(b"# HELP not ours\n"), Err(LoadError::Magic)));
        // Another integration's file under this integration's name.
        storage.save_snapshot(&stored("other")).unwrap();
        let other = fs::read(dir.path().join(Storage::snapshot_name("other"))).unwrap();
        assert!(matches!(
            load(&other),
            Err(LoadError::OtherIntegration(name)) if name == "other"
        ));
        assert!(load(&good).is_ok());
    }

    #[test]
    fn counts_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        assert!(storage.load_count("payer").unwrap().is_none());
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let reserve = |used| storage.reserve_count("payer", day, used, 20, 50).unwrap();
        assert_eq!(
            reserve(0),
            Reservation {
                used: 0,
                reserved: 20
            }
        );
        assert_eq!(storage.load_count("payer").unwrap(), Some((day, 20)));
        // Never past the limit.
        assert_eq!(
            reserve(40),
            Reservation {
                used: 40,
                reserved: 50
            }
        );
        assert_eq!(storage.load_count("payer").unwrap(), Some((day, 50)));
        let path = |name| dir.path().join(Storage::count_name(name));
        fs::copy(path("payer"), path("x")).unwrap();
        assert!(matches!(
            storage.load_count("x"),
            Err(LoadError::OtherIntegration(_))
        ));
        assert_eq!(
            files(dir.path()),
            vec!["api-requests-payer.bin", "api-requests-x.bin"]
        );
    }

    #[test]
    fn temporary_files_of_a_crash_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".tmp-1-0-snapshot-payer.bin"), b"half").unwrap();
        fs::write(dir.path().join("keep"), b"").unwrap();
        Storage::open(dir.path()).unwrap();
        assert_eq!(files(dir.path()), vec!["keep"]);
    }

    #[test]
    fn file_names_are_safe_for_any_name() {
        assert_eq!(file_name_part("payer-1"), "payer-1");
        assert_eq!(file_name_part("Payer"), "_50ayer");
        assert_eq!(file_name_part("../etc/passwd"), "_2e_2e_2fetc_2fpasswd");
        assert_eq!(file_name_part(""), "_");
        assert_eq!(file_name_part("é"), "_c3_a9");
        let long = "x".repeat(500);
        let part = file_name_part(&long);
        assert!(part.len() <= 120 && part.starts_with("xxx"), "{part}");
        assert_ne!(part, file_name_part(&"x".repeat(501)));
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        for name in ["a/b", "..", "CON", "nul\0", "space name", &long] {
            storage.save_snapshot(&stored(name)).unwrap();
            let loaded = storage.load_snapshot(name).unwrap().unwrap();
            assert_eq!(loaded.integration, name);
            let path = PathBuf::from(storage.snapshot_location(name));
            assert_eq!(path.parent(), Some(dir.path()));
        }
    }

    #[test]
    fn fingerprints_are_stable_and_tell_settings_apart() {
        let print = |part: &str, values: &[u64]| {
            let mut print = Fingerprint::new(part);
            for value in values {
                print.u64(*value);
            }
            print.finish()
        };
        // FNV-1a of the same bytes, whatever the build: a restart recognises its own records.
        assert_eq!(print("tags", &[1, 2]), print("tags", &[1, 2]));
        assert_eq!(print("tags", &[]), 0x3542_75f6_785e_296c);
        assert_ne!(print("tags", &[1, 2]), print("tags", &[2, 1]));
        assert_ne!(print("tags", &[1]), print("costs", &[1]));
        let mut strs = Fingerprint::new("tags");
        strs.strs(&["ab".into(), "c".into()]);
        let mut other = Fingerprint::new("tags");
        other.strs(&["a".into(), "bc".into()]);
        assert_ne!(
            strs.finish(),
            other.finish(),
            "lengths are part of the print"
        );
    }

    #[test]
    fn kept_states_round_trip_through_a_writer() {
        let mut w = Writer::default();
        let map: BTreeMap<String, String> = [("1".to_string(), "a \"b\"".to_string())].into();
        w.map(&map);
        w.f64s(&[1.5, -0.0, f64::MAX]);
        w.opt_f64(None);
        w.opt_f64(Some(2.25));
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.map().unwrap(), map);
        assert_eq!(r.f64s().unwrap(), vec![1.5, -0.0, f64::MAX]);
        assert_eq!(r.opt_f64().unwrap(), None);
        assert_eq!(r.opt_f64().unwrap(), Some(2.25));
        assert!(r.end().is_ok());
        let mut short = Reader::new(&bytes[..bytes.len() - 1]);
        short.map().unwrap();
        short.f64s().unwrap();
        short.opt_f64().unwrap();
        assert!(matches!(short.opt_f64(), Err(LoadError::Truncated)));
    }
}
