#!/usr/bin/env bash
# Streaming data (issues 4 and 9): writes a synthetic CSR count matrix (not committed), streams it
# once (cells/s, peak RSS), then trains on it with [data.streaming] (`latentlab train`, peak RSS
# measured by /usr/bin/time) and, unless SKIP_RUN=1, runs the whole job (train → sample → evaluate).
# Usage: bash benches/streaming.sh [OUT_DIR] [CELLS] [GENES]
#   e.g. bash benches/streaming.sh runs/stream 200000 2000   # the issue-4 read bench
#        bash benches/streaming.sh runs/stream 1000000 2000  # the issue-9 1M-cell training bench
set -euo pipefail
out="${1:-runs/stream}"
cells="${2:-200000}"
genes="${3:-2000}"
mkdir -p "$out"
cargo build --release --quiet --bench streaming_data --bin latentlab
bin="$out/latentlab"   # copies, so rebuilding during the runs does not change them
cp target/release/latentlab "$bin"
helper="$(ls -t target/release/deps/streaming_data-* | grep -v '\.d$' | head -1)"
cp "$helper" "$out/streaming_data"
file="$out/synthetic_${cells}x${genes}.h5ad"
if [ ! -f "$file" ]; then
  "$out/streaming_data" write "$file" "$cells" "$genes"
fi
ls -l "$file"
for chunk in 1024 4096 16384; do
  "$out/streaming_data" read "$file" "$chunk"
done
cat >"$out/config.toml" <<TOML
seed = 0
[data]
path = "$file"
validation_fraction = 0.05
label_key = "cell_type"
[data.preprocess]
normalize_total = 1e4
log1p = true
highly_variable_genes = 1000
[data.streaming]
chunk_cells = 4096
shuffle_chunks = 8
max_validation_cells = 10000
[autoencoder]
type = "vae"
latent_dim = 16
hidden = [256, 128]
[denoiser]
type = "mlp"
width = 256
blocks = 2
[sampler]
type = "rectified_flow"
steps = 20
[conditioner]
type = "class_embedding"
keys = ["cell_type"]
dim = 32
injection = "adaln"
drop_prob = 0.1
[train]
autoencoder_steps = ${AE_STEPS:-1000}
denoiser_steps = ${DN_STEPS:-1000}
batch_size = 256
validate_every = 500
TOML
/usr/bin/time -f '{"train_peak_rss_kib": %M, "train_wall_s": %e}' \
  "$bin" train --config "$out/config.toml" --out "$out/run" --overwrite 2>"$out/train.log" || {
  tail -5 "$out/train.log"; exit 1; }
tail -1 "$out/train.log"
if [ "${SKIP_RUN:-0}" != 1 ]; then
  /usr/bin/time -f '{"run_peak_rss_kib": %M, "run_wall_s": %e}' \
    "$bin" run --config "$out/config.toml" --out "$out/job" --overwrite >"$out/job.md" 2>"$out/job.log" || {
    tail -5 "$out/job.log"; exit 1; }
  tail -1 "$out/job.log"
  head -4 "$out/job.md"
fi
