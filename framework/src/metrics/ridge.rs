//! Ridge regression with an intercept, solved in closed form (`(XᵀX + λI) W = XᵀY` on centred
//! data, Cholesky); for the regression baselines of per-row prediction tasks.

use super::error::MetricsError;

/// Fits ridge regression on `x_train (n, f)` → `y_train (n, g)` and predicts `x_query (m, f)`,
/// all row-major. Returns `(m, g)`.
///
/// # Errors
/// [`MetricsError::InvalidArgument`] on shape mismatches, no training rows or a negative `lambda`.
pub fn ridge_predict(
    x_train: &[f32],
    y_train: &[f32],
    n: usize,
    f: usize,
    g: usize,
    x_query: &[f32],
    lambda: f64,
) -> Result<Vec<f32>, MetricsError> {
    if n == 0
        || f == 0
        || x_train.len() != n * f
        || y_train.len() != n * g
        || !x_query.len().is_multiple_of(f)
        || lambda.is_nan()
        || lambda < 0.0
    {
        return Err(MetricsError::InvalidArgument(format!(
            "ridge: need n > 0 rows of {f} features and {g} targets, query a multiple of {f}, λ ≥ 0 (got {} / {} / {} values, λ = {lambda})",
            x_train.len(),
            y_train.len(),
            x_query.len()
        )));
    }
    let mean = |v: &[f32], width: usize| -> Vec<f64> {
        let mut m = vec![0.0f64; width];
        for row in v.chunks_exact(width) {
            for (a, &x) in m.iter_mut().zip(row) {
                *a += f64::from(x) / n as f64;
            }
        }
        m
    };
    let (mx, my) = (mean(x_train, f), mean(y_train, g));
    let mut gram = vec![0.0f64; f * f];
    let mut xty = vec![0.0f64; f * g];
    for i in 0..n {
        let xi: Vec<f64> = (0..f)
            .map(|a| f64::from(x_train[i * f + a]) - mx[a])
            .collect();
        for a in 0..f {
            for b in 0..f {
                gram[a * f + b] += xi[a] * xi[b];
            }
            for c in 0..g {
                xty[a * g + c] += xi[a] * (f64::from(y_train[i * g + c]) - my[c]);
            }
        }
    }
    for a in 0..f {
        gram[a * f + a] += lambda.max(1e-9);
    }
    // Cholesky gram = L Lᵀ.
    let mut l = vec![0.0f64; f * f];
    for a in 0..f {
        for b in 0..=a {
            let mut s = gram[a * f + b];
            for c in 0..b {
                s -= l[a * f + c] * l[b * f + c];
            }
            l[a * f + b] = if a == b {
                s.max(1e-12).sqrt()
            } else {
                s / l[b * f + b]
            };
        }
    }
    // Solve L Lᵀ W = XᵀY column by column.
    let mut w = vec![0.0f64; f * g];
    for c in 0..g {
        let mut y = vec![0.0f64; f];
        for a in 0..f {
            let mut s = xty[a * g + c];
            for b in 0..a {
                s -= l[a * f + b] * y[b];
            }
            y[a] = s / l[a * f + a];
        }
        for a in (0..f).rev() {
            let mut s = y[a];
            for b in a + 1..f {
                s -= l[b * f + a] * w[b * g + c];
            }
            w[a * g + c] = s / l[a * f + a];
        }
    }
    let m = x_query.len() / f;
    let mut out = vec![0.0f32; m * g];
    for i in 0..m {
        for c in 0..g {
            let mut v = my[c];
            for a in 0..f {
                v += (f64::from(x_query[i * f + a]) - mx[a]) * w[a * g + c];
            }
            out[i * g + c] = v as f32;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_an_exact_linear_map_with_small_lambda() {
        // y0 = 2 x0 − x1 + 3, y1 = x1
        let x = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, -1.0];
        let y: Vec<f32> = x
            .chunks(2)
            .flat_map(|r| [2.0 * r[0] - r[1] + 3.0, r[1]])
            .collect();
        let p = ridge_predict(&x, &y, 5, 2, 2, &[3.0, 2.0], 1e-9).unwrap();
        assert!(
            (p[0] - 7.0).abs() < 1e-4 && (p[1] - 2.0).abs() < 1e-4,
            "{p:?}"
        );
        // Large λ shrinks towards the mean of y.
        let p = ridge_predict(&x, &y, 5, 2, 2, &[3.0, 2.0], 1e9).unwrap();
        let mean0 = y.iter().step_by(2).sum::<f32>() / 5.0;
        assert!((p[0] - mean0).abs() < 1e-3);
        assert!(ridge_predict(&x, &y, 5, 2, 2, &[1.0], 1.0).is_err());
    }
}
