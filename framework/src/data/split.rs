//! Seeded train/validation splits and minibatch index iteration.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Split cell indices into `(train, validation)`, stratified by `labels`.
///
/// Within every label (missing `-1` is its own group) `round(fraction_validation * n)`
/// cells go to validation, but at least one cell of every label stays in train. Both
/// outputs are sorted. The result depends only on `labels`, the fraction and `seed`.
pub fn stratified_split(
    labels: &[i32],
    fraction_validation: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let frac = if fraction_validation.is_finite() {
        fraction_validation.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mut groups: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        groups.entry(l).or_default().push(i);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut train = Vec::with_capacity(labels.len());
    let mut val = Vec::new();
    for (_, mut idx) in groups {
        idx.shuffle(&mut rng);
        let n = idx.len();
        let n_val = ((frac * n as f64).round() as usize).min(n.saturating_sub(1));
        val.extend_from_slice(&idx[..n_val]);
        train.extend_from_slice(&idx[n_val..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

/// Shuffled minibatches of row indices over `0..n` (or over a given index set) for one
/// epoch, seeded and deterministic.
///
/// ```
/// use latentlab_framework::data::split::MinibatchIter;
/// let batches: Vec<Vec<usize>> = MinibatchIter::new(10, 4, 7, false).collect();
/// assert_eq!(batches.len(), 3); // 4 + 4 + 2
/// ```
#[derive(Debug, Clone)]
pub struct MinibatchIter {
    order: Vec<usize>,
    batch_size: usize,
    drop_last: bool,
    pos: usize,
}

impl MinibatchIter {
    /// Batches over rows `0..n`, shuffled with `seed`. `batch_size` 0 is treated as 1.
    pub fn new(n: usize, batch_size: usize, seed: u64, drop_last: bool) -> Self {
        Self::over((0..n).collect(), batch_size, seed, drop_last)
    }

    /// Batches over the given row indices (e.g. the train split), shuffled with `seed`.
    pub fn over(mut rows: Vec<usize>, batch_size: usize, seed: u64, drop_last: bool) -> Self {
        rows.shuffle(&mut StdRng::seed_from_u64(seed));
        MinibatchIter {
            order: rows,
            batch_size: batch_size.max(1),
            drop_last,
            pos: 0,
        }
    }

    /// Batches for epoch `epoch` of a run seeded with `seed` (a different shuffle per epoch).
    pub fn for_epoch(
        rows: Vec<usize>,
        batch_size: usize,
        seed: u64,
        epoch: u64,
        drop_last: bool,
    ) -> Self {
        let mixed = seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self::over(rows, batch_size, mixed, drop_last)
    }

    /// Batches with rows in the given order (no shuffling), e.g. for evaluation.
    pub fn sequential(rows: Vec<usize>, batch_size: usize) -> Self {
        MinibatchIter {
            order: rows,
            batch_size: batch_size.max(1),
            drop_last: false,
            pos: 0,
        }
    }

    /// Number of batches this iterator yields in total.
    pub fn num_batches(&self) -> usize {
        let n = self.order.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }
}

impl Iterator for MinibatchIter {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        let rest = self.order.len() - self.pos;
        if rest == 0 || (self.drop_last && rest < self.batch_size) {
            return None;
        }
        let end = self.pos + rest.min(self.batch_size);
        let batch = self.order[self.pos..end].to_vec();
        self.pos = end;
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_proportions_and_determinism() {
        // Label 0: 100 cells, label 1: 10, label 2: 1, missing: 5.
        let mut labels = vec![0; 100];
        labels.extend(vec![1; 10]);
        labels.push(2);
        labels.extend(vec![-1; 5]);
        let (tr, va) = stratified_split(&labels, 0.2, 42);
        assert_eq!(tr.len() + va.len(), labels.len());
        let count = |v: &[usize], l: i32| v.iter().filter(|&&i| labels[i] == l).count();
        assert_eq!(count(&va, 0), 20);
        assert_eq!(count(&va, 1), 2);
        assert_eq!(count(&va, 2), 0);
        assert_eq!(count(&tr, 2), 1);
        assert_eq!(count(&va, -1), 1);
        let mut all: Vec<usize> = tr.iter().chain(&va).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..labels.len()).collect::<Vec<_>>());
        assert_eq!(stratified_split(&labels, 0.2, 42), (tr.clone(), va.clone()));
        assert_ne!(stratified_split(&labels, 0.2, 43).1, va);
        // Every label keeps a train cell even with fraction 1.
        let (tr, _) = stratified_split(&labels, 1.0, 0);
        for l in [-1, 0, 1, 2] {
            assert_eq!(count(&tr, l), 1);
        }
    }

    #[test]
    fn minibatches_cover_rows() {
        let b: Vec<Vec<usize>> = MinibatchIter::new(10, 4, 1, false).collect();
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        let mut all: Vec<usize> = b.concat();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        let it = MinibatchIter::new(10, 4, 1, true);
        assert_eq!(it.num_batches(), 2);
        assert_eq!(it.count(), 2);
        let a: Vec<_> = MinibatchIter::for_epoch((0..50).collect(), 8, 3, 0, false).collect();
        let a2: Vec<_> = MinibatchIter::for_epoch((0..50).collect(), 8, 3, 0, false).collect();
        let c: Vec<_> = MinibatchIter::for_epoch((0..50).collect(), 8, 3, 1, false).collect();
        assert_eq!(a, a2);
        assert_ne!(a, c);
        assert_eq!(
            MinibatchIter::sequential(vec![5, 6, 7], 2).collect::<Vec<_>>(),
            vec![vec![5, 6], vec![7]]
        );
    }
}
