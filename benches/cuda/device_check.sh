#!/usr/bin/env bash
# GPU-machine check of the `cuda` build made by benches/cuda/build.sh (which copies this script into
# .devcarry/). Run from the repository root on the GPU machine, with .devcarry/ beside it and OUT
# set to a folder for the results (bench_torch.py and peer_ldm.py in .devcarry/ from PEER_DIR):
#
#   OUT=/tmp/out bash .devcarry/device_check.sh [BUDGET_SECONDS]
#
# Steps, each under `timeout`, all inside BUDGET_SECONDS (default 390): GPU and library discovery;
# framework unit tests and registry conformance tests on CUDA; `latentlab bench` with the CUDA
# binary (and an earlier CUDA build, bin/latentlab-cuda-baseline, when one travels), and with the CPU
# binary when it travels (at 1, 2, 4, 8 and all threads beside bin/latentlab-cpu-baseline when that
# travels); the PyTorch peer's bench_torch.py on the GPU (through torch_gpu.py) and
# torch_dit.py on the GPU, and bench_torch.py on the CPU when the CPU binary travels; the README
# main job (configs/pbmc_vae_flow.toml) with the CUDA binary, in the time left. CPU_THREADS="1 2 16"
# overrides the CPU thread counts; SKIP_GPU_PEER=1 leaves out PyTorch on the GPU.
# Results: $OUT/log.txt (everything), tests_*.txt, benches.txt, main_job.txt, metrics.json, report.md.
set -x
START=$(date +%s)
BUDGET=${1:-390}
C=$(cd "$(dirname "$0")" && pwd)
REPO=$PWD
OUT=${OUT:-/tmp/cuda_check_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
left() { echo $((BUDGET - ($(date +%s) - START))); }
lim() { local want=$1 l; l=$(($(left) - 5)); [ "$l" -lt "$want" ] && want=$l; [ "$want" -lt 1 ] && want=1; echo "$want"; }

date -u
lscpu | grep -E "Model name|^CPU\(s\)"
nvidia-smi
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv
nproc

# --- libraries --------------------------------------------------------------------------------------
PYNV=$(python3 -c 'import nvidia, os; print(" ".join(nvidia.__path__))' 2>/dev/null)
LIBDIRS=""
for so in libcuda.so.1 libnvrtc.so.13 libcurand.so.10 libcublas.so.13 libcublasLt.so.13; do
  p=$(ldconfig -p | awk -v s="$so" '$1==s {print $NF; exit}')
  [ -z "$p" ] && p=$(find $PYNV /usr/local/cuda*/ /usr/local/nvidia /usr/lib/x86_64-linux-gnu \
    -name "$so" 2>/dev/null | head -1)
  echo "LIB $so -> ${p:-NOT FOUND} -> $(readlink -f "$p" 2>/dev/null)"
  [ -n "$p" ] && LIBDIRS="$LIBDIRS:$(dirname "$p")"
done
export LD_LIBRARY_PATH="${LIBDIRS#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

# --- paths dfdx baked in for its run-time NVRTC kernels, and CARGO_MANIFEST_DIR of the tests -------
BUILD_ROOT=$(cat "$C/build_root.txt")
if [ "$BUILD_ROOT" != "$REPO" ] && [ ! -e "$BUILD_ROOT" ]; then
  mkdir -p "$(dirname "$BUILD_ROOT")" && ln -s "$REPO" "$BUILD_ROOT"
fi
while read -r p; do
  mkdir -p "$p"
  case "$p" in
    */include) cp "$C"/include/*.h* "$p/" ;;
    *) cp "$C"/cuh/*.cuh "$p/" ;;
  esac
done <"$C/baked_paths.txt"
ldd "$C/bin/latentlab-cuda"

if [ -f "$C/bin.tar.xz" ]; then tar -C "$C" -xJf "$C/bin.tar.xz"; fi
CUDA_BIN=$C/bin/latentlab-cuda
CPU_BIN=$C/bin/latentlab-cpu
"$CUDA_BIN" --version

# --- tests ------------------------------------------------------------------------------------------
(cd framework && timeout "$(lim 90)" "$C/bin/framework-tests-cuda" --test-threads=4) >"$OUT/tests_framework.txt" 2>&1
echo "framework tests rc=$?"
grep -E "^test result|FAILED|panicked" "$OUT/tests_framework.txt" | head -60
timeout "$(lim 45)" "$C/bin/registry-tests-cuda" --test-threads=4 >"$OUT/tests_registry.txt" 2>&1
echo "registry tests rc=$?"
grep -E "^test result|FAILED|panicked" "$OUT/tests_registry.txt" | head -30

# --- benches ----------------------------------------------------------------------------------------
B=$OUT/benches.txt
TRAIN=(--case vae_step --case latent_denoiser_step --case gene_denoiser_step --case dit_step)
SAMPLE=(--case latent_sampling --case gene_sampling)
BASE=$C/bin/latentlab-cuda-baseline
{
  echo "## latentlab CUDA, host threads 1 and $(nproc) (training steps)"
  timeout "$(lim 60)" "$CUDA_BIN" bench --json --threads 1 --threads "$(nproc)" --min-seconds 2 "${TRAIN[@]}"
  if [ -x "$BASE" ]; then
    echo "## baseline CUDA build, host threads 1 and $(nproc) (training steps it knows)"
    timeout "$(lim 60)" "$BASE" bench --json --threads 1 --threads "$(nproc)" --min-seconds 2 "${TRAIN[@]:0:6}"
  fi
  if [ -x "$CPU_BIN" ]; then
    # With an earlier CPU build beside it (bin/latentlab-cpu-baseline), sweep the thread counts.
    CPU_BASE=$C/bin/latentlab-cpu-baseline
    if [ -x "$CPU_BASE" ]; then THREADS=(1 2 4 8 "$(nproc)"); else THREADS=(1 "$(nproc)"); fi
    if [ -n "${CPU_THREADS:-}" ]; then read -ra THREADS <<<"$CPU_THREADS"; fi
    TFLAGS=(); for t in "${THREADS[@]}"; do TFLAGS+=(--threads "$t"); done
    echo "## latentlab CPU, threads ${THREADS[*]} (training steps)"
    timeout "$(lim 90)" "$CPU_BIN" bench --json "${TFLAGS[@]}" --min-seconds 1 "${TRAIN[@]}"
    if [ -x "$CPU_BASE" ]; then
      echo "## baseline CPU build, threads ${THREADS[*]} (training steps)"
      timeout "$(lim 90)" "$CPU_BASE" bench --json "${TFLAGS[@]}" --min-seconds 1 "${TRAIN[@]}"
    fi
    echo "## PyTorch CPU"
    timeout "$(lim 90)" python3 "$C/bench_torch.py" --cases vae_step latent_denoiser_step gene_denoiser_step \
      --threads "${THREADS[@]}" --repeats 3 --min-seconds 1 --warmup-seconds 0.5
    echo "## PyTorch CPU dit_step"
    timeout "$(lim 60)" python3 "$C/torch_dit.py" --peer-dir "$C" --threads "${THREADS[@]}" --repeats 3 \
      --min-seconds 1 --warmup-seconds 0.5
  fi
  if [ -z "${SKIP_GPU_PEER:-}" ]; then
    echo "## PyTorch GPU (all cases)"
    timeout "$(lim 45)" python3 "$C/torch_gpu.py" "$C" --threads 1 --repeats 3 --min-seconds 1 --warmup-seconds 0.5
    echo "## PyTorch GPU dit_step"
    timeout "$(lim 30)" python3 "$C/torch_dit.py" --peer-dir "$C" --device cuda --threads 1 --repeats 3 \
      --min-seconds 1 --warmup-seconds 0.5
  fi
  echo "## latentlab CUDA sampling (10,000 cells x 50 steps)"
  timeout "$(lim 45)" "$CUDA_BIN" bench --json --threads "$(nproc)" "${SAMPLE[@]}"
  if [ -x "$BASE" ]; then
    echo "## baseline CUDA build sampling"
    timeout "$(lim 45)" "$BASE" bench --json --threads "$(nproc)" "${SAMPLE[@]}"
  fi
} >"$B" 2>&1
cat "$B"

# --- the README main job with the CUDA binary -------------------------------------------------------
T=$(lim 200)
echo "main job: timeout ${T}s"
s=$(date +%s.%N)
timeout "$T" "$CUDA_BIN" run --config configs/pbmc_vae_flow.toml --out /tmp/runs/pbmc --overwrite \
  >"$OUT/main_job.txt" 2>&1
rc=$?
e=$(date +%s.%N)
echo "main job rc=$rc wall=$(awk "BEGIN{print $e - $s}")s" | tee -a "$OUT/main_job.txt"
tail -40 "$OUT/main_job.txt"
cp /tmp/runs/pbmc/report/metrics.json /tmp/runs/pbmc/report/report.md "$OUT/" 2>/dev/null
ls -la "$OUT"
echo "total $(($(date +%s) - START))s"
