#!/usr/bin/env python3
"""side_by_side.py — latentlab ÷ PyTorch step rates, measured in interleaved pairs.

On a shared or virtual machine the speed of one program drifts by tens of percent between
minutes, so two programs timed one after the other in long separate runs give ratios that
mostly measure the drift. This script times each case as a pair of short runs — PyTorch
(`bench_torch.py` of the peer, `benches/torch_dit.py` for `dit_step`, `benches/torch_vae_counts.py`
for `vae_counts_step`, the VAE step on expression-like input with --counts-density non-zero) and
`latentlab bench`
— back to back, alternating which goes first, and repeats the pairs for several rounds. Each
round gives one ratio measured within the same minute; the report is the median ratio over the
rounds and its spread (lowest and highest round).

Usage (run with the peer's Python environment, made by `bash ../shared/peer/setup.sh DIR`):

  DIR/bin/python benches/side_by_side.py --peer-dir ../shared/peer \\
      --latentlab target/release/latentlab [--cases vae_step dit_step] [--threads 1 2] \\
      [--rounds 5] [--min-seconds 2] [--counts-density 0.15] [--json ratios.json]

Prints a Markdown table (case, threads, PyTorch and latentlab median rates, median ratio, lowest
and highest round ratio, rounds at or above --target) and, with --json, writes every round's
rates. Sampling cases work too but take minutes per PyTorch run at the default sizes.

For the MLP training cases, whose work is matrix products (each side counts its own:
3 · 2 · batch · its linear layers' multiply-accumulates), a second table from the same runs
bounds what the target asks of this machine: each side's GFLOP/s and its share of that side's
own 1024³ sgemm peak; the ratio of the two GFLOP/s (latentlab ÷ PyTorch for equal work: the
denoisers differ by one layer, PyTorch's has a final adaLN modulation of width → 2 · width and
latentlab's a condition projection of width → width, so latentlab's step counts 3–4 % fewer
products and its step-rate ratio reads that much higher); the share of latentlab's peak its
step would need for --target × PyTorch's steps/s; and the ceiling, the step-rate ratio at 100 %
of latentlab's peak. A ceiling below the target means no step built on this machine's sgemm
kernels meets it for that case; a needed share near or above what either side reaches on these
products says how far the target is from this hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import shutil
import subprocess
import sys
import tempfile

TRAINING_CASES = ["vae_step", "latent_denoiser_step", "gene_denoiser_step", "dit_step"]


# Cases whose step is matrix products counted alike on both sides (see the module doc).
MATMUL_CASES = ["vae_step", "latent_denoiser_step", "gene_denoiser_step"]


def last_json_line(text: str) -> dict:
    """The last line of `text` that parses as a JSON object of rates: `{"rates": …, …}` whole
    (`latentlab bench --json` adds "gflops" and "sgemm_peak"), or `{case: {threads: rate}}`
    wrapped as `{"rates": …}`."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "rates" in value:
                return value
            if all(isinstance(v, dict) for v in value.values()):
                return {"rates": value}
    raise ValueError("no JSON rates line in the output")


def measure(command: list[str], case: str, threads: int, record: str | None) -> dict:
    """Runs `command` and returns `{"rate": …}` for `case` at `threads`, with the side's GFLOP/s
    on the case and its sgemm peak (`"gflops"`, `"peak"`) where it reports them: in its printed
    JSON (latentlab) or in the full record it wrote to `record` (PyTorch)."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    printed = last_json_line(done.stdout)
    key = str(threads)
    out = {"rate": float(printed["rates"][case][key])}
    if case in printed.get("gflops", {}):
        out["gflops"] = float(printed["gflops"][case][key])
        out["peak"] = float(printed["sgemm_peak"][key])
    if record is not None and os.path.exists(record):
        with open(record) as fh:
            full = json.load(fh)
        os.remove(record)
        out["gflops"] = float(full["cases"][case]["by_threads"][key]["gflops"])
        out["peak"] = float(full["sgemm_peak_gflops"][key])
    return out


def torch_command(args, case: str, threads: int, record: str) -> list[str]:
    """The PyTorch side; `record` is where `bench_torch.py` writes its full record (GFLOP/s and
    peak) for the matrix-product cases."""
    common = ["--threads", str(threads), "--repeats", "1", "--min-seconds", str(args.min_seconds)]
    here = os.path.dirname(os.path.abspath(__file__))
    if case == "dit_step":
        return [sys.executable, os.path.join(here, "torch_dit.py"), "--peer-dir", args.peer_dir, *common]
    if case == "vae_counts_step":
        return [sys.executable, os.path.join(here, "torch_vae_counts.py"), "--peer-dir", args.peer_dir,
                "--density", str(args.counts_density), *common]
    command = [sys.executable, os.path.join(args.peer_dir, "bench_torch.py"), "--cases", case, *common]
    if case in MATMUL_CASES:
        command += ["--json", record]
    return command


def latentlab_command(args, case: str, threads: int) -> list[str]:
    return [args.latentlab, "bench", "--json", "--case", case, "--threads", str(threads),
            "--min-seconds", str(args.min_seconds), "--counts-density", str(args.counts_density)]


def summarize(rounds: list[dict], target: float) -> list[dict]:
    """One row per (case, threads): median rates, median / lowest / highest round ratio."""
    rows = []
    # In the order measured: the requested cases, each at the requested thread counts.
    keys = dict.fromkeys((r["case"], r["threads"]) for r in rounds)
    for case, threads in keys:
        mine = [r for r in rounds if r["case"] == case and r["threads"] == threads]
        ratios = [r["latentlab"] / r["pytorch"] for r in mine]
        rows.append({
            "case": case, "threads": threads, "rounds": len(mine),
            "pytorch": statistics.median(r["pytorch"] for r in mine),
            "latentlab": statistics.median(r["latentlab"] for r in mine),
            "ratio": statistics.median(ratios), "lowest": min(ratios), "highest": max(ratios),
            "at_target": sum(x >= target for x in ratios),
        })
    return rows


def ceilings(rounds: list[dict], target: float) -> list[dict]:
    """One row per (case, threads) of the matrix-product cases whose rounds carry both sides'
    GFLOP/s and peaks, each value the median over the rounds: both sides' GFLOP/s and shares of
    their own sgemm peaks, their GFLOP/s ratio, the share of latentlab's peak that `target` ×
    PyTorch's steps/s needs with latentlab's own product count, and the ceiling (the step-rate
    ratio at latentlab's peak)."""
    rows = []
    keys = dict.fromkeys((r["case"], r["threads"]) for r in rounds)
    for case, threads in keys:
        mine = [r for r in rounds if r["case"] == case and r["threads"] == threads
                and "gflops" in r["pytorch_detail"] and "gflops" in r["latentlab_detail"]]
        if case not in MATMUL_CASES or not mine:
            continue
        pairs = [(r["pytorch_detail"], r["latentlab_detail"]) for r in mine]
        # latentlab's GFLOP per step: the work its step rate is made of.
        work = [ll["gflops"] / ll["rate"] for _, ll in pairs]
        rows.append({
            "case": case, "threads": threads, "rounds": len(mine),
            "pytorch_gflops": statistics.median(t["gflops"] for t, _ in pairs),
            "latentlab_gflops": statistics.median(ll["gflops"] for _, ll in pairs),
            "pytorch_share": statistics.median(t["gflops"] / t["peak"] for t, _ in pairs),
            "latentlab_share": statistics.median(ll["gflops"] / ll["peak"] for _, ll in pairs),
            "gflops_ratio": statistics.median(ll["gflops"] / t["gflops"] for t, ll in pairs),
            "needed_share": statistics.median(target * t["rate"] * w / ll["peak"]
                                              for (t, ll), w in zip(pairs, work)),
            "ceiling": statistics.median(ll["peak"] / w / t["rate"] for (t, ll), w in zip(pairs, work)),
        })
    return rows


def ceiling_markdown(rows: list[dict], target: float) -> str:
    lines = ["| case | threads | PyTorch GFLOP/s (% of its peak) | latentlab GFLOP/s (% of its peak) | "
             f"GFLOP/s ratio | latentlab needs for {target}× steps/s | ceiling (at 100 % of peak) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['threads']} | {r['pytorch_gflops']:.1f} ({100 * r['pytorch_share']:.0f} %) | "
                     f"{r['latentlab_gflops']:.1f} ({100 * r['latentlab_share']:.0f} %) | {r['gflops_ratio']:.2f} | "
                     f"{100 * r['needed_share']:.0f} % of peak | {r['ceiling']:.2f}× |")
    return "\n".join(lines)


def markdown(rows: list[dict], target: float) -> str:
    lines = [f"| case | threads | PyTorch | latentlab | ratio (median) | lowest – highest | rounds ≥ {target} |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['threads']} | {r['pytorch']:.2f} | {r['latentlab']:.2f} | "
                     f"{r['ratio']:.2f} | {r['lowest']:.2f} – {r['highest']:.2f} | {r['at_target']} / {r['rounds']} |")
    return "\n".join(lines)


def measure_rounds(args, scratch: str) -> list[dict]:
    """Every round's pairs, in the order measured, each with both sides' rates and details."""
    rounds = []
    pair = 0
    for round_index in range(args.rounds):
        for case in args.cases:
            for threads in args.threads:
                record = os.path.join(scratch, f"torch_{case}_{threads}.json")
                commands = {"pytorch": torch_command(args, case, threads, record),
                            "latentlab": latentlab_command(args, case, threads)}
                order = ["pytorch", "latentlab"] if pair % 2 == 0 else ["latentlab", "pytorch"]
                pair += 1
                records = {"pytorch": record if case in MATMUL_CASES else None, "latentlab": None}
                details = {side: measure(commands[side], case, threads, records[side]) for side in order}
                measured = {side: details[side]["rate"] for side in order}
                rounds.append({"round": round_index, "case": case, "threads": threads, "first": order[0],
                               **measured, **{f"{side}_detail": details[side] for side in order}})
                print(f"round {round_index + 1}/{args.rounds} {case} {threads} thr: PyTorch {measured['pytorch']:.2f}, "
                      f"latentlab {measured['latentlab']:.2f}, ratio {measured['latentlab'] / measured['pytorch']:.2f}",
                      file=sys.stderr, flush=True)
    return rounds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-dir", required=True, help="folder holding bench_torch.py and peer_ldm.py")
    ap.add_argument("--latentlab", required=True, help="the latentlab binary (a release build)")
    ap.add_argument("--cases", nargs="+", default=TRAINING_CASES)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=2.0, help="seconds of one timed run per side")
    ap.add_argument("--target", type=float, default=1.25, help="ratio counted in the last column")
    ap.add_argument("--counts-density", type=float, default=0.15,
                    help="fraction of non-zero inputs in vae_counts_step (both sides)")
    ap.add_argument("--json", help="write every round's rates and the summary here")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    scratch = tempfile.mkdtemp(prefix="side_by_side_")
    try:
        rounds = measure_rounds(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    rows = summarize(rounds, args.target)
    bounds = ceilings(rounds, args.target)
    print(markdown(rows, args.target))
    if bounds:
        print()
        print(ceiling_markdown(bounds, args.target))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"protocol": {"rounds": args.rounds, "min_seconds": args.min_seconds,
                                    "statistic": "median of per-round ratios, pairs interleaved"},
                       "summary": rows, "ceilings": bounds, "rounds": rounds}, fh, indent=2)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
