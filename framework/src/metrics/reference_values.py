"""Reference numbers for the metrics unit tests (python3 + numpy + scipy).

Run: python3 reference_values.py   — prints the constants pasted into the Rust tests.
"""
import numpy as np
from scipy import stats

x = np.array([[0.0, 0.0], [1.0, 0.5], [-1.0, 2.0], [0.3, -0.7]])
y = np.array([[2.0, 1.0], [1.5, -0.5], [3.0, 0.0]])


def sqd(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


# Median heuristic: sigma^2 = median of pooled pairwise squared distances (i < j).
p = np.vstack([x, y])
iu = np.triu_indices(len(p), 1)
sigma2 = np.median(sqd(p, p)[iu])
sigmas = [f * np.sqrt(sigma2) for f in (0.5, 1.0, 2.0)]


def k(a, b):
    d2 = sqd(a, b)
    return sum(np.exp(-d2 / (2 * s * s)) for s in sigmas)


m, n = len(x), len(y)
kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
mmd2 = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()
print(f"REF_SIGMA2 = {float(sigma2)!r}")
print(f"REF_MMD2_MULTI = {float(mmd2)!r}")

dist = lambda a, b: np.sqrt(sqd(a, b))
energy = 2 * dist(x, y).mean() - dist(x, x).mean() - dist(y, y).mean()
print(f"REF_ENERGY_2D = {float(energy)!r}")
# 1-D cross-check against scipy (ours = scipy^2)
u, v = x[:, 0], y[:, 0]
e1 = 2 * np.abs(u[:, None] - v[None]).mean() - np.abs(u[:, None] - u[None]).mean() - np.abs(v[:, None] - v[None]).mean()
assert abs(e1 - stats.energy_distance(u, v) ** 2) < 1e-12

print(f"REF_W1 = {float(stats.wasserstein_distance([0.0, 1.0, 3.0], [5.0, 6.0, 8.0, 0.5]))!r}")

# Spearman / Pearson with ties
a = [1.0, 2.0, 2.0, 3.0, 5.0, 4.0]
b = [2.0, 1.0, 4.0, 4.0, 6.0, 3.0]
print(f"REF_SPEARMAN = {float(stats.spearmanr(a, b).statistic)!r}")
print(f"REF_PEARSON = {float(stats.pearsonr(a, b).statistic)!r}")
# KS two-sample with ties
print(f"REF_KS = {float(stats.ks_2samp([1.0, 2.0, 2.0, 3.0, 7.0], [2.0, 2.0, 4.0, 5.0]).statistic)!r}")
# AUROC with ties (Mann-Whitney U / (n_pos n_neg)), positives = label 1
scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4, 0.9])
labels = np.array([0, 0, 1, 1, 1, 0, 1])
U = stats.mannwhitneyu(scores[labels == 1], scores[labels == 0]).statistic
print(f"REF_AUROC = {float(U / (labels.sum() * (1 - labels).sum()))!r}")
