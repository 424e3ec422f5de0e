#!/usr/bin/env python3
"""torch_dit.py — the `dit_step` case of `latentlab bench` in PyTorch, timed like the peer's cases.

`bench_torch.py` (the shared PyTorch peer) has no DiT; this script builds the same network as
latentlab's `dit` denoiser at the bench's size and times one rectified-flow training step with
AdamW, reusing the peer's timing protocol (`time_rate`) and training step (`flow_train_step`):

  latent 64 = 16 tokens of 4 values; width 128; 4 blocks of 4-head self-attention + GELU(tanh)
  MLP (ratio 4), each modulated by adaLN-Zero (shift, scale, gate for attention and MLP) from
  SiLU(time MLP(sinusoid(1000 t)) + Linear(class embedding)); learned position embedding; final
  adaLN LayerNorm and a zero-initialised output projection back to 4 values per token.
  Batch 256, 10 classes + null, 10 % label dropout.

The PyTorch version uses the fused forms a PyTorch user would write (one Linear for q, k, v;
one for the six modulations; `scaled_dot_product_attention`); the matrix-product FLOPs are the
same as latentlab's per-head layers.

Usage: python benches/torch_dit.py --peer-dir ../shared/peer [--threads 1 2] [--repeats 3] [--device cuda]
Prints `{"rates": {"dit_step": {"1": rate, "2": rate}}}` like `latentlab bench --json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


class DitBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.fc2 = nn.Linear(mlp_ratio * width, width)
        self.ada = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, h, c_act):
        b, t, w = h.shape
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(c_act)[:, None].chunk(6, dim=-1)
        x = F.layer_norm(h, (w,)) * (1.0 + sc1) + sh1
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, w)
        h = h + self.proj(a) * g1
        y = F.layer_norm(h, (w,)) * (1.0 + sc2) + sh2
        return h + self.fc2(F.gelu(self.fc1(y), approximate="tanh")) * g2


class Dit(nn.Module):
    def __init__(self, dim: int, n_classes: int, patch: int = 4, width: int = 128, blocks: int = 4,
                 heads: int = 4, mlp_ratio: int = 4, time_dim: int = 128, cond_dim: int = 128):
        super().__init__()
        self.dim, self.n_classes, self.patch, self.time_dim = dim, n_classes, patch, time_dim
        self.tokens = dim // patch
        self.patch_in = nn.Linear(patch, width)
        self.position = nn.Embedding(self.tokens, width)
        self.time1 = nn.Linear(time_dim, width)
        self.time2 = nn.Linear(width, width)
        self.label_emb = nn.Embedding(n_classes + 1, cond_dim)
        self.cond_proj = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList([DitBlock(width, heads, mlp_ratio) for _ in range(blocks)])
        self.final_ada = nn.Linear(width, 2 * width)
        self.patch_out = nn.Linear(width, patch)
        for lin in (self.final_ada, self.patch_out):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x, t, y):
        from peer_ldm import timestep_embedding

        c = self.time2(F.silu(self.time1(timestep_embedding(t, self.time_dim))))
        c_act = F.silu(c + self.cond_proj(self.label_emb(y)))
        b = x.shape[0]
        h = self.patch_in(x.view(b, self.tokens, self.patch)) + self.position.weight
        for blk in self.blocks:
            h = blk(h, c_act)
        shift, scale = self.final_ada(c_act)[:, None].chunk(2, dim=-1)
        out = self.patch_out(F.layer_norm(h, (h.shape[-1],)) * (1.0 + scale) + shift)
        return out.reshape(b, self.dim)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-dir", required=True, help="folder holding bench_torch.py and peer_ldm.py")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=3.0)
    ap.add_argument("--warmup-seconds", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--device", default="cpu",
                    help="cpu, or cuda: model and data on the GPU, each timed step ends with a synchronize")
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.abspath(args.peer_dir))
    from bench_torch import time_rate
    from peer_ldm import flow_train_step

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(args.batch, args.latent, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        # flow_train_step draws its noise and times without a device argument.
        torch.set_default_device(dev)
        print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}", file=sys.stderr, flush=True)
    z, y = z.to(dev), y.to(dev)
    net = Dit(args.latent, 10).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def step():
        flow_train_step(net, opt, z, y, 0.1)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    rates = {}
    for th in args.threads:
        torch.set_num_threads(th)
        r, _ = time_rate(step, 1, args.min_seconds, args.repeats, args.warmup_seconds)
        rates[str(th)] = r
        print(f"[threads={th}] dit_step {r:10.2f} steps/s "
              f"({sum(p.numel() for p in net.parameters())} parameters)", file=sys.stderr, flush=True)
    print(json.dumps({"rates": {"dit_step": rates}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
