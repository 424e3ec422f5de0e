#!/usr/bin/env bash
# Does joint fine-tuning help? Runs the README's main job (configs/pbmc_vae_flow.toml: train →
# sample the validation split's size with its labels → evaluate against the held-out cells) for
# each seed without and with a joint phase (train.joint_steps = JOINT, other joint settings at
# their defaults). Both runs of a seed share their stage-1 and stage-2 training bit for bit, so
# each pair differs only by the joint phase. Prints one line per run.
# Usage: bash benches/joint_fine_tuning.sh [OUT_DIR] [JOINT_STEPS] ["SEED SEED ..."]
set -euo pipefail
out="${1:-runs/joint}"
joint="${2:-500}"
read -r -a seeds <<<"${3:-0 1 2}"
cargo build --release --quiet
mkdir -p "$out"
bin="$out/latentlab"   # a copy, so rebuilding during the runs does not change them
cp target/release/latentlab "$bin"
for seed in "${seeds[@]}"; do
  for steps in 0 "$joint"; do
    tag="seed${seed}_joint${steps}"
    sed "s/^seed = 0$/seed = $seed/" configs/pbmc_vae_flow.toml >"$out/$tag.toml"
    printf 'joint_steps = %s\n' "$steps" >>"$out/$tag.toml"
    "$bin" run --config "$out/$tag.toml" --out "$out/$tag" --overwrite >/dev/null 2>&1
    python3 - "$out/$tag" "$seed" "$steps" <<'PY'
import json, sys
run, seed, steps = sys.argv[1:]
rows = json.load(open(f"{run}/report/metrics.json"))["rows"]
v = {m["name"]: m["value"] for m in rows[0]["metrics"]}
json.dump(v, open(f"{run}.generated_metrics.json", "w"), indent=1)
keys = ["mmd2_rbf", "energy_distance", "knn_auroc", "logistic_auroc", "label_accuracy_ratio",
        "memorization_ratio", "zero_fraction_pearson"]
print(f"seed={seed} joint_steps={int(steps):5d}  " + "  ".join(
    f"{k}={v[k]:.4f}" for k in keys if k in v))
PY
  done
done
