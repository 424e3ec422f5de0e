#!/usr/bin/env bash
# Few-step sampling quality on the PBMC validation split: trains the rectified-flow and DDIM
# configs once, then samples the validation split's size at 1, 2, 4, 8, 16 and 50 steps and
# evaluates each against the held-out cells (the flow also with the Heun solver at 2, 4, 8 steps,
# switched at sampling time). Prints one line per (config, solver, steps): MMD² (RBF, PCA) and
# kNN AUROC. Usage: bash benches/few_step_quality.sh [OUT_DIR]
set -euo pipefail
out="${1:-runs/few_step}"
cargo build --release --quiet
bin=target/release/latentlab
for config in pbmc_vae_flow pbmc_vae_ddim; do
  "$bin" train --config "configs/$config.toml" --out "$out/$config/run" --overwrite >/dev/null 2>&1
  n=$(python3 -c "import json;print(json.load(open('$out/$config/run/manifest.json'))['n_validation'])")
  settings="default:1 default:2 default:4 default:8 default:16 default:50"
  if [ "$config" = pbmc_vae_flow ]; then settings="$settings heun:2 heun:4 heun:8"; fi
  for setting in $settings; do
    solver="${setting%%:*}"; steps="${setting##*:}"; tag="${solver}_$steps"
    option=()
    if [ "$solver" != default ]; then option=(--sampler-option "solver=$solver"); fi
    "$bin" sample --run "$out/$config/run" --n "$n" --steps "$steps" --seed 0 "${option[@]}" \
      --out "$out/$config/$tag.h5ad" >/dev/null 2>&1
    "$bin" evaluate --run "$out/$config/run" --generated "$out/$config/$tag.h5ad" \
      --out "$out/$config/report_$tag" >/dev/null 2>&1
    python3 - "$out/$config/report_$tag/metrics.json" "$config" "$solver" "$steps" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
vals = {x["name"]: x["value"] for x in rows[0]["metrics"]}
print(f"{sys.argv[2]:14s} {sys.argv[3]:8s} steps={int(sys.argv[4]):3d}  mmd2_rbf={vals['mmd2_rbf']:.5f}  knn_auroc={vals['knn_auroc']:.3f}")
PY
  done
done
