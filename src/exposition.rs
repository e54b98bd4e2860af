//! The text exposition formats: Prometheus text 0.0.4 ("classic") and OpenMetrics 1.0,
//! label-value escaping, content negotiation, and gzip built from pieces compressed once.
//!
//! A page is a sequence of [`Piece`]s: text compressed once into raw deflate blocks that end
//! on a sync flush. Such pieces can be concatenated in any order into one deflate stream, so the
//! pieces of the cost families are joined with a piece of the exporter's own few lines into one
//! ordinary single-member gzip stream: gzip header, the pieces, an empty final block, and the
//! trailer with the CRC-32 combined from the pieces' own. That body is joined once per encoding
//! of the own lines (at most once per tick of the clock, a tenth of a second) and shared by the
//! scrapes that send them ([`Bodies`]). A long piece (a large family's samples) is compressed
//! alone when a refresh builds it; the short ones (headers, small families) between two long
//! ones are joined and compressed together once per rendering of the page ([`RunBuilder`]),
//! which keeps the page as small as one stream would be.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};

/// `Content-Type` of the classic Prometheus text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A text exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Classic,
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Classic => CLASSIC_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// The metric type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Gauge,
}

/// A family's name, help text and unit (the unit is the name's suffix, for OpenMetrics' `# UNIT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyDesc {
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Option<&'static str>,
    pub kind: MetricType,
}

impl FamilyDesc {
    /// Writes the `# HELP` / `# TYPE` (and for OpenMetrics `# UNIT`) lines.
    pub fn write_header(&self, out: &mut String, format: Format) {
        write_header(out, (self.name, self.help, self.unit), self.kind, format);
    }
}

/// A gauge family whose name and help the configuration gives (one of the metrics of an
/// electrolux-shaped file), served after the exporter's own families.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamedFamily {
    pub name: String,
    pub help: String,
}

impl NamedFamily {
    /// Writes the `# HELP` / `# TYPE` lines.
    pub fn write_header(&self, out: &mut String, format: Format) {
        write_header(
            out,
            (&self.name, &self.help, None),
            MetricType::Gauge,
            format,
        );
    }
}

/// The `# HELP` / `# TYPE` (and for OpenMetrics `# UNIT`) lines of a family.
fn write_header(
    out: &mut String,
    (name, help, unit): (&str, &str, Option<&str>),
    kind: MetricType,
    format: Format,
) {
    let kind = match kind {
        MetricType::Gauge => "gauge",
    };
    match format {
        Format::Classic => {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(help, format));
            let _ = writeln!(out, "# TYPE {name} {kind}");
        }
        Format::OpenMetrics => {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            if let Some(unit) = unit {
                let _ = writeln!(out, "# UNIT {name} {unit}");
            }
            let _ = writeln!(out, "# HELP {name} {}", escape_help(help, format));
        }
    }
}

fn escape_help(help: &str, format: Format) -> String {
    let mut out = String::with_capacity(help.len());
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == Format::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// Appends a label value escaped as both formats require: `\`, `"` and line feed.
pub fn push_label_value(out: &mut String, value: &str) {
    if memchr::memchr3(b'\\', b'"', b'\n', value.as_bytes()).is_none() {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends a sample value: the shortest text that parses back to the same `f64`.
pub fn push_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value == value.trunc() && value.abs() < 1e15 {
        // Whole numbers (flags, timestamps, counts) without a fraction.
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value:?}");
    }
}

/// Picks the format from an `Accept` header: OpenMetrics when it is acceptable and preferred at
/// least as much as plain text, else the classic format.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Classic;
    };
    let mut openmetrics_q: f32 = 0.0;
    let mut text_q: f32 = 0.0;
    for (media, q) in weighted(accept) {
        let is = |name: &str| media.eq_ignore_ascii_case(name);
        if is("application/openmetrics-text") {
            openmetrics_q = openmetrics_q.max(q);
        } else if is("text/plain") || is("text/*") || is("*/*") {
            text_q = text_q.max(q);
        }
    }
    if openmetrics_q > 0.0 && openmetrics_q >= text_q {
        Format::OpenMetrics
    } else {
        Format::Classic
    }
}

/// The items of an `Accept` or `Accept-Encoding` header, trimmed (compare them ignoring ASCII
/// case), with their `q` weight. Nothing is allocated: every scrape parses these headers.
fn weighted(header: &str) -> impl Iterator<Item = (&str, f32)> + '_ {
    header.split(',').map(|item| {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let q = parts
            .filter_map(|param| param.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, v)| v.trim().parse().unwrap_or(0.0));
        (name, q)
    })
}

/// Whether an `Accept-Encoding` header allows gzip.
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let Some(header) = accept_encoding else {
        return false;
    };
    let mut gzip: Option<f32> = None;
    let mut any: Option<f32> = None;
    for (name, q) in weighted(header) {
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(q);
        } else if name == "*" {
            any = Some(q);
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

/// Rewrites prometheus-client's OpenMetrics output (counters and gauges, no exemplars) into
/// the classic text format: counter families take their `_total` sample name, `# UNIT` and
/// `# EOF` go, and HELP text loses OpenMetrics' quote escaping.
pub fn openmetrics_to_classic(openmetrics: &str) -> String {
    let mut counters: Vec<&str> = Vec::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, "counter")) = rest.rsplit_once(' ')
        {
            counters.push(name);
        }
    }
    let classic_name = |name: &str| -> String {
        if counters.contains(&name) {
            format!("{name}_total")
        } else {
            name.to_string()
        }
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let _ = writeln!(
                out,
                "# HELP {} {}",
                classic_name(name),
                help.replace("\\\"", "\"")
            );
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, "untyped"));
            let kind = match kind {
                "counter" | "gauge" | "histogram" | "summary" => kind,
                _ => "untyped",
            };
            let _ = writeln!(out, "# TYPE {} {kind}", classic_name(name));
        } else if line.starts_with('#') || is_created_sample(line, &counters) {
            continue;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn is_created_sample(line: &str, counters: &[&str]) -> bool {
    counters.iter().any(|name| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix("_created"))
            .is_some_and(|rest| rest.starts_with(['{', ' ']))
    })
}

/// The compression level of the cost families' pieces, compressed once per refresh: zlib-rs's
/// lazy matching (`deflate_medium`), whose page is smaller than `gzip -6` of the same text
/// (98.8 % of it at ~100k series and 99.2 % at ~10k; level 6 made 94.8 % but took about a
/// third longer: 68 against 53 ms for the ~100k page's long pieces, bench/ANALYSIS.md).
pub const PAGE_LEVEL: u32 = 5;
/// The compression level of the short pieces of a page joined together once per rendering
/// (a few hundred kilobytes at most): zlib-rs's `deflate_slow`, 2 % smaller than level 6 on such
/// text (its level 9 is larger again).
pub const GROUP_LEVEL: u32 = 8;
/// Pieces shorter than this are not compressed alone: a page joins each run of them and
/// compresses it once, when it is rendered. A deflate piece starts without context and pays
/// for its own Huffman tables (about 100 bytes), which on a page of many short families (the
/// headers, a small integration's families) made the gzip body nearly twice `gzip -6`'s.
pub const GROUP_BELOW: usize = 64 * 1024;

/// Text, and the same text compressed alone as raw deflate ending on a sync flush.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Piece {
    pub text: Bytes,
    /// Empty for a short piece of a page, compressed with its neighbours when the page is
    /// rendered ([`RunBuilder`]).
    pub deflate: Bytes,
    /// CRC-32 of `text`.
    pub crc: u32,
}

impl Piece {
    /// A piece of a cost page: compressed now (at [`PAGE_LEVEL`]) when it is at least
    /// [`GROUP_BELOW`] long, else later with its neighbours.
    pub fn new(text: impl Into<Bytes>) -> Self {
        Self::pending(text).settled(None)
    }

    /// A piece of a cost page whose compression waits for [`Piece::settled`] (until then it
    /// is compressed, correctly but at the short pieces' cost, with its neighbours).
    pub fn pending(text: impl Into<Bytes>) -> Self {
        let text = text.into();
        let crc = crc32fast::hash(&text);
        Self {
            text,
            deflate: Bytes::new(),
            crc,
        }
    }

    /// This piece, compressed if it is long enough; or, when `previous` (the same family's
    /// piece in the snapshot served until now) holds the same text, that piece itself. A
    /// refresh that finds what it served then costs no compression, and its page shares the
    /// old page's memory while a scrape of the old page is still being sent.
    pub fn settled(self, previous: Option<&Piece>) -> Self {
        if let Some(previous) = previous.filter(|previous| previous.same_text(&self)) {
            return previous.clone();
        }
        if self.text.len() >= GROUP_BELOW && self.deflate.is_empty() {
            let deflate = deflate_piece(&self.text, PAGE_LEVEL);
            return Self { deflate, ..self };
        }
        self
    }

    fn same_text(&self, other: &Piece) -> bool {
        self.crc == other.crc
            && self.text.len() == other.text.len()
            && (self.text.as_ptr() == other.text.as_ptr() || self.text == other.text)
    }

    /// `text`, compressed now at `level`.
    pub fn compressed(text: impl Into<Bytes>, level: u32) -> Self {
        let text = text.into();
        let deflate = deflate_piece(&text, level);
        let crc = crc32fast::hash(&text);
        Self { text, deflate, crc }
    }

    /// A piece of static text, compressed now.
    pub fn from_static(text: &'static str) -> Self {
        Self::compressed(Bytes::from_static(text.as_bytes()), PAGE_LEVEL)
    }

    /// Uncompressed length.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Whether its text still has to be compressed.
    fn deferred(&self) -> bool {
        self.deflate.is_empty() && !self.text.is_empty()
    }

    /// Its deflate blocks; compressed now, alone, if it was not yet.
    fn deflated(&self) -> Bytes {
        if self.deferred() {
            deflate_piece(&self.text, PAGE_LEVEL)
        } else {
            self.deflate.clone()
        }
    }
}

/// The CRC-32 and length of a run of pieces, combined without reading their text again.
#[derive(Debug, Clone, Default)]
pub struct Checksum {
    hasher: crc32fast::Hasher,
    len: u64,
}

impl Checksum {
    /// Appends a piece.
    pub fn push(&mut self, piece: &Piece) {
        self.append(&Checksum {
            hasher: crc32fast::Hasher::new_with_initial_len(piece.crc, piece.len() as u64),
            len: piece.len() as u64,
        });
    }

    /// Appends another run.
    pub fn append(&mut self, other: &Checksum) {
        self.hasher.combine(&other.hasher);
        self.len += other.len;
    }

    /// The gzip trailer: CRC-32 and length modulo 2^32, little-endian.
    pub fn trailer(&self) -> [u8; 8] {
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.hasher.clone().finalize().to_le_bytes());
        trailer[4..].copy_from_slice(&(self.len as u32).to_le_bytes());
        trailer
    }
}

/// The gzip member header: deflate, no flags, no time, unknown OS.
pub const GZIP_HEADER: &[u8] = &[0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff];
/// An empty final deflate block (fixed Huffman codes): ends the stream of pieces.
pub const FINAL_BLOCK: &[u8] = &[0x03, 0x00];

/// Compresses `text` alone at `level` as raw deflate blocks ending on a sync flush:
/// byte-aligned, not final, and referring to nothing before its start, so it can follow any
/// other piece.
pub fn deflate_piece(text: &[u8], level: u32) -> Bytes {
    if text.is_empty() {
        return Bytes::new();
    }
    // A compressor's state is a few hundred kilobytes to set up: each thread keeps one per
    // level it uses, reset for each piece.
    thread_local! {
        static COMPRESSORS: RefCell<Vec<(u32, Compress)>> = const { RefCell::new(Vec::new()) };
    }
    let fresh = || Compress::new(Compression::new(level), false);
    COMPRESSORS.with(|compressors| match compressors.try_borrow_mut() {
        Ok(mut compressors) => {
            let index = match compressors.iter().position(|(l, _)| *l == level) {
                Some(index) => index,
                None => {
                    compressors.push((level, fresh()));
                    compressors.len() - 1
                }
            };
            let compress = &mut compressors[index].1;
            compress.reset();
            deflate_with(compress, text)
        }
        Err(_) => deflate_with(&mut fresh(), text),
    })
}

fn deflate_with(compress: &mut Compress, text: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(text.len() / 4 + 64);
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let consumed = usize::try_from(compress.total_in()).unwrap_or(text.len());
        let status = compress.compress_vec(
            &text[consumed.min(text.len())..],
            &mut out,
            FlushCompress::Sync,
        );
        let all_in = usize::try_from(compress.total_in()).is_ok_and(|n| n >= text.len());
        // The flush is complete once all input is in and the output was not filled up.
        match status {
            Ok(Status::Ok | Status::BufError) if all_in && out.len() < out.capacity() => break,
            Ok(_) => {}
            // Compressing into a growing Vec does not fail; were it to, send the text stored.
            Err(_) => return stored_piece(text),
        }
    }
    out.shrink_to_fit();
    Bytes::from(out)
}

/// `text` as stored (uncompressed) deflate blocks, non-final.
fn stored_piece(text: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(text.len() + text.len() / 65535 * 5 + 5);
    for block in text.chunks(65535) {
        let len = block.len() as u16;
        out.push(0x00);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    Bytes::from(out)
}

/// A run of pieces: their texts, their deflate blocks, and the checksum of the whole, so that
/// runs built once can be joined per scrape with one CRC combination each.
#[derive(Debug, Clone, Default)]
pub struct Run {
    text: Vec<Bytes>,
    deflate: Vec<Bytes>,
    checksum: Checksum,
}

impl Run {
    /// Appends a piece (one not compressed yet is compressed now, alone: a page builds its
    /// runs with a [`RunBuilder`] instead).
    pub fn push(&mut self, piece: &Piece) {
        if piece.is_empty() {
            return;
        }
        self.text.push(piece.text.clone());
        self.deflate.push(piece.deflated());
        self.checksum.push(piece);
    }

    /// Appends another run.
    pub fn append(&mut self, other: &Run) {
        self.text.extend(other.text.iter().cloned());
        self.deflate.extend(other.deflate.iter().cloned());
        self.checksum.append(&other.checksum);
    }

    /// Uncompressed length.
    pub fn len(&self) -> u64 {
        self.checksum.len
    }

    pub fn is_empty(&self) -> bool {
        self.checksum.len == 0
    }

    /// The text, as chunks.
    pub fn plain(&self) -> Vec<Bytes> {
        self.text.clone()
    }

    /// One gzip member holding the text, as chunks: header, the pieces' blocks, an empty
    /// final block, and the trailer.
    pub fn gzip(&self) -> Vec<Bytes> {
        let mut chunks = Vec::with_capacity(self.deflate.len() + 3);
        chunks.push(Bytes::from_static(GZIP_HEADER));
        chunks.extend(self.deflate.iter().cloned());
        chunks.push(Bytes::from_static(FINAL_BLOCK));
        chunks.push(Bytes::copy_from_slice(&self.checksum.trailer()));
        chunks
    }
}

/// A scrape's body no longer than this is sent as one contiguous buffer, copied once when it
/// is joined (a page of about 1k series compressed is 16 kB): one chunk to queue and write
/// instead of several. Longer ones are sent as the chunks they are made of, without copying.
pub const CONTIGUOUS_BELOW: usize = 64 * 1024;

/// One gzip member holding the pieces `first`, then `run`, then `last` (OpenMetrics' `# EOF`),
/// as the chunks of a response body: header, the pieces' blocks, an empty final block and the
/// trailer; one chunk when that is shorter than [`CONTIGUOUS_BELOW`].
pub fn gzip_body(first: &[Piece], run: &Run, last: Option<&Piece>) -> Vec<Bytes> {
    let mut checksum = Checksum::default();
    let mut chunks = Vec::with_capacity(first.len() + run.deflate.len() + 4);
    chunks.push(Bytes::from_static(GZIP_HEADER));
    for piece in first.iter().filter(|piece| !piece.is_empty()) {
        checksum.push(piece);
        chunks.push(piece.deflated());
    }
    checksum.append(&run.checksum);
    chunks.extend(run.deflate.iter().cloned());
    if let Some(last) = last.filter(|last| !last.is_empty()) {
        checksum.push(last);
        chunks.push(last.deflated());
    }
    chunks.push(Bytes::from_static(FINAL_BLOCK));
    chunks.push(Bytes::copy_from_slice(&checksum.trailer()));
    contiguous_if_short(chunks)
}

/// `first`, then `run`, then `last`, as the chunks of a response body; one chunk when that is
/// shorter than [`CONTIGUOUS_BELOW`].
pub fn plain_body(first: &Bytes, run: &Run, last: Option<&Bytes>) -> Vec<Bytes> {
    let mut chunks = Vec::with_capacity(run.text.len() + 2);
    chunks.push(first.clone());
    chunks.extend(run.text.iter().cloned());
    chunks.extend(last.cloned());
    chunks.retain(|chunk| !chunk.is_empty());
    contiguous_if_short(chunks)
}

fn contiguous_if_short(chunks: Vec<Bytes>) -> Vec<Bytes> {
    let len: usize = chunks.iter().map(Bytes::len).sum();
    if chunks.len() <= 1 || len >= CONTIGUOUS_BELOW {
        return chunks;
    }
    vec![Bytes::from(chunks.concat())]
}

/// The bodies of a page's scrapes, each joined once per encoding of the exporter's own lines
/// (at most once per tick of the clock, [`crate::metrics::AGE_TICK_MILLIS`]) and shared by
/// every scrape that sends the same own lines:
/// one per format and encoding. A page holds its own, so that they go with it.
#[derive(Debug, Default)]
pub struct Bodies {
    slots: [ArcSwapOption<Joined>; 4],
}

#[derive(Debug)]
struct Joined {
    /// The own lines the body starts with. Held, so that their address, which identifies
    /// them, is not reused while this body is cached.
    own: Bytes,
    chunks: Arc<[Bytes]>,
}

impl Bodies {
    /// The body in `format`, gzip or not, that starts with the own lines `own`: the one
    /// cached for them, or `join()`'s, cached for the next scrapes.
    pub fn get(
        &self,
        format: Format,
        gzip: bool,
        own: &Bytes,
        join: impl FnOnce() -> Vec<Bytes>,
    ) -> Arc<[Bytes]> {
        let slot = &self.slots[usize::from(format == Format::OpenMetrics) * 2 + usize::from(gzip)];
        if let Some(joined) = &*slot.load()
            && joined.own.as_ptr() == own.as_ptr()
            && joined.own.len() == own.len()
        {
            return joined.chunks.clone();
        }
        let chunks: Arc<[Bytes]> = join().into();
        slot.store(Some(Arc::new(Joined {
            own: own.clone(),
            chunks: chunks.clone(),
        })));
        chunks
    }
}

/// Builds the [`Run`] of a page once per rendering: pieces compressed when they were built are
/// sent as they are, and each run of short pieces between them is joined into one text (one
/// chunk for plain scrapes) and compressed once, as one piece.
#[derive(Debug, Default)]
pub struct RunBuilder {
    run: Run,
    /// The texts of the short pieces since the last long one.
    short: Vec<Bytes>,
}

impl RunBuilder {
    /// Appends a piece.
    pub fn push(&mut self, piece: &Piece) {
        if piece.is_empty() {
            return;
        }
        if piece.deferred() {
            self.short.push(piece.text.clone());
        } else {
            self.join_short();
            self.run.push(piece);
        }
    }

    /// The short pieces so far, as one piece.
    fn join_short(&mut self) {
        let text = match self.short.len() {
            0 => return,
            1 => self.short[0].clone(),
            _ => Bytes::from(self.short.concat()),
        };
        self.short.clear();
        self.run.push(&Piece::compressed(text, GROUP_LEVEL));
    }

    pub fn finish(mut self) -> Run {
        self.join_short();
        self.run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        push_label_value(&mut out, "back\\slash \"quoted\"\nnewline");
        out.push('|');
        push_label_value(&mut out, "ünïcödé, {braces}=");
        assert_eq!(
            out,
            "back\\\\slash \\\"quoted\\\"\\nnewline|ünïcödé, {braces}="
        );
    }

    #[test]
    fn values_round_trip() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (1_764_547_200.0, "1764547200"),
            (12.345_678_901_2, "12.3456789012"),
            (-2.61e-8, "-2.61e-8"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e300, "1e300"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (value, text) in cases {
            let mut out = String::new();
            push_value(&mut out, value);
            assert_eq!(out, text, "{value}");
            if value.is_finite() {
                assert_eq!(out.parse::<f64>().unwrap(), value);
            }
        }
        let mut nan = String::new();
        push_value(&mut nan, f64::NAN);
        assert_eq!(nan, "NaN");
    }

    #[test]
    fn negotiation_follows_accept() {
        assert_eq!(negotiate(None), Format::Classic);
        assert_eq!(negotiate(Some("*/*")), Format::Classic);
        assert_eq!(negotiate(Some("text/plain")), Format::Classic);
        assert_eq!(
            negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        // Prometheus 2.x default.
        assert_eq!(
            negotiate(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        // Prometheus configured to prefer the classic format.
        assert_eq!(
            negotiate(Some(
                "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5"
            )),
            Format::Classic
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0")),
            Format::Classic
        );
        // Media types are case-insensitive (RFC 9110 8.3.1).
        assert_eq!(
            negotiate(Some(" Application/OpenMetrics-Text ;version=1.0.0")),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(Some("TEXT/PLAIN;q=0.9, application/openmetrics-text;q=0.5")),
            Format::Classic
        );
    }

    #[test]
    fn gzip_follows_accept_encoding() {
        assert!(!accepts_gzip(None));
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("deflate, gzip;q=0.5")));
        assert!(accepts_gzip(Some("*")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(Some("*, gzip;q=0")));
        // Coding names are case-insensitive (RFC 9110 8.4.1).
        assert!(accepts_gzip(Some("GZip")));
        assert!(accepts_gzip(Some("identity, X-GZIP;q=0.3")));
        assert!(!accepts_gzip(Some("GZIP;Q=0")));
    }

    #[test]
    fn headers_differ_by_format() {
        let desc = FamilyDesc {
            name: "aws_cost_daily_usd",
            help: "Cost of the day",
            unit: Some("usd"),
            kind: MetricType::Gauge,
        };
        let mut classic = String::new();
        desc.write_header(&mut classic, Format::Classic);
        assert_eq!(
            classic,
            "# HELP aws_cost_daily_usd Cost of the day\n# TYPE aws_cost_daily_usd gauge\n"
        );
        let mut om = String::new();
        desc.write_header(&mut om, Format::OpenMetrics);
        assert_eq!(
            om,
            "# TYPE aws_cost_daily_usd gauge\n# UNIT aws_cost_daily_usd usd\n# HELP aws_cost_daily_usd Cost of the day\n"
        );
    }

    #[test]
    fn openmetrics_counters_become_classic_totals() {
        let om = "# HELP req Requests \\\"made\\\".\n# TYPE req counter\nreq_total{a=\"b\"} 3\nreq_created{a=\"b\"} 1.7e9\n# HELP g A gauge.\n# TYPE g gauge\n# UNIT g seconds\ng 1.5\n# EOF\n";
        assert_eq!(
            openmetrics_to_classic(om),
            "# HELP req_total Requests \"made\".\n# TYPE req_total counter\nreq_total{a=\"b\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1.5\n"
        );
    }

    fn gunzip_one_member(gzip: &[u8]) -> Vec<u8> {
        // A single member: the decoder reaches its end exactly at the end of the input.
        let mut decoder = flate2::bufread::GzDecoder::new(gzip);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut decoder, &mut out).unwrap();
        assert!(
            decoder.into_inner().is_empty(),
            "bytes after the first member"
        );
        out
    }

    #[test]
    fn pieces_join_into_one_gzip_member() {
        let big: String = (0..20_000)
            .map(|i| {
                format!(
                    "aws_cost_daily_usd{{account_id=\"{i:012}\"}} {}.25\n",
                    i % 97
                )
            })
            .collect();
        let pieces = [
            Piece::from_static("# own\n"),
            Piece::new(big.clone()),
            Piece::new(String::new()),
            Piece::from_static("# EOF\n"),
        ];
        let mut first = Run::default();
        first.push(&pieces[0]);
        let mut rest = Run::default();
        for piece in &pieces[1..] {
            rest.push(piece);
        }
        first.append(&rest);
        let expected = format!("# own\n{big}# EOF\n");
        assert_eq!(first.len(), expected.len() as u64);
        assert_eq!(first.plain().concat(), expected.as_bytes());
        let gzip = first.gzip().concat();
        assert!(gzip.len() * 5 < expected.len(), "compresses");
        assert_eq!(gunzip_one_member(&gzip), expected.as_bytes());
        // The same pieces in another order are still one valid member.
        let mut reordered = Run::default();
        for piece in [&pieces[3], &pieces[1], &pieces[0]] {
            reordered.push(piece);
        }
        let text = format!("# EOF\n{big}# own\n");
        assert_eq!(
            gunzip_one_member(&reordered.gzip().concat()),
            text.as_bytes()
        );
        // An empty run is an empty gzip member.
        assert!(gunzip_one_member(&Run::default().gzip().concat()).is_empty());
    }

    /// A page's short pieces are joined and compressed together, its long ones sent as
    /// compressed when built; the whole is one member, as small as one stream of the text.
    #[test]
    fn short_pieces_are_compressed_together() {
        let family = |name: &str, lines: usize| -> String {
            let mut text = format!("# HELP {name} Cost\n# TYPE {name} gauge\n");
            for i in 0..lines {
                let _ = writeln!(text, "{name}{{account_id=\"{i:012}\"}} {}.5", i % 89);
            }
            text
        };
        let texts = [
            family("aws_cost_a", 10),
            family("aws_cost_b", 3_000),
            family("aws_cost_c", 20),
            family("aws_cost_d", 5),
        ];
        let pieces: Vec<Piece> = texts.iter().map(|t| Piece::new(t.clone())).collect();
        assert!(pieces[1].len() >= GROUP_BELOW && !pieces[1].deflate.is_empty());
        assert!(
            pieces
                .iter()
                .filter(|p| p.len() < GROUP_BELOW)
                .all(Piece::deferred)
        );
        let mut builder = RunBuilder::default();
        for piece in &pieces {
            builder.push(piece);
        }
        builder.push(&Piece::new(String::new()));
        let run = builder.finish();
        let expected = texts.concat();
        // Three chunks: the first short piece, the long one, the last two joined.
        assert_eq!(run.plain().len(), 3);
        assert_eq!(run.plain().concat(), expected.as_bytes());
        let gzip = run.gzip().concat();
        assert_eq!(gunzip_one_member(&gzip), expected.as_bytes());
        // Each piece alone would cost more.
        let mut alone = Run::default();
        for piece in &pieces {
            alone.push(piece);
        }
        assert_eq!(
            gunzip_one_member(&alone.gzip().concat()),
            expected.as_bytes()
        );
        assert!(gzip.len() <= alone.gzip().concat().len());
    }

    /// A scrape's body is the own lines, the page and the tail in one gzip member (or as
    /// text): one contiguous chunk when short, the shared chunks when long.
    #[test]
    fn bodies_join_own_lines_page_and_tail() {
        let own = Piece::compressed(Bytes::from_static(b"# own 1\n"), GROUP_LEVEL);
        let eof = Piece::from_static("# EOF\n");
        let family = |lines: usize| -> String {
            (0..lines)
                .map(|i| format!("aws_cost_x{{account_id=\"{i:012}\"}} {}.5\n", i % 89))
                .collect()
        };
        for lines in [10, 5_000] {
            let mut builder = RunBuilder::default();
            builder.push(&Piece::new(family(lines)));
            builder.push(&Piece::new(family(3)));
            let run = builder.finish();
            let text = format!("# own 1\n{}{}# EOF\n", family(lines), family(3));
            let gzip = gzip_body(std::slice::from_ref(&own), &run, Some(&eof));
            let plain = plain_body(&own.text, &run, Some(&eof.text));
            assert_eq!(gunzip_one_member(&gzip.concat()), text.as_bytes());
            assert_eq!(plain.concat(), text.as_bytes());
            let short = text.len() < CONTIGUOUS_BELOW;
            assert_eq!(plain.len() == 1, short, "{lines} lines");
            assert_eq!(
                gzip.len() == 1,
                gzip.iter().map(Bytes::len).sum::<usize>() < CONTIGUOUS_BELOW
            );
            // Without a tail.
            assert_eq!(
                gunzip_one_member(&gzip_body(std::slice::from_ref(&own), &run, None).concat()),
                text.trim_end_matches("# EOF\n").as_bytes()
            );
        }

        // Joined once per own lines: the same own lines get the same chunks, others new ones.
        let bodies = Bodies::default();
        let run = Run::default();
        let join = |own: &Piece| gzip_body(std::slice::from_ref(own), &run, None);
        let first = bodies.get(Format::Classic, true, &own.text, || join(&own));
        let again = bodies.get(Format::Classic, true, &own.text, || unreachable!());
        assert!(Arc::ptr_eq(&first, &again));
        let other = Piece::compressed(Bytes::from(b"# own 2\n".to_vec()), GROUP_LEVEL);
        let second = bodies.get(Format::Classic, true, &other.text, || join(&other));
        assert_eq!(gunzip_one_member(&second.concat()), b"# own 2\n");
        // Each format and encoding has its own.
        let plain = bodies.get(Format::Classic, false, &other.text, || {
            plain_body(&other.text, &run, None)
        });
        assert_eq!(plain.concat(), b"# own 2\n");
        let om = bodies.get(Format::OpenMetrics, true, &other.text, || {
            gzip_body(
                &[other.clone(), Piece::new(String::new())],
                &run,
                Some(&eof),
            )
        });
        assert_eq!(gunzip_one_member(&om.concat()), b"# own 2\n# EOF\n");
    }

    #[test]
    fn stored_pieces_decode_too() {
        let text: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let piece = Piece {
            deflate: stored_piece(&text),
            crc: crc32fast::hash(&text),
            text: Bytes::from(text.clone()),
        };
        let mut run = Run::default();
        run.push(&piece);
        assert_eq!(gunzip_one_member(&run.gzip().concat()), text);
    }

    /// A refresh's piece whose text the served snapshot already holds is that piece: same
    /// bytes, same compression, none done again; any other text is compressed anew.
    #[test]
    fn a_piece_served_before_is_shared_not_compressed_again() {
        let text = |amount: u32| {
            let mut text = String::new();
            for i in 0..3_000 {
                let _ = writeln!(text, "aws_cost_x{{account_id=\"{i:012}\"}} {amount}.5");
            }
            text
        };
        let served = Piece::new(text(1));
        assert!(served.len() >= GROUP_BELOW && !served.deflate.is_empty());

        let again = Piece::pending(text(1));
        assert!(again.deflate.is_empty(), "pending until settled");
        let again = again.settled(Some(&served));
        assert_eq!(
            again.text.as_ptr(),
            served.text.as_ptr(),
            "the served text itself"
        );
        assert_eq!(again.deflate.as_ptr(), served.deflate.as_ptr());

        let changed = Piece::pending(text(2)).settled(Some(&served));
        assert_ne!(changed.text.as_ptr(), served.text.as_ptr());
        assert!(!changed.deflate.is_empty());
        assert_eq!(changed.crc, crc32fast::hash(text(2).as_bytes()));
        let mut run = Run::default();
        run.push(&changed);
        assert_eq!(gunzip_one_member(&run.gzip().concat()), text(2).as_bytes());

        // A short piece stays for its neighbours, shared or not.
        let short = Piece::pending("aws_cost_y 1\n").settled(None);
        assert!(short.deflate.is_empty());
    }
}
