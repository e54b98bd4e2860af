//! Cost figures aggregated by label values, as a refresh parses them: every group a Cost
//! Explorer page returns is added straight into a [`Table`], and nothing else of the page is
//! kept. Label values are interned, so a table holds each distinct account, service or charge
//! type once, and a key is a few integers.

use std::sync::Arc;

use rustc_hash::FxHashMap;

/// Interned strings: each distinct value once, addressed by a small integer.
#[derive(Debug, Clone, Default)]
pub struct Strings {
    values: Vec<Arc<str>>,
    index: FxHashMap<Arc<str>, u32>,
}

impl Strings {
    /// The id of `value`, adding it when new.
    pub fn intern(&mut self, value: &str) -> u32 {
        if let Some(id) = self.index.get(value) {
            return *id;
        }
        let id = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        let shared: Arc<str> = Arc::from(value);
        self.values.push(shared.clone());
        self.index.insert(shared, id);
        id
    }

    /// The value of an id ("" for an unknown id).
    pub fn get(&self, id: u32) -> &str {
        self.values.get(id as usize).map_or("", |v| v)
    }

    /// Each id's rank in the order of the values: comparing ranks orders as the strings do.
    pub fn ranks(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = (0..self.values.len() as u32).collect();
        ids.sort_unstable_by(|a, b| self.get(*a).cmp(self.get(*b)));
        let mut ranks = vec![0; ids.len()];
        for (rank, id) in ids.into_iter().enumerate() {
            ranks[id as usize] = rank as u32;
        }
        ranks
    }
}

/// Amounts (one per cost basis, in the order requested) per key of `K` label values. A key
/// added twice sums.
#[derive(Debug, Clone)]
pub struct Table<const K: usize> {
    strings: Strings,
    bases: usize,
    index: FxHashMap<[u32; K], u32>,
    keys: Vec<[u32; K]>,
    amounts: Vec<f64>,
}

impl<const K: usize> Table<K> {
    /// An empty table with `bases` amounts per key.
    pub fn new(bases: usize) -> Self {
        Self {
            strings: Strings::default(),
            bases,
            index: FxHashMap::default(),
            keys: Vec::new(),
            amounts: Vec::new(),
        }
    }

    /// Amounts per key.
    pub fn bases(&self) -> usize {
        self.bases
    }

    /// Adds `amounts` (one per basis; missing ones count as zero) to `key`.
    pub fn add(&mut self, key: [&str; K], amounts: &[f64]) {
        let ids = key.map(|value| self.strings.intern(value));
        let row = match self.index.get(&ids) {
            Some(row) => *row as usize,
            None => {
                let row = self.keys.len();
                self.index
                    .insert(ids, u32::try_from(row).unwrap_or(u32::MAX));
                self.keys.push(ids);
                self.amounts.extend(std::iter::repeat_n(0.0, self.bases));
                row
            }
        };
        let sums = &mut self.amounts[row * self.bases..(row + 1) * self.bases];
        for (sum, amount) in sums.iter_mut().zip(amounts) {
            *sum += amount;
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The label values of row `row`.
    pub fn key(&self, row: usize) -> [&str; K] {
        self.keys[row].map(|id| self.strings.get(id))
    }

    /// The amounts of row `row`, one per basis.
    pub fn amounts(&self, row: usize) -> &[f64] {
        &self.amounts[row * self.bases..(row + 1) * self.bases]
    }

    /// Every row: label values and amounts, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = ([&str; K], &[f64])> + '_ {
        (0..self.len()).map(|row| (self.key(row), self.amounts(row)))
    }

    /// Row numbers in the order of their label values (the exposition order).
    pub fn sorted(&self) -> Vec<usize> {
        let ranks = self.strings.ranks();
        // The ranked keys computed once, beside their rows, so that comparing is comparing
        // integers in one array.
        let mut rows: Vec<([u32; K], u32)> = self
            .keys
            .iter()
            .zip(0u32..)
            .map(|(key, row)| (key.map(|id| ranks[id as usize]), row))
            .collect();
        rows.sort_unstable();
        rows.into_iter().map(|(_, row)| row as usize).collect()
    }

    /// The sum of one basis over the rows `keep` selects.
    pub fn total(&self, basis: usize, keep: impl Fn(&[&str; K]) -> bool) -> f64 {
        self.iter()
            .filter(|(key, _)| keep(key))
            .map(|(_, amounts)| amounts.get(basis).copied().unwrap_or_default())
            .sum()
    }

    /// Keeps the `max` rows with the largest absolute amount in the first basis (ties by label
    /// values) and sums the rest into rows whose labels at `other_at` are `other`, so that
    /// totals per the remaining labels never change. Returns the new table and how many rows
    /// folded.
    pub fn fold(&self, max: usize, other_at: &[usize], other: &str) -> (Table<K>, usize) {
        if self.len() <= max {
            return (self.clone(), 0);
        }
        let magnitude = |row: usize| self.amounts(row).first().copied().unwrap_or_default().abs();
        let larger_first = |a: &usize, b: &usize| {
            magnitude(*b)
                .total_cmp(&magnitude(*a))
                .then_with(|| self.key(*a).cmp(&self.key(*b)))
        };
        // Only the kept rows need an order: pick them in linear time, sort just those, and fold
        // the rest in row order.
        let mut ranked: Vec<usize> = (0..self.len()).collect();
        ranked.select_nth_unstable_by(max, larger_first);
        let (top, rest) = ranked.split_at_mut(max);
        top.sort_unstable_by(larger_first);
        rest.sort_unstable();
        let mut kept = Table::new(self.bases);
        for row in top.iter() {
            kept.add(self.key(*row), self.amounts(*row));
        }
        for row in rest.iter() {
            let mut key = self.key(*row);
            for at in other_at {
                if let Some(slot) = key.get_mut(*at) {
                    *slot = other;
                }
            }
            kept.add(key, self.amounts(*row));
        }
        (kept, ranked.len() - max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_intern_once() {
        let mut strings = Strings::default();
        let a = strings.intern("a");
        let b = strings.intern("b");
        assert_eq!(strings.intern("a"), a);
        assert_ne!(a, b);
        assert_eq!(strings.get(b), "b");
        assert_eq!(strings.get(99), "");
    }

    #[test]
    fn rows_sum_and_sort() {
        let mut table = Table::<2>::new(2);
        table.add(["b", "x"], &[1.0, 2.0]);
        table.add(["a", "y"], &[0.5, 0.25]);
        table.add(["b", "x"], &[1.5, 1.0]);
        assert_eq!(table.len(), 2);
        let sorted: Vec<([&str; 2], Vec<f64>)> = table
            .sorted()
            .into_iter()
            .map(|row| (table.key(row), table.amounts(row).to_vec()))
            .collect();
        assert_eq!(
            sorted,
            vec![(["a", "y"], vec![0.5, 0.25]), (["b", "x"], vec![2.5, 3.0])]
        );
        assert_eq!(table.total(1, |key| key[0] == "b"), 3.0);
    }

    #[test]
    fn fold_keeps_the_largest_and_sums_the_rest() {
        let mut table = Table::<3>::new(2);
        for (id, value) in [
            ("a", 5.0),
            ("b", -7.0),
            ("c", 1.0),
            ("d", 0.5),
            ("e", -0.25),
        ] {
            table.add(["acct", "svc", id], &[value, value * 2.0]);
        }
        table.add(["acct2", "svc", "f"], &[0.1, 0.2]);
        let (kept, folded) = table.fold(2, &[2], "__other__");
        assert_eq!(folded, 4);
        let value = |key: [&str; 3]| {
            kept.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, amounts)| amounts.to_vec())
        };
        assert_eq!(value(["acct", "svc", "b"]), Some(vec![-7.0, -14.0]));
        assert_eq!(value(["acct", "svc", "a"]), Some(vec![5.0, 10.0]));
        assert_eq!(value(["acct", "svc", "__other__"]), Some(vec![1.25, 2.5]));
        assert_eq!(value(["acct2", "svc", "__other__"]), Some(vec![0.1, 0.2]));
        assert_eq!(kept.len(), 4);
        assert!((kept.total(0, |_| true) - table.total(0, |_| true)).abs() < 1e-12);
        let (same, none) = table.fold(10, &[2], "__other__");
        assert_eq!((same.len(), none), (table.len(), 0));
    }
}
