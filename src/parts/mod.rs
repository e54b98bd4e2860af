//! The parts of a refresh, one module each, and the one list of them ([`PARTS`]).
//!
//! A part is one thing a refresh asks AWS for and serves: costs, tags, resources, forecast,
//! organizations, commitments, anomalies. Its module owns everything about it:
//!
//! - whether an integration's configuration enables it, and the validation of its own keys
//!   ([`Part::enabled`], [`Part::configure`]);
//! - the settings that shape its series ([`Part::fingerprint`]): its stored or carried-over
//!   series are served again only under the same fingerprint;
//! - its cadence ([`Part::due`]: every refresh, once a UTC day, ...);
//! - its queries ([`Part::fetch`]);
//! - what it keeps between refreshes ([`Part::Kept`]): what it falls back on when it fails
//!   or is not due, what it hands on to the parts after it ([`Part::share`]), and what of that
//!   survives a restart ([`Part::save`], [`Part::load`]);
//! - the metric families it serves and their encoding ([`Part::FAMILIES`], [`Part::encode`]);
//!   when it does not run, or fails, its last encoded series stay;
//! - its name, in `aws_cost_query_success` and in storage ([`Part::NAME`]).
//!
//! Everything else is derived from [`PARTS`], so that no second list can drift from it: the
//! refresher's loop (one fetch and one budget check per part), the snapshot's families and
//! their order ([`FAMILIES`]), `aws_cost_series`, storage's records, the `query` values a
//! reload forgets, and what a restart or a reload serves at once and what it refreshes.
//!
//! Adding a part: one module here implementing [`Part`], one entry in [`PARTS`], and its
//! configuration keys (the key in [`crate::schema::NativeIntegration`], its validated setting
//! in [`crate::model::Integration`]).

pub mod anomalies;
pub mod commitments;
pub mod costs;
pub mod electrolux;
pub mod forecast;
pub mod organizations;
pub mod resources;
pub mod tags;
pub mod views;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};

use crate::cost_explorer::Period;
use crate::credentials::Clients;
use crate::exposition::{FamilyDesc, NamedFamily};
use crate::failure::{Classify, Concise, Reason, ToConcise};
use crate::model::{DEFAULT_MAX_SERIES, Integration};
use crate::schema::{ConfigError, Expander, NativeIntegration, Text, positive};
use crate::snapshot::{Block, Identity, Names, SERIES, SERIES_DROPPED};
use crate::storage::{Fingerprint, LoadError, Reader, Record, Writer};
use serde_saphyr::Spanned;

/// Every part, in refresh order: each is fetched after those before it, and may use what they
/// hand on ([`Shared`]). Costs come first: without them nothing is published.
pub static PARTS: [Kind; 9] = [
    Kind::of::<costs::Costs>(),
    Kind::of::<tags::Tags>(),
    Kind::of::<resources::Resources>(),
    Kind::of::<forecast::Forecast>(),
    Kind::of::<organizations::Organizations>(),
    Kind::of::<commitments::Commitments>(),
    Kind::of::<anomalies::Anomalies>(),
    Kind::of::<views::Views>(),
    Kind::of::<electrolux::Electrolux>(),
];

/// Every family the exporter serves, in exposition order: each part's, in [`PARTS`] order,
/// then the series counts.
pub static FAMILIES: LazyLock<Vec<FamilyDesc>> = LazyLock::new(|| {
    PARTS
        .iter()
        .flat_map(|part| part.families.iter().copied())
        .chain([SERIES, SERIES_DROPPED])
        .collect()
});

/// One part of a refresh. A part is a type without data: what it keeps lives in the
/// refresher ([`Part::Kept`]), what one refresh fetched in that refresh ([`Part::Fetched`]).
pub trait Part: 'static {
    /// Its name in `aws_cost_query_success{query}` and in storage's records.
    const NAME: &'static str;
    /// The families it serves, in exposition order.
    const FAMILIES: &'static [FamilyDesc];
    /// Those of its families counted in `aws_cost_series` and `aws_cost_series_dropped`.
    const COUNTED: &'static [FamilyDesc] = &[];
    /// Whether its failure fails the whole refresh (nothing new is published).
    const REQUIRED: bool = false;
    /// Whether its queries need this refresh's cost rows: a refresh that runs it runs costs.
    const NEEDS_COST_ROWS: bool = false;
    /// Whether it keeps its own cadence when a check finds the cost data unchanged
    /// ([`crate::change`]): it still runs when due (if it does not need the cost rows). A part
    /// that follows the cost data (the default) keeps its series until the data changes.
    const OWN_CADENCE: bool = false;

    /// What one fetch returns.
    type Fetched: Send + Sync + 'static;
    /// What it keeps from one refresh to the next.
    type Kept: Clone + Default + Send + Sync + 'static;

    /// Whether the integration's configuration turns it on.
    fn enabled(integration: &Integration) -> bool;

    /// Validates its own keys of one integration and sets them on the model.
    fn configure(
        raw: &NativeIntegration,
        keys: &Keys<'_>,
        into: &mut Integration,
    ) -> Result<(), ConfigError>;

    /// Writes every setting that shapes its series.
    fn fingerprint(integration: &Integration, data_delay_days: u32, print: &mut Fingerprint);

    /// The families the integration's configuration names for it to serve (all counted in
    /// `aws_cost_series`), served after every part's own; by default none.
    fn named(_integration: &Integration) -> Vec<NamedFamily> {
        Vec::new()
    }

    /// Whether it asks AWS this refresh (by default, every refresh).
    fn due(_cx: &Cx<'_>, _kept: &Self::Kept) -> bool {
        true
    }

    /// Asks AWS.
    fn fetch(
        cx: &Cx<'_>,
        kept: &Self::Kept,
    ) -> impl Future<Output = Result<Self::Fetched, PartError>> + Send;

    /// Keeps what the next refreshes need of a successful fetch.
    fn remember(_cx: &Cx<'_>, _fetched: &Self::Fetched, _kept: &mut Self::Kept) {}

    /// Hands on what later parts need: of this refresh's fetch when it ran, else of what it
    /// keeps.
    fn share(_fetched: Option<&Self::Fetched>, _kept: &Self::Kept, _shared: &mut Shared) {}

    /// Encodes its families into `out`: from `fetched`, or, when it did not run or failed,
    /// by keeping its last series ([`Out::keep`], the default).
    fn encode(
        cx: &Encoding<'_>,
        fetched: Option<&Self::Fetched>,
        kept: &Self::Kept,
        out: &mut Out<'_>,
    );

    /// Writes what of [`Part::Kept`] survives a restart (by default, nothing).
    fn save(_kept: &Self::Kept, _w: &mut Writer) {}

    /// Reads what [`Part::save`] wrote.
    fn load(_r: &mut Reader<'_>) -> Result<Self::Kept, LoadError> {
        Ok(Self::Kept::default())
    }
}

/// A part as the list holds it: its name and families, and its functions without its types.
pub struct Kind {
    pub name: &'static str,
    pub families: &'static [FamilyDesc],
    pub counted: &'static [FamilyDesc],
    pub required: bool,
    pub needs_cost_rows: bool,
    pub own_cadence: bool,
    pub enabled: fn(&Integration) -> bool,
    pub named: fn(&Integration) -> Vec<NamedFamily>,
    pub(crate) configure:
        fn(&NativeIntegration, &Keys<'_>, &mut Integration) -> Result<(), ConfigError>,
    /// The fingerprint of its settings in an integration, with `data_delay_days`.
    pub fingerprint: fn(&Integration, u32) -> u64,
    slot: fn() -> Box<dyn Slot>,
}

impl Kind {
    const fn of<P: Part>() -> Self {
        Self {
            name: P::NAME,
            families: P::FAMILIES,
            counted: P::COUNTED,
            required: P::REQUIRED,
            needs_cost_rows: P::NEEDS_COST_ROWS,
            own_cadence: P::OWN_CADENCE,
            enabled: P::enabled,
            named: P::named,
            configure: P::configure,
            fingerprint: fingerprint_of::<P>,
            slot: empty_slot::<P>,
        }
    }
}

/// A part's fingerprint: its own settings, and the static labels every series carries.
fn fingerprint_of<P: Part>(integration: &Integration, data_delay_days: u32) -> u64 {
    let mut print = Fingerprint::new(P::NAME);
    P::fingerprint(integration, data_delay_days, &mut print);
    print.u64(integration.labels.len() as u64);
    for (name, value) in &integration.labels {
        print.str(name);
        print.str(value);
    }
    print.finish()
}

fn empty_slot<P: Part>() -> Box<dyn Slot> {
    Box::new(Typed::<P> {
        kept: P::Kept::default(),
        fetched: None,
    })
}

/// One integration's keys in the file, for a part's [`Part::configure`]: where they are, how
/// to read them, and the file's settings they are checked against.
pub struct Keys<'a> {
    /// The list's key (`integrations`).
    pub list: &'a str,
    pub index: usize,
    pub x: &'a Expander<'a>,
    /// The file's `data_delay_days`.
    pub data_delay_days: u32,
}

impl Keys<'_> {
    /// The dotted key of one of the integration's keys (`integrations[0].tags`).
    pub fn key(&self, field: &str) -> String {
        format!("{}[{}].{field}", self.list, self.index)
    }

    /// A list of distinct, non-empty values (absent: empty) and the cap on the series they
    /// make (absent: [`DEFAULT_MAX_SERIES`]), such as `tags` and `max_tag_series`.
    pub fn capped_list(
        &self,
        (list_key, list): (&str, &Option<Spanned<Vec<Text>>>),
        (cap_key, cap): (&str, &Option<Spanned<usize>>),
    ) -> Result<(Vec<String>, usize), ConfigError> {
        let values = self.x.unique_list(&self.key(list_key), list)?;
        let cap = positive(&self.key(cap_key), cap, DEFAULT_MAX_SERIES)?;
        Ok((values, cap))
    }
}

/// What a part's cadence and queries see.
pub struct Cx<'a> {
    pub integration: &'a Integration,
    pub clients: &'a Clients,
    /// The dates this refresh covers.
    pub period: Period,
    /// When the refresh started.
    pub now: DateTime<Utc>,
    /// What the parts before it handed on.
    pub shared: &'a Shared,
    /// The answer of this refresh's check of the cost data, when it checked
    /// ([`crate::change`]).
    pub probe: Option<&'a Arc<crate::change::Answer>>,
    /// Which parts this refresh runs.
    pub scope: Scope,
}

/// What parts hand on to the parts after them, and to every part's encoding.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    /// This refresh's cost rows, when costs ran.
    pub rows: Option<Arc<costs::CostData>>,
    /// The served cost data's month-to-date totals (fetched this refresh, or kept).
    pub totals: Arc<costs::Totals>,
    /// Account names: Cost Explorer's, then Organizations' over them.
    pub names: Names,
    /// What change detection saw with the served cost data (the costs part keeps it).
    pub seen: crate::change::Seen,
}

/// What a part's encoding sees.
pub struct Encoding<'a> {
    pub integration: &'a Integration,
    /// The labels every series of the integration starts with.
    pub identity: &'a Identity,
    /// The dates the refresh covered.
    pub period: Period,
    pub shared: &'a Shared,
}

/// Where a part writes its families' encoded series.
pub struct Out<'a> {
    families: &'static [FamilyDesc],
    blocks: &'a mut [Block],
    previous: Option<&'a [Block]>,
    /// One block per family of [`Part::named`], and their last ones.
    named: &'a mut [Block],
    previous_named: Option<&'a [Block]>,
}

impl Out<'_> {
    /// Sets one of the part's families.
    pub fn set(&mut self, family: &FamilyDesc, block: Block) {
        if let Some(index) = self.families.iter().position(|f| f.name == family.name) {
            self.blocks[index] = block;
        }
    }

    /// Sets the family at `index` of [`Part::named`].
    pub fn set_named(&mut self, index: usize, block: Block) {
        if let Some(slot) = self.named.get_mut(index) {
            *slot = block;
        }
    }

    /// Keeps the part's last encoded series (none, if it has none).
    pub fn keep(&mut self) {
        if let Some(previous) = self.previous {
            self.blocks.clone_from_slice(previous);
        }
        if let Some(previous) = self.previous_named {
            self.named.clone_from_slice(previous);
        }
    }
}

/// One part's failure: its reason and what to log.
#[derive(Debug, Clone)]
pub struct PartError {
    pub reason: Reason,
    pub text: Concise,
}

impl PartError {
    /// `err` under a context such as `tag "team"`.
    pub fn new(context: &str, err: &(impl Classify + ToConcise)) -> Self {
        Self {
            reason: err.reason(),
            text: Concise::default()
                .elidable(context)
                .fixed(": ")
                .then(err.concise()),
        }
    }

    /// `err` as it is, without a context (a required part's failure is the refresh's).
    pub fn bare(err: &(impl Classify + ToConcise)) -> Self {
        Self {
            reason: err.reason(),
            text: err.concise(),
        }
    }
}

impl std::fmt::Display for PartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.text.fmt(f)
    }
}

impl std::error::Error for PartError {}

impl Classify for PartError {
    fn reason(&self) -> Reason {
        self.reason
    }
}

impl ToConcise for PartError {
    fn concise(&self) -> Concise {
        self.text.clone()
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A part in one integration's refresher, its types erased: what it keeps, and what this
/// refresh fetched.
trait Slot: Send + Sync {
    fn due(&self, cx: &Cx<'_>) -> bool;
    fn fetch<'a>(&'a mut self, cx: &'a Cx<'a>) -> BoxFuture<'a, Result<(), PartError>>;
    fn share(&self, shared: &mut Shared);
    fn encode(&self, cx: &Encoding<'_>, out: &mut Out<'_>);
    fn save(&self, w: &mut Writer);
    fn load(&mut self, r: &mut Reader<'_>) -> Result<(), LoadError>;
    /// A copy of what it keeps, without this refresh's fetch.
    fn kept(&self) -> Box<dyn Slot>;
}

struct Typed<P: Part> {
    kept: P::Kept,
    fetched: Option<P::Fetched>,
}

impl<P: Part> Slot for Typed<P> {
    fn due(&self, cx: &Cx<'_>) -> bool {
        P::due(cx, &self.kept)
    }

    fn fetch<'a>(&'a mut self, cx: &'a Cx<'a>) -> BoxFuture<'a, Result<(), PartError>> {
        Box::pin(async move {
            let fetched = P::fetch(cx, &self.kept).await?;
            P::remember(cx, &fetched, &mut self.kept);
            self.fetched = Some(fetched);
            Ok(())
        })
    }

    fn share(&self, shared: &mut Shared) {
        P::share(self.fetched.as_ref(), &self.kept, shared);
    }

    fn encode(&self, cx: &Encoding<'_>, out: &mut Out<'_>) {
        P::encode(cx, self.fetched.as_ref(), &self.kept, out);
    }

    fn save(&self, w: &mut Writer) {
        P::save(&self.kept, w);
    }

    fn load(&mut self, r: &mut Reader<'_>) -> Result<(), LoadError> {
        self.kept = P::load(r)?;
        Ok(())
    }

    fn kept(&self) -> Box<dyn Slot> {
        Box::new(Typed::<P> {
            kept: self.kept.clone(),
            fetched: None,
        })
    }
}

/// Which parts a refresh runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every enabled part that its cadence says is due, and every part owed a fetch.
    Full,
    /// Only the parts owed a fetch (see [`Parts::owed_alone`]): costs and the others keep
    /// what they serve.
    Owed,
    /// A check found the cost data unchanged ([`crate::change`]): only the parts with their own
    /// cadence ([`Part::OWN_CADENCE`]) that are due and need no cost rows; the others keep
    /// what they serve.
    Unchanged,
}

/// One integration's parts as its refresher keeps them, aligned with [`PARTS`]: whether each
/// is enabled, its fingerprint, what it keeps, whether its series are served (fetched, or
/// carried over under the same fingerprint) or owed a fetch, and how many named families it
/// serves.
///
/// Their blocks are laid out as [`FAMILIES`], then each part's named families in [`PARTS`]
/// order (see [`named_families`]).
pub struct Parts {
    enabled: Vec<bool>,
    prints: Vec<u64>,
    slots: Vec<Box<dyn Slot>>,
    served: Vec<bool>,
    named: Vec<usize>,
}

/// The families an integration's configuration names, in [`PARTS`] order: after [`FAMILIES`]
/// in its snapshot.
pub fn named_families(integration: &Integration) -> Vec<NamedFamily> {
    PARTS
        .iter()
        .filter(|part| (part.enabled)(integration))
        .flat_map(|part| (part.named)(integration))
        .collect()
}

/// An integration's snapshot families: [`FAMILIES`], then its [`named_families`].
pub fn layout(integration: &Integration) -> (&'static [FamilyDesc], Arc<[NamedFamily]>) {
    (&FAMILIES, named_families(integration).into())
}

/// One enabled part during a refresh.
pub struct PartMut<'a> {
    pub kind: &'static Kind,
    slot: &'a mut Box<dyn Slot>,
    served: &'a mut bool,
}

impl PartMut<'_> {
    /// Whether this refresh asks AWS for it: every part owed a fetch; in a full refresh also
    /// every part its cadence says is due.
    pub fn runs(&self, scope: Scope, cx: &Cx<'_>) -> bool {
        match scope {
            Scope::Full => !*self.served || self.slot.due(cx),
            Scope::Owed => !*self.served,
            Scope::Unchanged => {
                self.kind.own_cadence
                    && !self.kind.needs_cost_rows
                    && (!*self.served || self.slot.due(cx))
            }
        }
    }

    /// Asks AWS; on success, its series are served from now on.
    pub async fn fetch(&mut self, cx: &Cx<'_>) -> Result<(), PartError> {
        self.slot.fetch(cx).await?;
        *self.served = true;
        Ok(())
    }

    /// Hands on what later parts need.
    pub fn share(&self, shared: &mut Shared) {
        self.slot.share(shared);
    }
}

impl Parts {
    /// An integration's parts, none served yet.
    pub fn new(integration: &Integration, data_delay_days: u32) -> Self {
        let enabled: Vec<bool> = PARTS.iter().map(|p| (p.enabled)(integration)).collect();
        Self {
            named: PARTS
                .iter()
                .zip(&enabled)
                .map(|(p, on)| if *on { (p.named)(integration).len() } else { 0 })
                .collect(),
            enabled,
            prints: PARTS
                .iter()
                .map(|p| (p.fingerprint)(integration, data_delay_days))
                .collect(),
            slots: PARTS.iter().map(|p| (p.slot)()).collect(),
            served: vec![false; PARTS.len()],
        }
    }

    /// Where part `i`'s named families' blocks are.
    fn named_range(&self, i: usize) -> std::ops::Range<usize> {
        let start = FAMILIES.len() + self.named[..i].iter().sum::<usize>();
        start..start + self.named[i]
    }

    /// How many blocks its layout has.
    fn block_count(&self) -> usize {
        FAMILIES.len() + self.named.iter().sum::<usize>()
    }

    /// The enabled parts owed a fetch: their series are not served.
    pub fn owed(&self) -> impl Iterator<Item = &'static Kind> + '_ {
        (0..PARTS.len())
            .filter(|i| self.enabled[*i] && !self.served[*i])
            .map(|i| &PARTS[i])
    }

    /// Whether the parts owed a fetch can run alone: none is required (costs are served) and
    /// none needs the cost rows.
    pub fn owed_alone(&self) -> bool {
        self.owed()
            .all(|part| !part.required && !part.needs_cost_rows)
    }

    /// The enabled parts whose series are served.
    pub fn served(&self) -> impl Iterator<Item = &'static str> + '_ {
        (0..PARTS.len())
            .filter(|i| self.enabled[*i] && self.served[*i])
            .map(|i| PARTS[i].name)
    }

    /// The enabled parts `old` had under another fingerprint (other settings shaped them).
    pub fn changed_from<'a>(&'a self, old: &'a Parts) -> impl Iterator<Item = &'static str> + 'a {
        (0..PARTS.len())
            .filter(|i| self.enabled[*i] && old.enabled[*i] && old.prints[*i] != self.prints[*i])
            .map(|i| PARTS[i].name)
    }

    /// Whether a part is served.
    pub fn is_served(&self, name: &str) -> bool {
        PARTS
            .iter()
            .position(|part| part.name == name)
            .is_some_and(|i| self.enabled[i] && self.served[i])
    }

    /// A copy to refresh with: what each part keeps, without a fetch. The refresh commits it
    /// by replacing the refresher's once it is published.
    pub fn begin(&self) -> Parts {
        Parts {
            enabled: self.enabled.clone(),
            prints: self.prints.clone(),
            slots: self.slots.iter().map(|slot| slot.kept()).collect(),
            served: self.served.clone(),
            named: self.named.clone(),
        }
    }

    /// What the parts hand on from what they keep, before a refresh fetches anything.
    pub fn kept_shared(&self) -> Shared {
        let mut shared = Shared::default();
        for (slot, on) in self.slots.iter().zip(&self.enabled) {
            if *on {
                slot.share(&mut shared);
            }
        }
        shared
    }

    /// The enabled parts, in refresh order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = PartMut<'_>> {
        PARTS
            .iter()
            .zip(&self.enabled)
            .zip(self.slots.iter_mut().zip(self.served.iter_mut()))
            .filter(|((_, on), _)| **on)
            .map(|((kind, _), (slot, served))| PartMut { kind, slot, served })
    }

    /// Encodes every enabled part into the families' blocks, in [`FAMILIES`] order, with the
    /// series counts; a part that did not run keeps its blocks of `previous` (same order).
    pub fn encode(&self, cx: &Encoding<'_>, previous: Option<&[Block]>) -> Vec<Block> {
        let mut blocks = vec![Block::default(); self.block_count()];
        let previous = previous.filter(|p| p.len() == blocks.len());
        for (i, part) in PARTS.iter().enumerate() {
            if !self.enabled[i] {
                continue;
            }
            let range = part.range();
            let named = self.named_range(i);
            let (own, rest) = blocks.split_at_mut(FAMILIES.len());
            let mut out = Out {
                families: part.families,
                blocks: &mut own[range.clone()],
                previous: previous.and_then(|p| p.get(range)),
                named: &mut rest[named.start - FAMILIES.len()..named.end - FAMILIES.len()],
                previous_named: previous.and_then(|p| p.get(named)),
            };
            self.slots[i].encode(cx, &mut out);
        }
        // Compressed here, once every part has written: a block whose text is what the
        // snapshot served until now keeps that block's piece instead.
        for (i, block) in blocks.iter_mut().enumerate() {
            let previous = previous.and_then(|p| p.get(i)).map(|b| &b.piece);
            block.piece = std::mem::take(&mut block.piece).settled(previous);
        }
        self.count(cx.identity, &named_families(cx.integration), &mut blocks);
        blocks
    }

    /// Drops what this refresh fetched (encoded by now): only what the parts keep stays.
    pub fn settle(&mut self) {
        self.slots = self.slots.iter().map(|slot| slot.kept()).collect();
    }

    /// Sets `aws_cost_series` and `aws_cost_series_dropped` (the last two of [`FAMILIES`])
    /// from the counted families of the enabled parts and the `named` families.
    fn count(&self, identity: &Identity, named: &[NamedFamily], blocks: &mut [Block]) {
        let mut counted: Vec<(&str, usize, usize)> = PARTS
            .iter()
            .zip(&self.enabled)
            .filter(|(_, on)| **on)
            .flat_map(|(part, _)| part.counted.iter())
            .map(|family| {
                let block = &blocks[index_of(family)];
                (family.name, block.samples, block.dropped)
            })
            .collect();
        counted.extend(
            named
                .iter()
                .zip(blocks.iter().skip(FAMILIES.len()))
                .map(|(family, block)| (family.name.as_str(), block.samples, block.dropped)),
        );
        let [series, dropped] = crate::snapshot::series_counts(identity, &counted);
        if let [.., last_but_one, last] = &mut blocks[..FAMILIES.len()] {
            *last_but_one = series;
            *last = dropped;
        }
    }

    /// The records of the served parts, for storage: their series in `blocks` ([`FAMILIES`]
    /// order) and what they keep across restarts.
    pub fn records(&self, blocks: &[Block]) -> Vec<Record> {
        PARTS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.enabled[*i] && self.served[*i])
            .map(|(i, part)| {
                let mut kept = Writer::default();
                self.slots[i].save(&mut kept);
                Record {
                    part: part.name.to_string(),
                    fingerprint: self.prints[i],
                    blocks: blocks[part.range()]
                        .iter()
                        .chain(blocks.get(self.named_range(i)).unwrap_or_default())
                        .map(Block::encoded)
                        .collect(),
                    kept: kept.into_bytes(),
                }
            })
            .collect()
    }

    /// The parts a storage file recorded: a record that names a part, has one block per family
    /// of it (then one per named family) and a kept state that reads is a served part under
    /// the record's fingerprint. Returns them with their blocks (their layout, compressed
    /// again).
    pub fn from_records(records: &[Record]) -> (Parts, Vec<Block>) {
        let mut parts = Parts {
            enabled: vec![false; PARTS.len()],
            prints: vec![0; PARTS.len()],
            slots: PARTS.iter().map(|p| (p.slot)()).collect(),
            served: vec![false; PARTS.len()],
            named: vec![0; PARTS.len()],
        };
        let mut blocks = vec![Block::default(); FAMILIES.len()];
        for (i, part) in PARTS.iter().enumerate() {
            let Some(record) = records
                .iter()
                .find(|r| r.part == part.name && r.blocks.len() >= part.families.len())
            else {
                continue;
            };
            let mut r = Reader::new(&record.kept);
            if parts.slots[i].load(&mut r).is_err() || r.end().is_err() {
                parts.slots[i] = (part.slot)();
                continue;
            }
            parts.enabled[i] = true;
            parts.served[i] = true;
            parts.prints[i] = record.fingerprint;
            let (own, named) = record.blocks.split_at(part.families.len());
            for (block, encoded) in blocks[part.range()].iter_mut().zip(own) {
                *block = Block::from_encoded(encoded);
            }
            parts.named[i] = named.len();
            blocks.extend(named.iter().map(Block::from_encoded));
        }
        (parts, blocks)
    }

    /// This configuration's parts, taking over from `old` (with its `blocks`) each part `old`
    /// served under the same fingerprint: its series and what it keeps. The others are owed a
    /// fetch, and serve nothing until then; disabled parts serve nothing. Returns the blocks to
    /// serve, with the series counts of what is served.
    pub fn carry(
        integration: &Integration,
        data_delay_days: u32,
        old: &Parts,
        blocks: &[Block],
    ) -> (Parts, Vec<Block>) {
        let mut parts = Parts::new(integration, data_delay_days);
        let mut served = vec![Block::default(); parts.block_count()];
        for (i, part) in PARTS.iter().enumerate() {
            let same = old.enabled[i]
                && old.served[i]
                && old.prints[i] == parts.prints[i]
                && old.named[i] == parts.named[i];
            if parts.enabled[i] && same {
                parts.slots[i] = old.slots[i].kept();
                parts.served[i] = true;
                let own = part.range();
                if let Some(old_blocks) = blocks.get(own.clone()) {
                    served[own].clone_from_slice(old_blocks);
                }
                if let Some(old_named) = blocks.get(old.named_range(i)) {
                    served[parts.named_range(i)].clone_from_slice(old_named);
                }
            }
        }
        let named = named_families(integration);
        parts.count(&Identity::of(integration), &named, &mut served);
        (parts, served)
    }
}

impl Kind {
    /// Where its families are in [`FAMILIES`].
    fn range(&self) -> std::ops::Range<usize> {
        let start: usize = PARTS
            .iter()
            .take_while(|part| part.name != self.name)
            .map(|part| part.families.len())
            .sum();
        start..start + self.families.len()
    }
}

impl Cx<'_> {
    /// This refresh's cost rows, for a part that needs them ([`Part::NEEDS_COST_ROWS`]: a
    /// refresh that runs such a part runs costs before it).
    pub fn rows(&self, part: &str) -> Result<&costs::CostData, PartError> {
        self.shared.rows.as_deref().ok_or_else(|| PartError {
            reason: Reason::BadResponse,
            text: Concise::default().elidable(format!("{part}: this refresh has no cost rows")),
        })
    }
}

/// The index of a family in [`FAMILIES`].
pub fn index_of(family: &FamilyDesc) -> usize {
    FAMILIES
        .iter()
        .position(|f| f.name == family.name)
        .unwrap_or_default()
}

/// What the series of every part built on the cost rows depend on: the account, the data day,
/// the cost bases, and whether Organizations names the accounts.
fn print_rows(print: &mut Fingerprint, integration: &Integration, data_delay_days: u32) {
    print.str(&integration.account_id);
    print.u64(u64::from(data_delay_days));
    print_bases(print, &integration.cost_basis);
    print.bool(integration.organizations);
}

fn print_bases(print: &mut Fingerprint, bases: &[crate::model::CostBasis]) {
    print.u64(bases.len() as u64);
    for basis in bases {
        print.str(basis.as_str());
    }
}

fn print_budgets(print: &mut Fingerprint, budgets: &[crate::model::Budget]) {
    print.u64(budgets.len() as u64);
    for budget in budgets {
        print.str(&budget.name);
        print.f64(budget.monthly_usd);
        print.strs(&budget.accounts);
        print.strs(&budget.services);
        print.str(budget.cost_basis.as_str());
    }
}

/// Parts as tests build them: fetched data set by hand, encoded as a refresh encodes it.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::snapshot::IntegrationSnapshot;

    /// One refresh of an integration's parts, with the data of the parts given.
    pub struct Refreshed {
        integration: Integration,
        period: Period,
        now: DateTime<Utc>,
        clients: Clients,
        parts: Parts,
    }

    impl Refreshed {
        pub fn new(integration: &Integration, period: Period) -> Self {
            let conf = aws_sdk_costexplorer::Config::builder()
                .behavior_version(aws_sdk_costexplorer::config::BehaviorVersion::latest())
                .region(aws_sdk_costexplorer::config::Region::new("us-east-1"))
                .build();
            Self {
                integration: integration.clone(),
                period,
                now: period
                    .today
                    .and_hms_opt(12, 0, 0)
                    .map(|t| t.and_utc())
                    .unwrap_or_default(),
                clients: Clients {
                    cost_explorer: crate::cost_explorer::CostExplorer::new(
                        aws_sdk_costexplorer::Client::from_conf(conf),
                    ),
                    organizations: None,
                },
                parts: Parts::new(integration, 1),
            }
        }

        /// `P` fetched `fetched` this refresh.
        pub fn with<P: Part>(mut self, fetched: P::Fetched) -> Self {
            let shared = Shared::default();
            let cx = Cx {
                integration: &self.integration,
                clients: &self.clients,
                period: self.period,
                now: self.now,
                shared: &shared,
                probe: None,
                scope: Scope::Full,
            };
            let mut kept = P::Kept::default();
            P::remember(&cx, &fetched, &mut kept);
            let i = PARTS
                .iter()
                .position(|part| part.name == P::NAME)
                .unwrap_or_default();
            self.parts.slots[i] = Box::new(Typed::<P> {
                kept,
                fetched: Some(fetched),
            });
            self.parts.served[i] = true;
            self
        }

        /// The snapshot this refresh publishes, keeping `previous`'s series of the parts that
        /// did not run.
        pub fn build(&self, previous: Option<&IntegrationSnapshot>) -> IntegrationSnapshot {
            // What every enabled part hands on, in order, as a refresh's loop hands it on.
            let mut shared = Shared::default();
            for (slot, on) in self.parts.slots.iter().zip(&self.parts.enabled) {
                if *on {
                    slot.share(&mut shared);
                }
            }
            let identity = Identity::of(&self.integration);
            let cx = Encoding {
                integration: &self.integration,
                identity: &identity,
                period: self.period,
                shared: &shared,
            };
            let blocks = self.parts.encode(&cx, previous.map(|p| p.blocks()));
            IntegrationSnapshot::new(
                self.integration.name.clone(),
                self.period,
                self.now,
                layout(&self.integration),
                blocks,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::sync::Arc;

    use chrono::NaiveDate;

    use super::costs::{ACCOUNT_INFO, CostData, Costs, DAILY, DATA_DAY, ESTIMATED, MONTH_TO_DATE};
    use super::costs::{BUDGET, BUDGET_MONTH_TO_DATE, BUDGET_THRESHOLD};
    use super::fixtures::Refreshed;
    use super::forecast::BUDGET_FORECAST;
    use super::forecast::{
        FORECAST, FORECAST_LOWER, FORECAST_UPPER, Forecast, ForecastValue, Forecasts,
    };
    use super::tags::{TAG_DAILY, TAG_MONTH_TO_DATE, TagData, Tags};
    use super::*;
    use crate::aggregate::Table;
    use crate::exposition::Format;
    use crate::model::{Budget, CostBasis, Threshold, ThresholdOn};
    use crate::snapshot::{SERIES, SERIES_DROPPED, SnapshotStore};

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    fn integration(bases: &[CostBasis]) -> Integration {
        let mut i = Integration::new("payer", "111111111111");
        i.cost_basis = bases.to_vec();
        i
    }

    /// The value of the first line of `text` that carries every `label="value"` pair.
    fn find(text: &[u8], labels: &[(&str, &str)]) -> Option<f64> {
        std::str::from_utf8(text).unwrap().lines().find_map(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
                .then(|| line.rsplit(' ').next().unwrap().parse().unwrap())
        })
    }

    fn lines(text: &[u8]) -> usize {
        std::str::from_utf8(text).unwrap().lines().count()
    }

    /// Costs of two bases: the data day (22nd) and the month to date through the 23rd.
    fn sample_costs() -> CostData {
        let mut costs = CostData::new(2);
        costs
            .daily
            .add(["111111111111", "Amazon S3", "Usage"], &[0.5, 1.0]);
        costs.daily.add(["111111111111", "Tax", "Tax"], &[0.1, 0.1]);
        costs
            .daily
            .add(["222222222222", "Amazon S3", "Credit"], &[-0.25, -0.25]);
        costs
            .month
            .add(["111111111111", "Amazon S3", "Usage"], &[1.75, 3.0]);
        costs.month.add(["111111111111", "Tax", "Tax"], &[0.1, 0.1]);
        costs
            .month
            .add(["222222222222", "Amazon S3", "Credit"], &[-0.25, -0.25]);
        costs
            .account_names
            .insert("111111111111".into(), "Prod \"main\"".into());
        costs.estimated_month = true;
        costs
    }

    #[test]
    fn costs_encode_once_for_both_formats() {
        let i = integration(&[CostBasis::Unblended, CostBasis::Amortized]);
        let snap = Refreshed::new(&i, Period::new(day(23), 1))
            .with::<Costs>(Arc::new(sample_costs()))
            .build(None);
        assert_eq!(lines(snap.text(&DAILY)), 6);
        assert_eq!(lines(snap.text(&MONTH_TO_DATE)), 6);
        let s3 = |basis: &'static str| {
            [
                ("account_id", "111111111111"),
                ("aws_service", "Amazon S3"),
                ("cost_basis", basis),
            ]
        };
        assert_eq!(find(snap.text(&DAILY), &s3("unblended")), Some(0.5));
        assert_eq!(find(snap.text(&MONTH_TO_DATE), &s3("amortized")), Some(3.0));
        assert_eq!(
            find(snap.text(&ESTIMATED), &[("period", "daily")]),
            Some(0.0)
        );
        assert_eq!(
            find(snap.text(&ESTIMATED), &[("period", "month_to_date")]),
            Some(1.0)
        );
        assert_eq!(
            find(snap.text(&SERIES), &[("metric", "aws_cost_daily_usd")]),
            Some(6.0)
        );
        assert_eq!(
            std::str::from_utf8(snap.text(&ACCOUNT_INFO)).unwrap(),
            "aws_cost_account_info{integration=\"payer\",account_id=\"111111111111\",account_name=\"Prod \\\"main\\\"\"} 1\n\
             aws_cost_account_info{integration=\"payer\",account_id=\"222222222222\",account_name=\"222222222222\"} 1\n",
            "named accounts and accounts with cost"
        );
        assert_eq!(snap.series_count(), 6 + 6 + 1 + 2 + 2 + 2 + 2);

        let store = SnapshotStore::new(vec!["payer".into()]);
        store.publish(Arc::new(snap));
        let rendered = store.rendered();
        let text = String::from_utf8(rendered.run(Format::Classic).plain().concat()).unwrap();
        assert!(text.contains(
            "# HELP aws_cost_daily_usd Cost in USD of the last complete UTC day (see aws_cost_data_day_timestamp_seconds), by account, service and charge type\n# TYPE aws_cost_daily_usd gauge\n\
             aws_cost_daily_usd{integration=\"payer\",account_id=\"111111111111\",account_name=\"Prod \\\"main\\\"\",aws_service=\"Amazon S3\",charge_type=\"Usage\",cost_basis=\"unblended\"} 0.5\n"
        ), "{text}");
        assert!(text.contains(
            "aws_cost_month_to_date_usd{integration=\"payer\",account_id=\"222222222222\",account_name=\"222222222222\",aws_service=\"Amazon S3\",charge_type=\"Credit\",cost_basis=\"amortized\"} -0.25\n"
        ), "{text}");
        assert!(
            text.contains(
                "aws_cost_data_day_timestamp_seconds{integration=\"payer\"} 1795305600\n"
            ),
            "{text}"
        );
        // Families without samples (forecast off, no budgets) have no header.
        assert!(!text.contains("aws_cost_budget_usd"));
        // OpenMetrics differs only by its header lines.
        let om = String::from_utf8(rendered.run(Format::OpenMetrics).plain().concat()).unwrap();
        let samples = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(samples(&om), samples(&text));
        assert!(om.contains("# TYPE aws_cost_daily_usd gauge\n# UNIT aws_cost_daily_usd usd\n"));
        // The gzip member decodes to the same text.
        let gzip = rendered.run(Format::Classic).gzip().concat();
        let mut decoded = String::new();
        flate2::read::GzDecoder::new(&gzip[..])
            .read_to_string(&mut decoded)
            .unwrap();
        assert_eq!(decoded, text);
    }

    /// Thresholds shape the costs part's series, so they are in its fingerprint (a reload that
    /// changes them serves the new ones); the default thresholds add nothing, so a file written
    /// before thresholds existed keeps its fingerprint. The forecast part ignores them.
    #[test]
    fn budget_thresholds_in_the_costs_fingerprint() {
        let mut i = integration(&[CostBasis::Unblended]);
        i.budgets = vec![Budget {
            name: "all".into(),
            monthly_usd: 10.0,
            accounts: vec![],
            services: vec![],
            cost_basis: CostBasis::Unblended,
            thresholds: Threshold::DEFAULT.to_vec(),
        }];
        let prints = |i: &Integration| {
            (
                fingerprint_of::<Costs>(i, 1),
                fingerprint_of::<Forecast>(i, 1),
            )
        };
        let (costs, forecast) = prints(&i);
        let mut printed = Fingerprint::new(Costs::NAME);
        print_rows(&mut printed, &i, 1);
        print_budgets(&mut printed, &i.budgets);
        printed.u64(0);
        assert_eq!(costs, printed.finish(), "the default adds nothing");
        i.budgets[0].thresholds = vec![Threshold {
            percent: 80.0,
            on: ThresholdOn::Actual,
        }];
        let (other, same) = prints(&i);
        assert_ne!(other, costs);
        assert_eq!(same, forecast);
        i.budgets[0].thresholds[0].percent = 90.0;
        assert_ne!(prints(&i).0, other);
        i.budgets[0].thresholds = Threshold::DEFAULT.to_vec();
        assert_eq!(prints(&i), (costs, forecast));
    }

    #[test]
    fn forecasts_and_budgets() {
        let mut i = integration(&[CostBasis::Unblended]);
        i.budgets = vec![
            Budget {
                name: "all".into(),
                monthly_usd: 10.0,
                accounts: vec![],
                services: vec![],
                cost_basis: CostBasis::Unblended,
                thresholds: Threshold::DEFAULT.to_vec(),
            },
            Budget {
                name: "s3-main".into(),
                monthly_usd: 1.0,
                accounts: vec!["111111111111".into()],
                services: vec!["Amazon S3".into()],
                cost_basis: CostBasis::Unblended,
                thresholds: vec![
                    Threshold {
                        percent: 50.0,
                        on: ThresholdOn::Actual,
                    },
                    Threshold {
                        percent: 12.5,
                        on: ThresholdOn::Forecast,
                    },
                ],
            },
        ];
        let mut costs = CostData::new(1);
        costs
            .month
            .add(["111111111111", "Amazon S3", "Usage"], &[1.75]);
        costs.month.add(["111111111111", "Tax", "Tax"], &[0.1]);
        costs
            .month
            .add(["222222222222", "Amazon S3", "Credit"], &[-0.25]);
        let costs = Arc::new(costs);
        let rest = ForecastValue {
            mean: 10.0,
            lower: Some(8.0),
            upper: Some(12.0),
        };
        let mut forecasts = Forecasts::default();
        forecasts.bases.insert(CostBasis::Unblended, Some(rest));
        forecasts
            .budgets
            .insert("s3-main".into(), Some(ForecastValue { mean: 2.0, ..rest }));
        let snap = Refreshed::new(&i, Period::new(day(23), 1))
            .with::<Costs>(costs.clone())
            .with::<Forecast>(forecasts.clone())
            .build(None);
        // Month to date: 1.75 + 0.1 - 0.25 = 1.6.
        assert_eq!(find(snap.text(&FORECAST), &[]), Some(1.6 + 10.0));
        assert_eq!(find(snap.text(&FORECAST_LOWER), &[]), Some(1.6 + 8.0));
        assert_eq!(find(snap.text(&FORECAST_UPPER), &[]), Some(1.6 + 12.0));
        assert_eq!(
            find(snap.text(&BUDGET), &[("budget", "s3-main")]),
            Some(1.0)
        );
        assert_eq!(
            find(snap.text(&BUDGET_MONTH_TO_DATE), &[("budget", "s3-main")]),
            Some(1.75)
        );
        assert_eq!(
            find(snap.text(&BUDGET_FORECAST), &[("budget", "s3-main")]),
            Some(3.75)
        );
        assert_eq!(
            find(snap.text(&BUDGET_MONTH_TO_DATE), &[("budget", "all")]),
            Some(1.6)
        );
        assert_eq!(
            find(snap.text(&BUDGET_FORECAST), &[("budget", "all")]),
            Some(11.6)
        );
        // Every threshold of every budget, in the order of the file.
        assert_eq!(
            std::str::from_utf8(snap.text(&BUDGET_THRESHOLD)).unwrap(),
            concat!(
                "aws_cost_budget_threshold_ratio{integration=\"payer\",budget=\"all\",on=\"actual\",percent=\"100\"} 1\n",
                "aws_cost_budget_threshold_ratio{integration=\"payer\",budget=\"all\",on=\"forecast\",percent=\"100\"} 1\n",
                "aws_cost_budget_threshold_ratio{integration=\"payer\",budget=\"s3-main\",on=\"actual\",percent=\"50\"} 0.5\n",
                "aws_cost_budget_threshold_ratio{integration=\"payer\",budget=\"s3-main\",on=\"forecast\",percent=\"12.5\"} 0.125\n",
            )
        );

        // The last day: nothing left to forecast, the forecast is month to date.
        forecasts.bases.insert(CostBasis::Unblended, None);
        forecasts.budgets.insert("s3-main".into(), None);
        let last = Refreshed::new(&i, Period::new(day(30), 1))
            .with::<Costs>(costs)
            .with::<Forecast>(forecasts)
            .build(None);
        assert_eq!(
            find(last.text(&BUDGET_FORECAST), &[("budget", "s3-main")]),
            Some(1.75)
        );
        assert_eq!(find(last.text(&FORECAST), &[]), Some(1.6));
        assert!(last.text(&FORECAST_LOWER).is_empty());
    }

    #[test]
    fn failed_parts_keep_the_last_encoded_series() {
        let mut i = integration(&[CostBasis::Unblended]);
        i.tags = vec!["team".into()];
        i.max_tag_series = 1;
        let mut tags = TagData {
            daily: Table::new(1),
            month: Table::new(1),
        };
        tags.daily.add(["111111111111", "team", "web"], &[2.0]);
        tags.daily.add(["111111111111", "team", ""], &[1.0]);
        tags.month.add(["111111111111", "team", "web"], &[5.0]);
        let period = Period::new(day(23), 1);
        let costs = Arc::new(CostData::new(1));
        let first = Refreshed::new(&i, period)
            .with::<Costs>(costs.clone())
            .with::<Tags>(tags)
            .build(None);
        assert_eq!(
            std::str::from_utf8(first.text(&TAG_DAILY)).unwrap(),
            "aws_cost_tag_daily_usd{integration=\"payer\",account_id=\"111111111111\",account_name=\"111111111111\",tag_key=\"team\",tag_value=\"__other__\",cost_basis=\"unblended\"} 1\n\
             aws_cost_tag_daily_usd{integration=\"payer\",account_id=\"111111111111\",account_name=\"111111111111\",tag_key=\"team\",tag_value=\"web\",cost_basis=\"unblended\"} 2\n"
        );
        let metric = [("metric", "aws_cost_tag_daily_usd")];
        assert_eq!(find(first.text(&SERIES_DROPPED), &metric), Some(1.0));
        // The tag queries fail next time: the last tag series stay, with their counts.
        let refresh = Refreshed::new(&i, period).with::<Costs>(costs);
        let second = refresh.build(Some(&first));
        assert_eq!(second.text(&TAG_DAILY), first.text(&TAG_DAILY));
        assert_eq!(
            second.text(&TAG_MONTH_TO_DATE),
            first.text(&TAG_MONTH_TO_DATE)
        );
        assert_eq!(find(second.text(&SERIES), &metric), Some(2.0));
        assert_eq!(find(second.text(&SERIES_DROPPED), &metric), Some(1.0));
        // Without a last snapshot there is nothing to keep.
        let alone = refresh.build(None);
        assert!(alone.text(&TAG_DAILY).is_empty());
    }

    #[test]
    fn families_stay_contiguous_across_integrations() {
        let store = SnapshotStore::new(vec!["a".into(), "b".into()]);
        let mut costs = CostData::new(1);
        costs.daily.add(["111111111111", "S3", "Usage"], &[1.0]);
        costs.month.add(["111111111111", "S3", "Usage"], &[1.0]);
        let costs = Arc::new(costs);
        for name in ["b", "a"] {
            let mut i = Integration::new(name, "111111111111");
            i.forecast = false;
            let refresh = Refreshed::new(&i, Period::new(day(23), 1)).with::<Costs>(costs.clone());
            store.publish(Arc::new(refresh.build(None)));
        }
        let rendered = store.rendered();
        let text = String::from_utf8(rendered.run(Format::OpenMetrics).plain().concat()).unwrap();
        let names: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split('{').next().unwrap())
            .collect();
        let mut deduped = names.clone();
        deduped.dedup();
        assert_eq!(
            deduped,
            vec![
                DAILY.name,
                MONTH_TO_DATE.name,
                DATA_DAY.name,
                ESTIMATED.name,
                ACCOUNT_INFO.name,
                SERIES.name,
                SERIES_DROPPED.name
            ]
        );
        // Config order, not publish order.
        assert!(text.find("integration=\"a\"").unwrap() < text.find("integration=\"b\"").unwrap());
    }
}
