//! `--storage.path DIR`: what survives a restart.
//!
//! - Each integration's last published snapshot, so that a restart serves it at once and
//!   buys no refresh before one is due. One file per integration, `snapshot-<name>.bin`.
//! - Each integration's count of billed Cost Explorer requests of the UTC day
//!   ([`crate::api_budget`]), `api-requests-<name>.bin`.
//!
//! Every file is written atomically: a temporary file in the same directory, written, synced,
//! renamed over the old one, and the directory synced, so that a crash leaves the old file or
//! the new one, never half of one. A file starts with a magic string and a format version,
//! names the integration and (snapshots) the fingerprint of the configuration that shaped its
//! data, and ends with a CRC-32 of everything before it. A file that is truncated, corrupt, of
//! another format version, or written for another integration or configuration is refused
//! ([`LoadError`]): the caller logs it and carries on without it. No file holds credentials:
//! only what is served, and the request count.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};

use crate::config::{CostBasis, Integration};
use crate::cost_explorer::{ForecastValue, Period};
use crate::snapshot::{EncodedBlock, IntegrationSnapshot};

/// The first bytes of every file this module writes.
pub const MAGIC: &[u8; 8] = b"AWSCOSTX";
/// The format version of snapshot files.
pub const SNAPSHOT_VERSION: u32 = 2;
/// The format version of request count files.
pub const COUNT_VERSION: u32 = 1;
const KIND_SNAPSHOT: u8 = 1;
const KIND_COUNT: u8 = 2;
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
    #[error("it was written for another configuration of the integration")]
    OtherConfiguration,
    #[error("it is malformed: {0}")]
    Malformed(&'static str),
}

/// What a refresh falls back on when an optional part fails, kept with the snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fallback {
    pub forecasts: BTreeMap<CostBasis, Option<ForecastValue>>,
    pub budget_forecasts: BTreeMap<String, Option<ForecastValue>>,
    pub organization_accounts: BTreeMap<String, String>,
}

/// A snapshot read back from disk.
#[derive(Debug, Clone)]
pub struct Stored {
    pub snapshot: IntegrationSnapshot,
    pub fallback: Fallback,
}

/// The storage directory.
#[derive(Debug, Clone)]
pub struct Storage {
    dir: PathBuf,
}

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
        let storage = Self { dir };
        // Writable now, rather than at the first refresh.
        let probe = "write-check";
        storage.write_atomically(probe, b"").map_err(error)?;
        fs::remove_file(storage.dir.join(probe)).map_err(error)?;
        Ok(storage)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding an integration's snapshot.
    pub fn snapshot_path(&self, integration: &str) -> PathBuf {
        self.dir
            .join(format!("snapshot-{}.bin", file_name_part(integration)))
    }

    /// The file holding an integration's request count of the day.
    pub fn count_path(&self, integration: &str) -> PathBuf {
        self.dir
            .join(format!("api-requests-{}.bin", file_name_part(integration)))
    }

    /// Writes an integration's snapshot (blocking: call it off the async workers).
    pub fn save_snapshot(
        &self,
        snapshot: &IntegrationSnapshot,
        fingerprint: u64,
        fallback: &Fallback,
    ) -> io::Result<()> {
        let bytes = encode_snapshot(snapshot, fingerprint, fallback);
        let path = self.snapshot_path(&snapshot.integration);
        self.write_atomically(&file_name(&path), &bytes)
    }

    /// Reads an integration's snapshot: `Ok(None)` when there is none (blocking).
    pub fn load_snapshot(
        &self,
        integration: &str,
        fingerprint: u64,
    ) -> Result<Option<Stored>, LoadError> {
        match fs::read(self.snapshot_path(integration)) {
            Ok(bytes) => decode_snapshot(&bytes, integration, fingerprint).map(Some),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Writes an integration's request count: `reserved` requests on `day` (blocking).
    pub fn save_count(&self, integration: &str, day: NaiveDate, reserved: u64) -> io::Result<()> {
        let mut w = Writer::new(KIND_COUNT, COUNT_VERSION);
        w.str(integration);
        w.i64(days_from_ce(day));
        w.u64(reserved);
        let path = self.count_path(integration);
        self.write_atomically(&file_name(&path), &w.finish())
    }

    /// Reads an integration's request count: `Ok(None)` when there is none (blocking).
    pub fn load_count(&self, integration: &str) -> Result<Option<(NaiveDate, u64)>, LoadError> {
        let bytes = match fs::read(self.count_path(integration)) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let mut r = Reader::open(&bytes, KIND_COUNT, COUNT_VERSION)?;
        let name = r.str()?;
        if name != integration {
            return Err(LoadError::OtherIntegration(name.to_string()));
        }
        let day = from_days_from_ce(r.i64()?)?;
        let reserved = r.u64()?;
        r.end()?;
        Ok(Some((day, reserved)))
    }

    /// Temporary file, write, fsync, rename, fsync the directory.
    fn write_atomically(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let temp = self.dir.join(format!(
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
            fs::rename(&temp, self.dir.join(name))?;
            sync_dir(&self.dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
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

/// A fingerprint of everything in an integration's configuration that shapes what it serves:
/// account, cost bases, tags, resources and their caps, forecast, budgets, Organizations, and
/// the data day. Not its credentials, endpoints, region, interval or request cap.
pub fn fingerprint(integration: &Integration, data_delay_days: u32) -> u64 {
    let mut w = Writer::default();
    w.str(&integration.name);
    w.str(&integration.account_id);
    w.u64(u64::from(data_delay_days));
    w.u64(integration.cost_basis.len() as u64);
    for basis in &integration.cost_basis {
        w.str(basis.as_str());
    }
    w.strs(&integration.tags);
    w.u64(integration.max_tag_series as u64);
    w.strs(&integration.resources);
    w.u64(integration.max_resource_series as u64);
    w.u8(u8::from(integration.forecast));
    w.u8(u8::from(integration.organizations));
    w.u8(u8::from(integration.commitments));
    w.u8(u8::from(integration.anomalies));
    w.u64(integration.max_anomaly_series as u64);
    w.u64(integration.budgets.len() as u64);
    for budget in &integration.budgets {
        w.str(&budget.name);
        w.u64(budget.monthly_usd.to_bits());
        w.strs(&budget.accounts);
        w.strs(&budget.services);
        w.str(budget.cost_basis.as_str());
    }
    fnv1a(&w.buf)
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

fn encode_snapshot(
    snapshot: &IntegrationSnapshot,
    fingerprint: u64,
    fallback: &Fallback,
) -> Vec<u8> {
    let mut w = Writer::new(KIND_SNAPSHOT, SNAPSHOT_VERSION);
    w.str(&snapshot.integration);
    w.u64(fingerprint);
    w.i64(snapshot.fetched_at.timestamp_millis());
    w.i64(days_from_ce(snapshot.period.today));
    w.i64(days_from_ce(snapshot.period.data_day));
    let blocks = snapshot.encoded_blocks();
    w.u64(blocks.len() as u64);
    for block in &blocks {
        w.u64(block.samples as u64);
        w.u64(block.dropped as u64);
        w.bytes(&block.text);
    }
    let forecast = |w: &mut Writer, value: &Option<ForecastValue>| match value {
        None => w.u8(0),
        Some(f) => {
            w.u8(1);
            w.u64(f.mean.to_bits());
            w.opt_f64(f.lower);
            w.opt_f64(f.upper);
        }
    };
    w.u64(fallback.forecasts.len() as u64);
    for (basis, value) in &fallback.forecasts {
        w.str(basis.as_str());
        forecast(&mut w, value);
    }
    w.u64(fallback.budget_forecasts.len() as u64);
    for (name, value) in &fallback.budget_forecasts {
        w.str(name);
        forecast(&mut w, value);
    }
    w.u64(fallback.organization_accounts.len() as u64);
    for (id, name) in &fallback.organization_accounts {
        w.str(id);
        w.str(name);
    }
    w.finish()
}

fn decode_snapshot(bytes: &[u8], integration: &str, fingerprint: u64) -> Result<Stored, LoadError> {
    let mut r = Reader::open(bytes, KIND_SNAPSHOT, SNAPSHOT_VERSION)?;
    let name = r.str()?;
    if name != integration {
        return Err(LoadError::OtherIntegration(name.to_string()));
    }
    if r.u64()? != fingerprint {
        return Err(LoadError::OtherConfiguration);
    }
    let fetched_at = DateTime::<Utc>::from_timestamp_millis(r.i64()?)
        .ok_or(LoadError::Malformed("a time out of range"))?;
    let today = from_days_from_ce(r.i64()?)?;
    let data_day = from_days_from_ce(r.i64()?)?;
    let count = r.len()?;
    let mut blocks = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let samples = r.len()?;
        let dropped = r.len()?;
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
    let forecast = |r: &mut Reader| -> Result<Option<ForecastValue>, LoadError> {
        Ok(match r.u8()? {
            0 => None,
            1 => Some(ForecastValue {
                mean: f64::from_bits(r.u64()?),
                lower: r.opt_f64()?,
                upper: r.opt_f64()?,
            }),
            _ => return Err(LoadError::Malformed("a bad forecast flag")),
        })
    };
    let mut fallback = Fallback::default();
    for _ in 0..r.len()? {
        let basis = r.str()?;
        let basis = CostBasis::ALL
            .into_iter()
            .find(|b| b.as_str() == basis)
            .ok_or(LoadError::Malformed("an unknown cost basis"))?;
        fallback.forecasts.insert(basis, forecast(&mut r)?);
    }
    for _ in 0..r.len()? {
        let name = r.str()?.to_string();
        fallback.budget_forecasts.insert(name, forecast(&mut r)?);
    }
    for _ in 0..r.len()? {
        let id = r.str()?.to_string();
        let name = r.str()?.to_string();
        fallback.organization_accounts.insert(id, name);
    }
    r.end()?;
    let snapshot = IntegrationSnapshot::from_encoded(
        name.to_string(),
        Period { today, data_day },
        fetched_at,
        blocks,
    )
    .ok_or(LoadError::Malformed(
        "the number of metric families differs",
    ))?;
    Ok(Stored { snapshot, fallback })
}

/// Little-endian fields, length-prefixed strings.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn new(kind: u8, version: u32) -> Self {
        let mut w = Self::default();
        w.buf.extend_from_slice(MAGIC);
        w.u32(version);
        w.u8(kind);
        w
    }

    fn u8(&mut self, value: u8) {
        self.buf.push(value);
    }

    fn u32(&mut self, value: u32) {
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    fn i64(&mut self, value: i64) {
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    fn opt_f64(&mut self, value: Option<f64>) {
        match value {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u64(v.to_bits());
            }
        }
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
    }

    fn str(&mut self, text: &str) {
        self.bytes(text.as_bytes());
    }

    fn strs(&mut self, texts: &[String]) {
        self.u64(texts.len() as u64);
        for text in texts {
            self.str(text);
        }
    }

    /// The bytes with their CRC-32 appended.
    fn finish(mut self) -> Vec<u8> {
        let crc = crc32fast::hash(&self.buf);
        self.u32(crc);
        self.buf
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks the magic, version, kind and checksum; reads the fields after them.
    fn open(bytes: &'a [u8], kind: u8, version: u32) -> Result<Self, LoadError> {
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

    fn u8(&mut self) -> Result<u8, LoadError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, LoadError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, LoadError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, LoadError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A count or length: every item takes at least a byte, so it cannot exceed what is left
    /// of the file.
    fn len(&mut self) -> Result<usize, LoadError> {
        let value = self.u64()?;
        usize::try_from(value)
            .ok()
            .filter(|n| *n <= self.rest.len())
            .ok_or(LoadError::Malformed("a length larger than the file"))
    }

    fn opt_f64(&mut self) -> Result<Option<f64>, LoadError> {
        Ok(match self.u8()? {
            0 => None,
            1 => Some(f64::from_bits(self.u64()?)),
            _ => return Err(LoadError::Malformed("a bad flag")),
        })
    }

    fn bytes(&mut self) -> Result<&'a [u8], LoadError> {
        let len = self.len()?;
        self.take(len)
    }

    fn str(&mut self) -> Result<&'a str, LoadError> {
        std::str::from_utf8(self.bytes()?)
            .map_err(|_| LoadError::Malformed("a name that is not UTF-8"))
    }

    fn end(&self) -> Result<(), LoadError> {
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
    use crate::cost_explorer::CostData;
    use crate::exposition::Format;
    use crate::snapshot::{FAMILIES, RefreshData, SnapshotStore};
    use std::sync::Arc;

    fn snapshot(name: &str) -> IntegrationSnapshot {
        let mut integration = Integration::new(name, "111111111111");
        integration.cost_basis = vec![CostBasis::Unblended, CostBasis::Amortized];
        let mut costs = CostData::new(2);
        costs
            .daily
            .add(["111111111111", "Amazon S3", "Usage"], &[0.5, 1.0]);
        costs
            .month
            .add(["111111111111", "Amazon S3", "Usage"], &[1.75, 3.0]);
        costs
            .account_names
            .insert("111111111111".into(), "Prod \"main\"\n".into());
        let mut data = RefreshData::new(costs);
        data.forecasts.insert(
            CostBasis::Unblended,
            Some(ForecastValue {
                mean: 10.0,
                lower: Some(8.0),
                upper: None,
            }),
        );
        let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        IntegrationSnapshot::build(&integration, &data, Period::new(today, 1), None)
            .fetched(DateTime::from_timestamp(1_795_000_000, 123_000_000).unwrap())
    }

    fn fallback() -> Fallback {
        let mut fallback = Fallback::default();
        fallback.forecasts.insert(CostBasis::Amortized, None);
        fallback.forecasts.insert(
            CostBasis::Unblended,
            Some(ForecastValue {
                mean: 1.5,
                lower: None,
                upper: Some(2.5),
            }),
        );
        fallback.budget_forecasts.insert("b".into(), None);
        fallback
            .organization_accounts
            .insert("111111111111".into(), "Prod".into());
        fallback
    }

    fn rendered(snapshot: IntegrationSnapshot) -> [Vec<u8>; 2] {
        let store = SnapshotStore::new(vec![snapshot.integration.clone()]);
        store.publish(Arc::new(snapshot));
        let rendered = store.rendered();
        [Format::Classic, Format::OpenMetrics].map(|f| rendered.run(f).plain().concat())
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
        let original = snapshot("payer");
        storage.save_snapshot(&original, 42, &fallback()).unwrap();
        let stored = storage.load_snapshot("payer", 42).unwrap().unwrap();
        assert_eq!(stored.fallback, fallback());
        assert_eq!(stored.snapshot.fetched_at, original.fetched_at);
        assert_eq!(stored.snapshot.period, original.period);
        assert_eq!(stored.snapshot.encoded_blocks(), original.encoded_blocks());
        assert_eq!(stored.snapshot.series_count(), original.series_count());
        assert_eq!(rendered(stored.snapshot), rendered(original));
        // Only the file itself: no temporary file left behind.
        assert_eq!(files(dir.path()), vec!["snapshot-payer.bin"]);
        assert!(storage.load_snapshot("other", 42).unwrap().is_none());
    }

    #[test]
    fn bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        storage
            .save_snapshot(&snapshot("payer"), 42, &Fallback::default())
            .unwrap();
        let path = storage.snapshot_path("payer");
        let good = fs::read(&path).unwrap();
        let load = |bytes: &[u8]| {
            fs::write(&path, bytes).unwrap();
            storage.load_snapshot("payer", 42).map(|_| ())
        };
        assert!(matches!(
            storage.load_snapshot("payer", 43),
            Err(LoadError::OtherConfiguration)
        ));
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
        storage
            .save_snapshot(&snapshot("other"), 42, &Fallback::default())
            .unwrap();
        let other = fs::read(storage.snapshot_path("other")).unwrap();
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
        storage.save_count("payer", day, 40).unwrap();
        storage.save_count("payer", day, 60).unwrap();
        assert_eq!(storage.load_count("payer").unwrap(), Some((day, 60)));
        fs::copy(storage.count_path("payer"), storage.count_path("x")).unwrap();
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
            storage
                .save_snapshot(&snapshot(name), 1, &Fallback::default())
                .unwrap();
            let stored = storage.load_snapshot(name, 1).unwrap().unwrap();
            assert_eq!(stored.snapshot.integration, name);
            assert_eq!(storage.snapshot_path(name).parent(), Some(dir.path()));
        }
    }

    #[test]
    fn the_fingerprint_follows_what_is_served() {
        let base = Integration::new("payer", "111111111111");
        let print = fingerprint(&base, 1);
        assert_eq!(print, fingerprint(&base.clone(), 1));
        assert_ne!(print, fingerprint(&base, 2), "data_delay_days");
        let changed = |change: &dyn Fn(&mut Integration)| {
            let mut i = base.clone();
            change(&mut i);
            fingerprint(&i, 1)
        };
        assert_ne!(print, changed(&|i| i.account_id = "222222222222".into()));
        assert_ne!(print, changed(&|i| i.cost_basis.push(CostBasis::Blended)));
        assert_ne!(print, changed(&|i| i.tags = vec!["team".into()]));
        assert_ne!(print, changed(&|i| i.max_tag_series = 5));
        assert_ne!(print, changed(&|i| i.resources = vec!["S3".into()]));
        assert_ne!(print, changed(&|i| i.forecast = false));
        assert_ne!(print, changed(&|i| i.organizations = true));
        assert_ne!(
            print,
            changed(&|i| i.budgets.push(crate::config::Budget {
                name: "b".into(),
                monthly_usd: 1.0,
                accounts: vec![],
                services: vec![],
                cost_basis: CostBasis::Unblended,
            }))
        );
        // Credentials, endpoints, interval and the request cap do not shape the data.
        assert_eq!(print, changed(&|i| i.external_id = Some("x".into())));
        assert_eq!(
            print,
            changed(&|i| i.endpoint_url = Some("http://x".into()))
        );
        assert_eq!(
            print,
            changed(&|i| i.refresh_interval = std::time::Duration::from_secs(1))
        );
        assert_eq!(print, changed(&|i| i.max_api_requests_per_day = 1));
        assert_eq!(FAMILIES.len(), snapshot("a").encoded_blocks().len());
    }
}
