//! Cost series per integration, encoded once when a refresh builds them, and the store that
//! swaps them in atomically so that a scrape never waits for AWS and never sees half a refresh.
//!
//! A snapshot keeps no typed copy of the data: each family's sample lines (identical in the
//! classic and OpenMetrics formats for gauges without timestamps) are written once, with their
//! deflate [`Piece`], and the store joins the integrations' pieces family by family, adding
//! only each format's own `# HELP`/`# TYPE`/`# UNIT` lines. A scrape sends those shared bytes.
//!
//! This module is the encoding toolkit the parts of a refresh write their families with
//! ([`Lines`], [`table_block`], [`Names`]); which families there are, and in which order, is
//! the parts' list's, handed to each snapshot.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::aggregate::Table;
use crate::clock::lock;
pub use crate::cost_explorer::Period;
use crate::exposition::{
    Bodies, FamilyDesc, Format, MetricType, NamedFamily, Piece, Run, RunBuilder, push_label_value,
    push_value,
};
use crate::model::{CostBasis, Integration};

/// A gauge family.
pub const fn gauge(
    name: &'static str,
    help: &'static str,
    unit: Option<&'static str>,
) -> FamilyDesc {
    FamilyDesc {
        name,
        help,
        unit,
        kind: MetricType::Gauge,
    }
}

pub const SERIES: FamilyDesc = gauge(
    "aws_cost_series",
    "Series the integration exports per cost metric",
    None,
);
pub const SERIES_DROPPED: FamilyDesc = gauge(
    "aws_cost_series_dropped",
    "Series folded into __other__ per cost metric by its cap (max_tag_series, max_resource_series, a view's max_series), or anomalies left out by max_anomaly_series",
    None,
);

/// The label value that stands for everything folded away by a series cap.
pub const OTHER: &str = "__other__";

/// One family's samples of one integration, encoded.
#[derive(Debug, Clone, Default)]
pub struct Block {
    pub(crate) piece: Piece,
    /// Sample lines.
    pub samples: usize,
    /// Series folded into `__other__` (capped families only).
    pub dropped: usize,
}

impl Block {
    /// A block of stored sample lines (compressed again).
    pub fn from_encoded(encoded: &EncodedBlock) -> Self {
        Self {
            piece: Piece::new(encoded.text.clone()),
            samples: encoded.samples,
            dropped: encoded.dropped,
        }
    }

    /// The block as storage keeps it.
    pub fn encoded(&self) -> EncodedBlock {
        EncodedBlock {
            text: self.piece.text.clone(),
            samples: self.samples,
            dropped: self.dropped,
        }
    }
}

/// One family's encoded sample lines of one integration, as `--storage.path` keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedBlock {
    pub text: Bytes,
    pub samples: usize,
    pub dropped: usize,
}

/// Account names: Organizations', then Cost Explorer's, then the id.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub cost_explorer: Arc<BTreeMap<String, String>>,
    pub organizations: Arc<BTreeMap<String, String>>,
}

impl Names {
    /// The name of an account.
    pub fn of<'a>(&'a self, id: &'a str) -> &'a str {
        self.organizations
            .get(id)
            .or_else(|| self.cost_explorer.get(id))
            .map_or(id, String::as_str)
    }

    /// Every named account's id (some twice).
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.cost_explorer
            .keys()
            .chain(self.organizations.keys())
            .map(String::as_str)
    }
}

/// `aws_cost_series` and `aws_cost_series_dropped` of an integration: one sample each per
/// counted family (its sample lines, and the series its cap folded away).
pub fn series_counts(identity: &Identity, counted: &[(&str, usize, usize)]) -> [Block; 2] {
    let mut series = Lines::new(&SERIES, identity);
    let mut dropped = Lines::new(&SERIES_DROPPED, identity);
    for (family, samples, folded) in counted {
        let labels = [("metric", *family)];
        series.sample(&labels, *samples as f64);
        dropped.sample(&labels, *folded as f64);
    }
    [series.block(0), dropped.block(0)]
}

/// An integration's cost data as served: immutable, encoded once.
#[derive(Debug, Clone)]
pub struct IntegrationSnapshot {
    pub integration: String,
    pub period: Period,
    /// When its cost data was fetched from AWS (`aws_cost_data_age_seconds` is computed from
    /// it at scrape time).
    pub fetched_at: DateTime<Utc>,
    /// The families, in exposition order (the same for every snapshot).
    families: &'static [FamilyDesc],
    /// The families its configuration names, after those.
    named: Arc<[NamedFamily]>,
    /// One block per family, then one per named family.
    blocks: Vec<Block>,
}

/// The labels every series of an integration starts with, `integration` and then the
/// integration's static labels, written once in sample-line form: `integration="payer",team="a"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity(String);

impl Identity {
    /// `integration` named `name`, with `labels` after it.
    pub fn new(name: &str, labels: &[(String, String)]) -> Self {
        Self::from_pairs(std::iter::once(("integration", name)).chain(pairs(labels)))
    }

    /// An integration's: its name and its static labels.
    pub fn of(integration: &Integration) -> Self {
        Self::new(&integration.name, &integration.labels)
    }

    /// Just `labels`, without `integration` (the series of an electrolux-shaped file carry
    /// only the labels it names).
    pub fn labels(labels: &[(String, String)]) -> Self {
        Self::from_pairs(pairs(labels))
    }

    /// `label="value"` for each pair, comma-separated, values escaped.
    fn from_pairs<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        let mut out = String::new();
        for (label, value) in labels {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            push_label_value(&mut out, value);
            out.push('"');
        }
        Self(out)
    }
}

fn pairs(labels: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    labels.iter().map(|(l, v)| (l.as_str(), v.as_str()))
}

/// Writes one family's sample lines of one integration.
pub struct Lines<'a> {
    name: &'a str,
    identity: &'a Identity,
    out: String,
    samples: usize,
}

impl<'a> Lines<'a> {
    pub fn new(family: &FamilyDesc, identity: &'a Identity) -> Self {
        Self::named(family.name, identity)
    }

    /// Lines of the family `name`.
    pub fn named(name: &'a str, identity: &'a Identity) -> Self {
        Self {
            name,
            identity,
            out: String::new(),
            samples: 0,
        }
    }

    /// Writes the samples after this with `identity` instead.
    pub fn set_identity(&mut self, identity: &'a Identity) {
        self.identity = identity;
    }

    /// Writes `name{integration="...",static="...",label="value",...` (no closing brace).
    fn open(&mut self, labels: &[(&str, &str)]) {
        self.out.push_str(self.name);
        self.out.push('{');
        self.out.push_str(&self.identity.0);
        for (label, value) in labels {
            if !self.out.ends_with('{') {
                self.out.push(',');
            }
            self.out.push_str(label);
            self.out.push_str("=\"");
            push_label_value(&mut self.out, value);
            self.out.push('"');
        }
    }

    /// Ends a sample opened by [`Lines::open`].
    fn close(&mut self, value: f64) {
        self.out.push_str("} ");
        push_value(&mut self.out, value);
        self.out.push('\n');
        self.samples += 1;
    }

    /// One sample: `integration` and the static labels first, then `labels`, in the
    /// exposition's sample-line form.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.open(labels);
        self.close(value);
    }

    /// One sample per cost basis of a row whose other labels are `labels`: the same lines as
    /// [`Lines::sample`] with `cost_basis` last, the shared part escaped once and copied.
    pub fn samples_by_basis(
        &mut self,
        labels: &[(&str, &str)],
        bases: &[CostBasis],
        values: &[f64],
    ) {
        let start = self.out.len();
        self.open(labels);
        self.out.push_str(",cost_basis=\"");
        let prefix = start..self.out.len();
        let mut written = 0;
        for (basis, value) in bases.iter().zip(values) {
            if written > 0 {
                self.out.extend_from_within(prefix.clone());
            }
            // Cost basis names need no escaping.
            self.out.push_str(basis.as_str());
            self.out.push('"');
            self.close(*value);
            written += 1;
        }
        if written == 0 {
            self.out.truncate(start);
        }
    }

    pub fn block(mut self, dropped: usize) -> Block {
        // Kept for a whole refresh interval: no spare capacity.
        self.out.shrink_to_fit();
        Block {
            piece: Piece::pending(self.out),
            samples: self.samples,
            dropped,
        }
    }
}

/// Encodes a table whose first key is an account id, one sample per row and cost basis, in
/// label order: account_id, account_name, `labels` for the other keys, cost_basis.
pub fn table_block<const K: usize>(
    family: &FamilyDesc,
    (identity, bases): (&Identity, &[CostBasis]),
    table: &Table<K>,
    labels: [&'static str; K],
    names: &Names,
    dropped: usize,
) -> Block {
    let mut lines = Lines::new(family, identity);
    lines.out.reserve(table.len() * bases.len() * 200);
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(K + 1);
    for row in table.sorted() {
        let key = table.key(row);
        pairs.clear();
        pairs.push((labels[0], key[0]));
        pairs.push(("account_name", names.of(key[0])));
        pairs.extend(labels[1..].iter().copied().zip(key[1..].iter().copied()));
        lines.samples_by_basis(&pairs, bases, table.amounts(row));
    }
    lines.block(dropped * bases.len())
}

impl IntegrationSnapshot {
    /// A snapshot of `blocks`, one per family of `families` and then one per family of
    /// `named`.
    pub fn new(
        integration: String,
        period: Period,
        fetched_at: DateTime<Utc>,
        (families, named): (&'static [FamilyDesc], Arc<[NamedFamily]>),
        mut blocks: Vec<Block>,
    ) -> Self {
        blocks.resize_with(families.len() + named.len(), Block::default);
        Self {
            integration,
            period,
            fetched_at,
            families,
            named,
            blocks,
        }
    }

    /// Each family's block, in the order of its families.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// The sample lines of one family (none if it has no such family).
    pub fn text(&self, family: &FamilyDesc) -> &[u8] {
        self.families
            .iter()
            .position(|f| f.name == family.name)
            .map_or(&[], |index| &self.blocks[index].piece.text)
    }

    /// The families its configuration names, with their blocks.
    fn named_blocks(&self) -> impl Iterator<Item = (&NamedFamily, &Block)> {
        self.named
            .iter()
            .zip(self.blocks.iter().skip(self.families.len()))
    }

    /// The number of series this snapshot serves.
    pub fn series_count(&self) -> usize {
        self.blocks.iter().map(|b| b.samples).sum()
    }
}

/// The cost families of all integrations, joined once per publish, per format.
#[derive(Debug, Default)]
pub struct Rendered {
    classic: Run,
    openmetrics: Run,
    pub series: usize,
    /// The bodies of its scrapes, joined with the exporter's own lines.
    bodies: Bodies,
}

/// The runs of both formats while a page is rendered.
#[derive(Default)]
struct Builders {
    classic: RunBuilder,
    openmetrics: RunBuilder,
}

impl Builders {
    /// Appends one family: its headers and every integration's samples, unless it has none.
    fn push_family(&mut self, [classic, openmetrics]: [&Piece; 2], pieces: &[&Piece]) {
        if pieces.iter().all(|piece| piece.is_empty()) {
            return;
        }
        self.classic.push(classic);
        self.openmetrics.push(openmetrics);
        for piece in pieces {
            self.classic.push(piece);
            self.openmetrics.push(piece);
        }
    }
}

impl Rendered {
    /// The cost families in `format`: each family's header lines, then every integration's
    /// samples of it.
    pub fn run(&self, format: Format) -> &Run {
        match format {
            Format::Classic => &self.classic,
            Format::OpenMetrics => &self.openmetrics,
        }
    }

    /// The bodies of its scrapes, joined once per encoding of the exporter's own lines.
    pub fn bodies(&self) -> &Bodies {
        &self.bodies
    }
}

/// The latest good snapshot of every integration. Refreshes publish; scrapes load.
#[derive(Debug)]
pub struct SnapshotStore {
    /// Taken by refreshes and reloads only; scrapes never take it.
    inner: Mutex<StoreInner>,
    rendered: ArcSwap<Rendered>,
}

#[derive(Debug, Default)]
struct StoreInner {
    /// Integration names in config order, which is exposition order.
    order: Vec<String>,
    snapshots: BTreeMap<String, Arc<IntegrationSnapshot>>,
    /// Each family's header lines, per format, compressed once.
    headers: Vec<[Piece; 2]>,
}

impl StoreInner {
    fn render(&mut self) -> Rendered {
        let families = self
            .snapshots
            .values()
            .next()
            .map_or(&[][..], |s| s.families);
        if self.headers.len() != families.len() {
            self.headers = families
                .iter()
                .map(|family| {
                    [Format::Classic, Format::OpenMetrics].map(|format| {
                        let mut header = String::new();
                        family.write_header(&mut header, format);
                        Piece::new(header)
                    })
                })
                .collect();
        }
        let ordered: Vec<&Arc<IntegrationSnapshot>> = self
            .order
            .iter()
            .filter_map(|name| self.snapshots.get(name))
            .collect();
        let mut rendered = Builders::default();
        for (index, [classic, openmetrics]) in self.headers.iter().enumerate() {
            let pieces: Vec<&Piece> = ordered
                .iter()
                .filter_map(|s| s.blocks.get(index).map(|b| &b.piece))
                .collect();
            rendered.push_family([classic, openmetrics], &pieces);
        }
        // The named families, each once, in the order the integrations first name them: every
        // integration's samples of one under its header (the first integration's help).
        let mut named: Vec<(&NamedFamily, Vec<&Piece>)> = Vec::new();
        for snapshot in &ordered {
            for (family, block) in snapshot.named_blocks() {
                match named.iter_mut().find(|(f, _)| f.name == family.name) {
                    Some((_, pieces)) => pieces.push(&block.piece),
                    None => named.push((family, vec![&block.piece])),
                }
            }
        }
        for (family, pieces) in named {
            let [classic, openmetrics] = [Format::Classic, Format::OpenMetrics].map(|format| {
                let mut header = String::new();
                family.write_header(&mut header, format);
                Piece::new(header)
            });
            rendered.push_family([&classic, &openmetrics], &pieces);
        }
        Rendered {
            classic: rendered.classic.finish(),
            openmetrics: rendered.openmetrics.finish(),
            series: ordered.iter().map(|s| s.series_count()).sum(),
            bodies: Bodies::default(),
        }
    }
}

impl SnapshotStore {
    pub fn new(order: Vec<String>) -> Self {
        Self {
            inner: Mutex::new(StoreInner {
                order,
                ..StoreInner::default()
            }),
            rendered: ArcSwap::from_pointee(Rendered::default()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, StoreInner> {
        lock(&self.inner)
    }

    /// Replaces an integration's snapshot and re-renders the combined cost families.
    pub fn publish(&self, snapshot: Arc<IntegrationSnapshot>) {
        let mut inner = self.inner();
        inner
            .snapshots
            .insert(snapshot.integration.clone(), snapshot);
        let rendered = inner.render();
        self.rendered.store(Arc::new(rendered));
    }

    /// Sets the integrations (config order) after a reload, dropping the others' snapshots.
    pub fn set_integrations(&self, order: Vec<String>) {
        let mut inner = self.inner();
        inner.snapshots.retain(|name, _| order.contains(name));
        inner.order = order;
        let rendered = inner.render();
        self.rendered.store(Arc::new(rendered));
    }

    /// The current rendering; a scrape clones an `Arc` and sends its bytes.
    pub fn rendered(&self) -> Arc<Rendered> {
        self.rendered.load_full()
    }

    /// The current snapshot of one integration.
    pub fn get(&self, integration: &str) -> Option<Arc<IntegrationSnapshot>> {
        self.inner().snapshots.get(integration).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    const DAILY: FamilyDesc = gauge("aws_cost_daily_usd", "Cost", Some("usd"));

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    /// A family named by the configuration is served once, under one header, with every
    /// integration's samples of it; its series carry only the labels given.
    #[test]
    fn named_families_join_across_integrations() {
        let store = SnapshotStore::new(vec!["a".into(), "b".into()]);
        let named: Arc<[NamedFamily]> = vec![NamedFamily {
            name: "aws_daily_cost_usd".into(),
            help: "Daily cost".into(),
        }]
        .into();
        for (integration, publisher, value) in [("a", "1", 1.5), ("b", "2", 2.0)] {
            let identity = Identity::labels(&[("Publisher".into(), publisher.into())]);
            let mut lines = Lines::named("aws_daily_cost_usd", &identity);
            lines.sample(&[("ChargeType", "Usage")], value);
            let ours = Identity::new(integration, &[]);
            let mut own = Lines::new(&DAILY, &ours);
            own.sample(&[], 3.0);
            let snapshot = IntegrationSnapshot::new(
                integration.into(),
                Period::new(day(23), 1),
                Utc::now(),
                (std::slice::from_ref(&DAILY), named.clone()),
                vec![own.block(0), lines.block(0)],
            );
            store.publish(Arc::new(snapshot));
        }
        let text: Vec<u8> = store.rendered().run(Format::Classic).plain().concat();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "# HELP aws_cost_daily_usd Cost\n# TYPE aws_cost_daily_usd gauge\n\
             aws_cost_daily_usd{integration=\"a\"} 3\naws_cost_daily_usd{integration=\"b\"} 3\n\
             # HELP aws_daily_cost_usd Daily cost\n# TYPE aws_daily_cost_usd gauge\n\
             aws_daily_cost_usd{Publisher=\"1\",ChargeType=\"Usage\"} 1.5\n\
             aws_daily_cost_usd{Publisher=\"2\",ChargeType=\"Usage\"} 2\n"
        );
    }

    #[test]
    fn samples_by_basis_match_single_samples() {
        let labels = [
            ("account_id", "111111111111"),
            ("account_name", "Ops \"east\"\\ \n team"),
            ("aws_service", "Amazon S3"),
        ];
        let bases = [
            CostBasis::Unblended,
            CostBasis::Amortized,
            CostBasis::NetUnblended,
        ];
        let values = [1.5, -0.25, 3.0];
        let payer = Identity::new("pay\"er", &[]);
        let mut rows = Lines::new(&DAILY, &payer);
        rows.samples_by_basis(&labels, &bases, &values);
        let mut single = Lines::new(&DAILY, &payer);
        for (basis, value) in bases.iter().zip(values) {
            let mut all = labels.to_vec();
            all.push(("cost_basis", basis.as_str()));
            single.sample(&all, value);
        }
        let shared = "aws_cost_daily_usd{integration=\"pay\\\"er\",account_id=\"111111111111\",\
                      account_name=\"Ops \\\"east\\\"\\\\ \\n team\",aws_service=\"Amazon S3\",cost_basis=";
        let expected = format!(
            "{shared}\"unblended\"}} 1.5\n{shared}\"amortized\"}} -0.25\n{shared}\"net_unblended\"}} 3\n"
        );
        assert_eq!(rows.out, expected);
        assert_eq!(single.out, expected);
        assert_eq!((rows.samples, single.samples), (3, 3));
        let mut none = Lines::new(&DAILY, &payer);
        none.samples_by_basis(&labels, &[], &[]);
        assert_eq!((none.out.as_str(), none.samples), ("", 0));
    }

    #[test]
    fn period_covers_month_and_data_day() {
        let p = Period::new(day(23), 1);
        assert_eq!(
            (p.query_start(), p.data_day, p.data_day_end(), p.query_end()),
            (day(1), day(22), day(23), day(24))
        );
        assert_eq!(
            p.forecast_period(),
            Some((day(24), NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()))
        );
        // On the first of a month the data day lies in the previous month.
        let first = Period::new(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(), 1);
        assert_eq!(first.query_start(), day(30));
        assert_eq!(
            first.month_start(),
            NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()
        );
        assert_eq!(
            first.query_end(),
            NaiveDate::from_ymd_opt(2026, 12, 2).unwrap()
        );
        assert_eq!(
            first.next_month_start(),
            NaiveDate::from_ymd_opt(2027, 1, 1).unwrap()
        );
        // Nothing is left to forecast on the last day of a month.
        assert_eq!(Period::new(day(30), 1).forecast_period(), None);
    }
}
