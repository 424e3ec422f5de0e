#!/usr/bin/env bash
# Builds the `cuda` feature on a machine WITHOUT a GPU or a CUDA install, and packs what the GPU
# machine needs into .devcarry/ (git-ignored through .git/info/exclude).
#
#   bash benches/cuda/build.sh            # from the repository root
#
# How:
#  * CUDA 13.0 compiler from PyPI wheels (nvidia-cuda-nvcc, -nvvm, -crt, -runtime, -cccl, all 13.0.x,
#    the version the GPU machine's driver 580 supports), unpacked into a toolkit root under
#    target/cuda-tk/root (bin/nvcc, include/cuda.h, ...). dfdx's build.rs calls `nvidia-smi` for the
#    compute capability: a stand-in script prints 9.0 (H100/H200), so the kernels become sm_90 PTX.
#  * Linking: cudarc 0.9.15 links libcuda, libnvrtc, libcurand, libcublas, libcublasLt dynamically.
#    Tiny stub libraries (every function cudarc declares, returning 0) with the GPU machine's real
#    sonames (libcuda.so.1, libnvrtc.so.13, libcurand.so.10, libcublas.so.13, libcublasLt.so.13) are
#    put in $CUDA_ROOT/lib, where cudarc's build.rs looks; at run time LD_LIBRARY_PATH points to the
#    real CUDA 13 libraries (benches/cuda/device_check.sh finds them).
#  * dfdx compiles some kernels at run time with NVRTC and bakes two build-machine paths into the
#    binary for their #includes (its OUT_DIR holding cuda_utils.cuh, and $CUDA_ROOT/include, of which
#    NVRTC 13 needs only cuda_fp16.h/.hpp); they are written to .devcarry/baked_paths.txt and the
#    files to .devcarry/cuh/ and .devcarry/include/, so that the device script can recreate those
#    paths there. The tests also bake CARGO_MANIFEST_DIR: build_root.txt lets the device script link
#    the build's repository path to its own checkout.
#  * cudarc comes from vendor/cudarc (CudaStream: Send + Sync, decision 0014), so every crate
#    compiles with `cuda` as it is.
# Also builds the CPU binary (same target dir, so shared dependencies compile once) as the baseline.
# The binaries travel packed as bin.tar.xz (the device script unpacks them): the working tree and
# what travels with it must stay under the device tool's size limit.
# Environment: DEVCARRY=<folder> (default .devcarry here; put it in the checkout that travels to the
# GPU machine), PEER_DIR=<folder with bench_torch.py and peer_ldm.py> copies the PyTorch peer along,
# CUDA_TK=<folder> for the toolkit (default target/cuda-tk), BASELINE_CUDA_BIN=<an earlier CUDA
# build of latentlab> travels as bin/latentlab-cuda-baseline, benchmarked beside the new one;
# BASELINE_CPU_BIN=<an earlier CPU build> travels as bin/latentlab-cpu-baseline (CPU thread sweep).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
ROOT_DIR=$PWD
TK=${CUDA_TK:-$ROOT_DIR/target/cuda-tk}
CARRY=${DEVCARRY:-$ROOT_DIR/.devcarry}
V=13.0
CARGO="nice -n 10 cargo"

# 1. toolkit from wheels -------------------------------------------------------------------------
if [ ! -x "$TK/root/bin/nvcc" ]; then
  mkdir -p "$TK/whl" "$TK/unz"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 -d "$TK/whl" \
    "nvidia-cuda-nvcc==$V.*" "nvidia-nvvm==$V.*" "nvidia-cuda-crt==$V.*" \
    "nvidia-cuda-runtime==$V.*" "nvidia-cuda-cccl==$V.*"
  for w in "$TK"/whl/*.whl; do (cd "$TK/unz" && unzip -q -o "$w"); done
  rm -rf "$TK/root" && mv "$TK/unz/nvidia/cu13" "$TK/root" && rm -rf "$TK/unz"
  chmod +x "$TK"/root/bin/* "$TK"/root/nvvm/bin/*
fi
R=$TK/root
mkdir -p "$TK/fakebin"
if ! command -v nvidia-smi >/dev/null; then
  printf '#!/bin/sh\necho compute_cap\necho 9.0\n' >"$TK/fakebin/nvidia-smi"
  chmod +x "$TK/fakebin/nvidia-smi"
fi

# 2. link stubs -----------------------------------------------------------------------------------
CUDARC=$(dirname "$(cargo metadata --format-version 1 --features cuda 2>/dev/null |
  python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc"))')")
mkdir -p "$TK/stubsrc"
stub() { # stub NAME SONAME sys.rs...
  local name=$1 soname=$2; shift 2
  grep -ohP 'pub fn \K\w+(?=\()' "$@" | sort -u | sed 's/.*/int &(void) { return 0; }/' >"$TK/stubsrc/$name.c"
  gcc -shared -fPIC -Wl,-soname,"$soname" -o "$R/lib/lib$name.so" "$TK/stubsrc/$name.c"
}
stub cuda libcuda.so.1 "$CUDARC/src/driver/sys.rs"
stub nvrtc libnvrtc.so.13 "$CUDARC/src/nvrtc/sys.rs"
stub curand libcurand.so.10 "$CUDARC/src/curand/sys.rs"
stub cublas libcublas.so.13 "$CUDARC/src/cublas/sys.rs" "$CUDARC/src/cublas/half.rs"
stub cublasLt libcublasLt.so.13 "$CUDARC/src/cublaslt/sys.rs"


# 3. builds ---------------------------------------------------------------------------------------
rm -rf "$CARRY/bin" "$CARRY/bin.tar.xz"
mkdir -p "$CARRY/bin"
$CARGO build --release --bin latentlab
cp target/release/latentlab "$CARRY/bin/latentlab-cpu"

export CUDA_ROOT=$R CUDA_COMPUTE_CAP=90 PATH=$R/bin:$TK/fakebin:$PATH
$CARGO build --release --features cuda --bin latentlab
cp target/release/latentlab "$CARRY/bin/latentlab-cuda"
exe() { python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]: print(m["executable"])' "$1"; }
T=$($CARGO test -p latentlab-framework --release --features cuda --no-run --message-format json | exe latentlab_framework)
cp "$T" "$CARRY/bin/framework-tests-cuda"
T=$($CARGO test -p latentlab --release --features cuda --test registry --no-run --message-format json | exe registry)
cp "$T" "$CARRY/bin/registry-tests-cuda"
strip "$CARRY"/bin/*

# 4. what the device needs besides the binaries ---------------------------------------------------
TD=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
for b in "$CARRY"/bin/*-cuda; do strings -a "$b"; done >"$TK/strings.txt"
for p in "$TD"/release/build/dfdx-*/out "$R/include"; do
  if grep -qF "$p" "$TK/strings.txt"; then echo "$p"; fi
done >"$CARRY/baked_paths.txt"
echo "$ROOT_DIR" >"$CARRY/build_root.txt"
mkdir -p "$CARRY/cuh" "$CARRY/include"
cp "$R/include/cuda_fp16.h" "$R/include/cuda_fp16.hpp" "$CARRY/include/"
cp "$(grep -v /include "$CARRY/baked_paths.txt" | head -1)"/*.cuh "$CARRY/cuh/"
cp benches/cuda/device_check.sh benches/cuda/torch_gpu.py benches/torch_dit.py "$CARRY/"
if [ -n "${BASELINE_CUDA_BIN:-}" ]; then cp "$BASELINE_CUDA_BIN" "$CARRY/bin/latentlab-cuda-baseline"; fi
if [ -n "${BASELINE_CPU_BIN:-}" ]; then cp "$BASELINE_CPU_BIN" "$CARRY/bin/latentlab-cpu-baseline"; fi
if [ -n "${PEER_DIR:-}" ]; then cp "$PEER_DIR/bench_torch.py" "$PEER_DIR/peer_ldm.py" "$CARRY/"; fi
for b in "$CARRY"/bin/*-cuda; do echo "== $b"; readelf -d "$b" | grep -E 'NEEDED|FLAGS'; done
cat "$CARRY/baked_paths.txt"
tar -C "$CARRY" -cJf "$CARRY/bin.tar.xz" bin && rm -rf "$CARRY/bin"
du -sh "$CARRY"
