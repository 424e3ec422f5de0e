#!/usr/bin/env python3
"""Runs the PyTorch peer's bench_torch.py on the GPU without editing it.

    python3 torch_gpu.py PEER_DIR [bench_torch.py arguments...]

Tensors are created on CUDA by default (torch.set_default_device), the synthetic-data generator
is a CUDA one, and every timed call ends with torch.cuda.synchronize() so that rates count finished
work. --threads only sets PyTorch's CPU threads here and does not matter on the GPU.
"""

import sys

import torch

sys.path.insert(0, sys.argv[1])
import bench_torch  # noqa: E402

torch.set_default_device("cuda")
# Creating an optimizer imports torch._dynamo lazily, which reads torch.Generator in annotations:
# do it once before torch.Generator is swapped below.
torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])

_build_cases = bench_torch.build_cases
_time_rate = bench_torch.time_rate
_Generator = torch.Generator


def build_cases(args):
    torch.Generator = lambda *a, **k: _Generator(device="cuda")
    try:
        return _build_cases(args)
    finally:
        torch.Generator = _Generator


def time_rate(fn, *rest):
    def synced():
        fn()
        torch.cuda.synchronize()

    return _time_rate(synced, *rest)


bench_torch.build_cases = build_cases
bench_torch.time_rate = time_rate
print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}", flush=True)
sys.exit(bench_torch.main(sys.argv[2:]))
