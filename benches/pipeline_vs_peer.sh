#!/usr/bin/env bash
# The README's job against the PyTorch peer (`peer_ldm.py`), side by side on this machine: the same
# two-stage model shapes (VAE 765 → 256 → 128 → 16, rectified-flow MLP denoiser width 256 with 2
# adaLN blocks, class-conditional on bulk_labels), the same steps and batch size, the same
# training cells (the run's own split), each side's own defaults otherwise (both use every core).
# Times training, sampling 10,000 cells at 50 steps, and scores each side's 10,000 cells with
# `latentlab evaluate` against the same held-out validation cells.
# Usage: PEER_PYTHON=<venv>/bin/python bash benches/pipeline_vs_peer.sh [OUT_DIR] [PEER_DIR]
set -euo pipefail
out="${1:-runs/vs_peer}"
peer_dir="${2:-../shared/peer}"
python="${PEER_PYTHON:?set PEER_PYTHON to the python of bash ../shared/peer/setup.sh}"
mkdir -p "$out"
cargo build --release --quiet --bin latentlab
bin="$out/latentlab"
cp target/release/latentlab "$bin"
# Milliseconds of wall time of a command, its output in $log.
millis() { local t0 t1; t0=$(date +%s%N); "$@" >"$log" 2>&1; t1=$(date +%s%N); echo $(((t1 - t0) / 1000000)); }

log="$out/latentlab_train.log"
ours_train=$(millis "$bin" train --config configs/pbmc_vae_flow.toml --out "$out/latentlab_run" --overwrite)
"$python" - "$out/latentlab_run/split.json" data/pbmc68k_reduced/train.h5ad "$out/peer_train.h5ad" <<'PY'
import json, sys
import anndata as ad
split = json.load(open(sys.argv[1]))
a = ad.read_h5ad(sys.argv[2])
a[split["train"]].copy().write_h5ad(sys.argv[3])
PY
log="$out/peer_train.log"
peer_train=$(millis env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$python" "$peer_dir/peer_ldm.py" train \
  --train "$out/peer_train.h5ad" --out "$out/peer_run" --label bulk_labels \
  --vae-steps 2000 --flow-steps 1500 --latent 16 --hidden1 256 --hidden2 128 \
  --width 256 --blocks 2 --batch 128 --seed 0)

log="$out/latentlab_sample.log"
ours_sample=$(millis "$bin" sample --run "$out/latentlab_run" --n 10000 --steps 50 --out "$out/latentlab_10k.h5ad")
log="$out/peer_sample.log"
peer_sample=$(millis env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$python" "$peer_dir/peer_ldm.py" sample \
  --run "$out/peer_run" --n 10000 --steps 50 --out "$out/peer_10k.h5ad")

for side in latentlab peer; do
  "$bin" evaluate --run "$out/latentlab_run" --generated "$out/${side}_10k.h5ad" \
    --out "$out/${side}_report" >"$out/${side}_evaluate.log" 2>&1
done

"$python" - "$out" "$ours_train" "$peer_train" "$ours_sample" "$peer_sample" <<'PY'
import json, sys
out = sys.argv[1]
ours_train, peer_train, ours_sample, peer_sample = (int(a) / 1000 for a in sys.argv[2:6])
print("| stage (wall seconds) | latentlab | PyTorch peer | peer ÷ latentlab |")
print("|---|---|---|---|")
print(f"| train: 2,000 VAE + 1,500 denoiser steps, batch 128 | {ours_train:.1f} | {peer_train:.1f} | {peer_train / ours_train:.2f} |")
print(f"| sample 10,000 cells: 50 steps + decode | {ours_sample:.1f} | {peer_sample:.1f} | {peer_sample / ours_sample:.2f} |")
keys = ["mmd2_rbf", "energy_distance", "gene_mean_pearson", "gene_variance_pearson",
        "gene_correlation_similarity", "label_accuracy", "knn_auroc", "logistic_auroc"]
def values(row):
    return {m["name"]: m["value"] for m in row["metrics"]}
print()
print("| cells vs the 112 held-out | n | " + " | ".join(keys) + " |")
print("|---" * (len(keys) + 2) + "|")
for side in ["latentlab", "peer"]:
    rows = json.load(open(f"{out}/{side}_report/metrics.json"))["rows"]
    picked = [r for r in rows if r["name"] == "generated"]
    if side == "latentlab":
        picked += [r for r in rows if r["name"].startswith("control")]
    for r in picked:
        v = values(r)
        name = f"{side} generated" if r["name"] == "generated" else r["name"]
        print(f"| {name} | {r['n']} | " + " | ".join(
            "—" if v.get(k) is None else f"{v[k]:.4g}" for k in keys) + " |")
PY
