//! In-memory expression matrices: dense row-major or compressed sparse rows (CSR), f32 values.

/// A compressed-sparse-row matrix (`rows` cells × `cols` genes).
///
/// Row `i` holds the entries `indptr[i]..indptr[i + 1]` of `indices` (column ids) and `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct CsrMatrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row pointers, length `rows + 1`, starting at 0, non-decreasing, ending at `nnz`.
    pub indptr: Vec<usize>,
    /// Column index of every stored value.
    pub indices: Vec<u32>,
    /// Stored values.
    pub data: Vec<f32>,
}

impl CsrMatrix {
    /// An all-zero `rows × cols` matrix.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        CsrMatrix {
            rows,
            cols,
            indptr: vec![0; rows + 1],
            indices: Vec::new(),
            data: Vec::new(),
        }
    }

    /// Check the structural invariants (lengths, monotone `indptr`, column ids in range).
    ///
    /// # Errors
    /// A one-line description of the first violated invariant.
    pub fn validate(&self) -> Result<(), String> {
        if self.indptr.len() != self.rows + 1 {
            return Err(format!(
                "indptr has {} entries, expected rows + 1 = {}",
                self.indptr.len(),
                self.rows + 1
            ));
        }
        if self.indices.len() != self.data.len() {
            return Err(format!(
                "indices has {} entries but data has {}",
                self.indices.len(),
                self.data.len()
            ));
        }
        if self.indptr.first().copied() != Some(0) {
            return Err("indptr does not start at 0".into());
        }
        if let Some(i) = self.indptr.windows(2).position(|w| w[1] < w[0]) {
            return Err(format!("indptr decreases at row {i}"));
        }
        if self.indptr.last().copied() != Some(self.data.len()) {
            return Err(format!(
                "indptr ends at {} but {} values are stored",
                self.indptr.last().copied().unwrap_or(0),
                self.data.len()
            ));
        }
        if let Some(&c) = self.indices.iter().find(|&&c| c as usize >= self.cols) {
            return Err(format!(
                "column index {c} out of range for {} columns",
                self.cols
            ));
        }
        Ok(())
    }

    /// Build a CSR matrix from a dense row-major buffer, storing only non-zero values.
    pub fn from_dense(rows: usize, cols: usize, data: &[f32]) -> Self {
        let mut out = CsrMatrix::zeros(rows, 0);
        out.cols = cols;
        out.indptr.clear();
        out.indptr.push(0);
        for r in 0..rows {
            for (c, &v) in data[r * cols..(r + 1) * cols].iter().enumerate() {
                if v != 0.0 {
                    out.indices.push(c as u32);
                    out.data.push(v);
                }
            }
            out.indptr.push(out.data.len());
        }
        out
    }

    /// Transpose-convert a CSC matrix (`indptr` over columns, `indices` = row ids) to CSR.
    ///
    /// The caller must have validated the CSC arrays (see [`CsrMatrix::validate`] applied to
    /// the transposed shape); column ids in every output row come out sorted.
    pub fn from_csc(
        rows: usize,
        cols: usize,
        indptr: &[usize],
        indices: &[u32],
        data: &[f32],
    ) -> Self {
        let mut counts = vec![0usize; rows + 1];
        for &r in indices {
            counts[r as usize + 1] += 1;
        }
        for i in 0..rows {
            counts[i + 1] += counts[i];
        }
        let indptr_out = counts.clone();
        let mut next = counts;
        let mut out_indices = vec![0u32; data.len()];
        let mut out_data = vec![0f32; data.len()];
        for c in 0..cols {
            for k in indptr[c]..indptr[c + 1] {
                let r = indices[k] as usize;
                let dst = next[r];
                out_indices[dst] = c as u32;
                out_data[dst] = data[k];
                next[r] += 1;
            }
        }
        CsrMatrix {
            rows,
            cols,
            indptr: indptr_out,
            indices: out_indices,
            data: out_data,
        }
    }

    /// Number of stored values.
    pub fn nnz(&self) -> usize {
        self.data.len()
    }

    /// Column ids and values of row `i`.
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[i], self.indptr[i + 1]);
        (&self.indices[a..b], &self.data[a..b])
    }
}

/// An expression matrix, cells as rows and genes (features) as columns.
#[derive(Debug, Clone, PartialEq)]
pub enum Matrix {
    /// Dense row-major storage.
    Dense {
        /// Number of rows.
        rows: usize,
        /// Number of columns.
        cols: usize,
        /// `rows * cols` values, row-major.
        data: Vec<f32>,
    },
    /// Compressed sparse rows.
    Csr(CsrMatrix),
}

impl Matrix {
    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Matrix::Dense { rows, cols, .. } => (*rows, *cols),
            Matrix::Csr(m) => (m.rows, m.cols),
        }
    }

    /// Number of stored values (`rows * cols` for dense).
    pub fn nnz(&self) -> usize {
        match self {
            Matrix::Dense { data, .. } => data.len(),
            Matrix::Csr(m) => m.nnz(),
        }
    }

    /// Fraction of entries that are non-zero (computed from the values, also for dense).
    pub fn density(&self) -> f64 {
        let (r, c) = self.shape();
        if r * c == 0 {
            return 0.0;
        }
        let nz = match self {
            Matrix::Dense { data, .. } => data.iter().filter(|v| **v != 0.0).count(),
            Matrix::Csr(m) => m.data.iter().filter(|v| **v != 0.0).count(),
        };
        nz as f64 / (r * c) as f64
    }

    /// Write row `i` densely into `out` (length must equal the column count).
    ///
    /// Panics (programming error, never data-dependent) if `i` or `out.len()` is out of range.
    pub fn row_into(&self, i: usize, out: &mut [f32]) {
        match self {
            Matrix::Dense { cols, data, .. } => {
                out.copy_from_slice(&data[i * cols..(i + 1) * cols]);
            }
            Matrix::Csr(m) => {
                assert_eq!(out.len(), m.cols, "row_into: output length != column count");
                out.fill(0.0);
                let (idx, val) = m.row(i);
                for (&c, &v) in idx.iter().zip(val) {
                    out[c as usize] += v;
                }
            }
        }
    }

    /// The whole matrix as a dense row-major buffer.
    pub fn to_dense(&self) -> Vec<f32> {
        match self {
            Matrix::Dense { data, .. } => data.clone(),
            Matrix::Csr(m) => {
                let mut out = vec![0.0; m.rows * m.cols];
                for r in 0..m.rows {
                    self.row_into(r, &mut out[r * m.cols..(r + 1) * m.cols]);
                }
                out
            }
        }
    }

    /// The same values stored as CSR (a copy).
    pub fn to_csr(&self) -> CsrMatrix {
        match self {
            Matrix::Dense { rows, cols, data } => CsrMatrix::from_dense(*rows, *cols, data),
            Matrix::Csr(m) => m.clone(),
        }
    }

    /// A new matrix with the given rows, in the given order (repeats allowed).
    pub fn select_rows(&self, rows: &[usize]) -> Matrix {
        match self {
            Matrix::Dense { cols, .. } => Matrix::Dense {
                rows: rows.len(),
                cols: *cols,
                data: self.gather_rows_dense(rows),
            },
            Matrix::Csr(m) => {
                let mut out = CsrMatrix::zeros(0, m.cols);
                out.rows = rows.len();
                for &r in rows {
                    let (idx, val) = m.row(r);
                    out.indices.extend_from_slice(idx);
                    out.data.extend_from_slice(val);
                    out.indptr.push(out.data.len());
                }
                Matrix::Csr(out)
            }
        }
    }

    /// A new matrix with the given columns, in the given order (no repeats for CSR).
    pub fn select_cols(&self, cols: &[usize]) -> Matrix {
        match self {
            Matrix::Dense {
                rows,
                cols: ncols,
                data,
            } => {
                let mut out = Vec::with_capacity(rows * cols.len());
                for r in 0..*rows {
                    let row = &data[r * ncols..(r + 1) * ncols];
                    out.extend(cols.iter().map(|&c| row[c]));
                }
                Matrix::Dense {
                    rows: *rows,
                    cols: cols.len(),
                    data: out,
                }
            }
            Matrix::Csr(m) => {
                let mut map = vec![u32::MAX; m.cols];
                for (new, &old) in cols.iter().enumerate() {
                    map[old] = new as u32;
                }
                let mut out = CsrMatrix::zeros(0, cols.len());
                out.rows = m.rows;
                let mut row_buf: Vec<(u32, f32)> = Vec::new();
                for r in 0..m.rows {
                    row_buf.clear();
                    let (idx, val) = m.row(r);
                    for (&c, &v) in idx.iter().zip(val) {
                        let n = map[c as usize];
                        if n != u32::MAX {
                            row_buf.push((n, v));
                        }
                    }
                    row_buf.sort_unstable_by_key(|e| e.0);
                    for &(c, v) in &row_buf {
                        out.indices.push(c);
                        out.data.push(v);
                    }
                    out.indptr.push(out.data.len());
                }
                Matrix::Csr(out)
            }
        }
    }

    /// The given rows as one dense row-major buffer of `rows.len() * cols` values
    /// (the minibatch gather used by training).
    pub fn gather_rows_dense(&self, rows: &[usize]) -> Vec<f32> {
        let cols = self.shape().1;
        let mut out = vec![0.0; rows.len() * cols];
        for (k, &r) in rows.iter().enumerate() {
            self.row_into(r, &mut out[k * cols..(k + 1) * cols]);
        }
        out
    }

    /// Whether every stored value is finite (no NaN, no ±inf).
    pub fn is_finite(&self) -> bool {
        self.values().iter().all(|v| v.is_finite())
    }

    /// Number of stored non-finite values (NaN or ±inf).
    pub fn count_non_finite(&self) -> usize {
        self.values().iter().filter(|v| !v.is_finite()).count()
    }

    /// Whether the matrix looks like raw counts: every stored value is a non-negative
    /// integer (within 1e-3). An all-zero matrix counts as counts.
    pub fn looks_like_counts(&self) -> bool {
        self.values()
            .iter()
            .all(|&v| v.is_finite() && v >= 0.0 && (v - v.round()).abs() < 1e-3)
    }

    /// Apply `f` to every stored value in place.
    ///
    /// For CSR only the stored values are mapped: implicit zeros stay zero, so `f` should
    /// satisfy `f(0) == 0` (true for scaling, `log1p`, clipping) unless that is intended.
    pub fn map_values(&mut self, f: impl Fn(f32) -> f32) {
        for v in self.values_mut() {
            *v = f(*v);
        }
    }

    /// Sum of every row.
    pub fn row_sums(&self) -> Vec<f32> {
        let (rows, cols) = self.shape();
        match self {
            Matrix::Dense { data, .. } => (0..rows)
                .map(|r| data[r * cols..(r + 1) * cols].iter().sum())
                .collect(),
            Matrix::Csr(m) => (0..rows).map(|r| m.row(r).1.iter().sum()).collect(),
        }
    }

    /// Multiply row `i` by `factors[i]` in place.
    pub fn scale_rows(&mut self, factors: &[f32]) {
        match self {
            Matrix::Dense { cols, data, .. } => {
                for (row, &f) in data.chunks_mut((*cols).max(1)).zip(factors) {
                    row.iter_mut().for_each(|v| *v *= f);
                }
            }
            Matrix::Csr(m) => {
                for (r, &f) in factors.iter().enumerate().take(m.rows) {
                    let (a, b) = (m.indptr[r], m.indptr[r + 1]);
                    m.data[a..b].iter_mut().for_each(|v| *v *= f);
                }
            }
        }
    }

    /// The stored values.
    pub fn values(&self) -> &[f32] {
        match self {
            Matrix::Dense { data, .. } => data,
            Matrix::Csr(m) => &m.data,
        }
    }

    /// The stored values, mutable.
    pub fn values_mut(&mut self) -> &mut [f32] {
        match self {
            Matrix::Dense { data, .. } => data,
            Matrix::Csr(m) => &mut m.data,
        }
    }

    /// `"dense"` or `"csr"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Matrix::Dense { .. } => "dense",
            Matrix::Csr(_) => "csr",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Matrix {
        // [[1, 0, 2], [0, 0, 3]]
        Matrix::Csr(CsrMatrix {
            rows: 2,
            cols: 3,
            indptr: vec![0, 2, 3],
            indices: vec![0, 2, 2],
            data: vec![1.0, 2.0, 3.0],
        })
    }

    #[test]
    fn csr_dense_agree() {
        let m = example();
        assert_eq!(m.to_dense(), vec![1.0, 0.0, 2.0, 0.0, 0.0, 3.0]);
        let d = Matrix::Dense {
            rows: 2,
            cols: 3,
            data: m.to_dense(),
        };
        assert_eq!(Matrix::Csr(d.to_csr()), m);
        assert_eq!(m.shape(), (2, 3));
        assert_eq!(m.nnz(), 3);
        for sel in [vec![1usize, 0, 1], vec![]] {
            assert_eq!(
                m.select_rows(&sel).to_dense(),
                d.select_rows(&sel).to_dense()
            );
            assert_eq!(m.gather_rows_dense(&sel), d.gather_rows_dense(&sel));
        }
        let cols = [2usize, 0];
        assert_eq!(m.select_cols(&cols).to_dense(), vec![2.0, 1.0, 3.0, 0.0]);
        assert_eq!(d.select_cols(&cols).to_dense(), vec![2.0, 1.0, 3.0, 0.0]);
        assert!(m.select_cols(&cols).to_csr().validate().is_ok());
    }

    #[test]
    fn csc_to_csr() {
        // same matrix as CSC: columns [0]: row0=1, [1]: -, [2]: row0=2,row1=3
        let csr = CsrMatrix::from_csc(2, 3, &[0, 1, 1, 3], &[0, 0, 1], &[1.0, 2.0, 3.0]);
        assert_eq!(Matrix::Csr(csr), example());
    }

    #[test]
    fn checks() {
        let mut m = example();
        assert!(m.is_finite() && m.looks_like_counts());
        m.map_values(|v| v + 0.5);
        assert!(!m.looks_like_counts());
        m.values_mut()[0] = f32::NAN;
        assert!(!m.is_finite());
        assert_eq!(m.count_non_finite(), 1);
        let bad = CsrMatrix {
            rows: 1,
            cols: 1,
            indptr: vec![0, 1],
            indices: vec![4],
            data: vec![1.0],
        };
        assert!(bad.validate().is_err());
    }
}
