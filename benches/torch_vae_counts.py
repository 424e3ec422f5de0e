#!/usr/bin/env python3
"""torch_vae_counts.py — the `vae_counts_step` case of `latentlab bench` in PyTorch.

The peer's `vae_step` (`bench_torch.py`: VAE 2,000 → 512 → 256 → 64, batch 256, AdamW) on the
input `latentlab bench --case vae_counts_step` builds: log1p of counts 1–20 in a fraction
`--density` of the entries, zeros elsewhere — the sparsity of expression data. PyTorch runs its
dense products whatever the values, which this script shows by timing both inputs: the
`vae_step` rate on uniform values in [0, 3) (the peer's own input) next to `vae_counts_step`.

Usage: python benches/torch_vae_counts.py --peer-dir ../shared/peer [--density 0.15] [--threads 1 2]
Prints `{"rates": {"vae_counts_step": {"1": rate, …}, "vae_step": {…}}}` like `latentlab bench --json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-dir", required=True, help="folder holding bench_torch.py and peer_ldm.py")
    ap.add_argument("--density", type=float, default=0.15, help="fraction of non-zero inputs")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=3.0)
    ap.add_argument("--warmup-seconds", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--latent", type=int, default=64)
    args = ap.parse_args(argv)
    if not 0.0 <= args.density <= 1.0:
        ap.error(f"--density {args.density}: expected a fraction between 0 and 1")
    sys.path.insert(0, os.path.abspath(args.peer_dir))
    from bench_torch import time_rate
    from peer_ldm import VAE, vae_train_step

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, args.genes)
    uniform = torch.rand(*shape, generator=g) * 3.0
    kept = torch.rand(*shape, generator=g) < args.density
    counts = torch.randint(1, 21, shape, generator=g).float()
    expression = torch.where(kept, torch.log1p(counts), torch.zeros(shape))
    rates: dict[str, dict[str, float]] = {"vae_counts_step": {}, "vae_step": {}}
    for th in args.threads:
        torch.set_num_threads(th)
        for case, x in (("vae_counts_step", expression), ("vae_step", uniform)):
            vae = VAE(args.genes, args.latent, (512, 256))
            opt = torch.optim.AdamW(vae.parameters(), lr=1e-3)
            r, _ = time_rate(lambda: vae_train_step(vae, opt, x, 1e-3), 1, args.min_seconds,
                             args.repeats, args.warmup_seconds)
            rates[case][str(th)] = r
            print(f"[threads={th}] {case} {r:10.2f} steps/s", file=sys.stderr, flush=True)
    print(json.dumps({"rates": rates}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
