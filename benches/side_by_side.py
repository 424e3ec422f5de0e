#!/usr/bin/env python3
"""side_by_side.py — latentlab ÷ PyTorch step rates, measured in interleaved pairs.

On a shared or virtual machine the speed of one program drifts by tens of percent between
minutes, so two programs timed one after the other in long separate runs give ratios that
mostly measure the drift. This script times each case as a pair of short runs — PyTorch
(`bench_torch.py` of the peer, or `benches/torch_dit.py` for `dit_step`) and `latentlab bench`
— back to back, alternating which goes first, and repeats the pairs for several rounds. Each
round gives one ratio measured within the same minute; the report is the median ratio over the
rounds and its spread (lowest and highest round).

Usage (run with the peer's Python environment, made by `bash ../shared/peer/setup.sh DIR`):

  DIR/bin/python benches/side_by_side.py --peer-dir ../shared/peer \\
      --latentlab target/release/latentlab [--cases vae_step dit_step] [--threads 1 2] \\
      [--rounds 5] [--min-seconds 2] [--json ratios.json]

Prints a Markdown table (case, threads, PyTorch and latentlab median rates, median ratio, lowest
and highest round ratio, rounds at or above --target) and, with --json, writes every round's
rates. Sampling cases work too but take minutes per PyTorch run at the default sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

TRAINING_CASES = ["vae_step", "latent_denoiser_step", "gene_denoiser_step", "dit_step"]


def last_json_line(text: str) -> dict:
    """The last line of `text` that parses as a JSON object with a "rates" key."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "rates" in value or all(isinstance(v, dict) for v in value.values()):
                return value.get("rates", value)
    raise ValueError("no JSON rates line in the output")


def rate_from(command: list[str], case: str, threads: int) -> float:
    """Runs `command` and returns its rate for `case` at `threads`."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return float(last_json_line(done.stdout)[case][str(threads)])


def torch_command(args, case: str, threads: int) -> list[str]:
    common = ["--threads", str(threads), "--repeats", "1", "--min-seconds", str(args.min_seconds)]
    if case == "dit_step":
        here = os.path.dirname(os.path.abspath(__file__))
        return [sys.executable, os.path.join(here, "torch_dit.py"), "--peer-dir", args.peer_dir, *common]
    return [sys.executable, os.path.join(args.peer_dir, "bench_torch.py"), "--cases", case, *common]


def latentlab_command(args, case: str, threads: int) -> list[str]:
    return [args.latentlab, "bench", "--json", "--case", case, "--threads", str(threads),
            "--min-seconds", str(args.min_seconds)]


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


def markdown(rows: list[dict], target: float) -> str:
    lines = [f"| case | threads | PyTorch | latentlab | ratio (median) | lowest – highest | rounds ≥ {target} |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['threads']} | {r['pytorch']:.2f} | {r['latentlab']:.2f} | "
                     f"{r['ratio']:.2f} | {r['lowest']:.2f} – {r['highest']:.2f} | {r['at_target']} / {r['rounds']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-dir", required=True, help="folder holding bench_torch.py and peer_ldm.py")
    ap.add_argument("--latentlab", required=True, help="the latentlab binary (a release build)")
    ap.add_argument("--cases", nargs="+", default=TRAINING_CASES)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=2.0, help="seconds of one timed run per side")
    ap.add_argument("--target", type=float, default=1.25, help="ratio counted in the last column")
    ap.add_argument("--json", help="write every round's rates and the summary here")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    rounds = []
    pair = 0
    for round_index in range(args.rounds):
        for case in args.cases:
            for threads in args.threads:
                commands = {"pytorch": torch_command(args, case, threads),
                            "latentlab": latentlab_command(args, case, threads)}
                order = ["pytorch", "latentlab"] if pair % 2 == 0 else ["latentlab", "pytorch"]
                pair += 1
                measured = {side: rate_from(commands[side], case, threads) for side in order}
                rounds.append({"round": round_index, "case": case, "threads": threads, "first": order[0], **measured})
                print(f"round {round_index + 1}/{args.rounds} {case} {threads} thr: PyTorch {measured['pytorch']:.2f}, "
                      f"latentlab {measured['latentlab']:.2f}, ratio {measured['latentlab'] / measured['pytorch']:.2f}",
                      file=sys.stderr, flush=True)

    rows = summarize(rounds, args.target)
    print(markdown(rows, args.target))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"protocol": {"rounds": args.rounds, "min_seconds": args.min_seconds,
                                    "statistic": "median of per-round ratios, pairs interleaved"},
                       "summary": rows, "rounds": rounds}, fh, indent=2)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
