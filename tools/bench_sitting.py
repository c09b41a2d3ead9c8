#!/usr/bin/env python3
"""One benchmark sitting: mnv2c and its peers in interleaved rounds, printed as the Markdown
tables of docs/performance.md (the raw JSON lines go to --raw).

    python3 tools/bench_sitting.py --rounds 3 --runs 100 --raw sitting.jsonl > sitting.md

Each round runs `mnv2c bench --json` for every (tier, threads) asked, then
`../shared/bench/peers.sh RUNS ENGINES` (ONNX Runtime, TFLite with XNNPACK, OpenVINO). Speed is
quoted as per-round ratios (mnv2c and the peers a minute apart) and their median, since the
machine's clock drifts between rounds.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_json_lines(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            rows.append(json.loads(line))
    return rows


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--mnv2c", default=os.path.join(ROOT, "target", "release", "mnv2c"))
    ap.add_argument("--configs", default="avx512:1,avx512:2,avx2:1,avx2:2,portable:1",
                    help="mnv2c tiers and thread counts, isa:threads,...")
    ap.add_argument("--peers", default=os.path.join(ROOT, "..", "shared", "bench", "peers.sh"))
    ap.add_argument("--engines", default="xnnpack ort openvino")
    ap.add_argument("--raw", help="append every JSON result to this file")
    a = ap.parse_args()
    configs = [(c.split(":")[0], int(c.split(":")[1])) for c in a.configs.split(",")]

    mine = {c: [] for c in configs}  # (isa, threads) -> [bench json per round]
    peers = {}  # (engine, threads) -> [median_ms per round]
    loads = []
    raw = open(a.raw, "a") if a.raw else None
    for r in range(a.rounds):
        loads.append(os.getloadavg()[0])
        for isa, t in configs:
            d = run_json_lines([a.mnv2c, "bench", "--isa", isa, "--threads", str(t),
                                "--runs", str(a.runs), "--json"])[0]
            mine[(isa, t)].append(d)
            if raw:
                raw.write(json.dumps({"round": r, "engine": "mnv2c", **d}) + "\n")
        for d in run_json_lines([a.peers, str(a.runs), a.engines]):
            peers.setdefault((d["engine"], d["threads"]), []).append(d["median_ms"])
            if raw:
                raw.write(json.dumps({"round": r, **d}) + "\n")
    out = sys.stdout
    out.write(f"Sitting of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
              f"{a.rounds} interleaved rounds of {a.runs} runs; 1-minute load average at the "
              f"start of each round: {', '.join(f'{x:.2f}' for x in loads)}.\n\n")

    # Whole model.
    out.write("| engine | threads | rounds (ms) | median |\n|---|---|---|---|\n")
    for (isa, t), ds in mine.items():
        ms = [d["median_ms"] for d in ds]
        out.write(f"| mnv2c {isa} | {t} | {', '.join(f'{x:.2f}' for x in ms)} | "
                  f"{median(ms):.2f} |\n")
    for (e, t), ms in sorted(peers.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        out.write(f"| {e} | {t} | {', '.join(f'{x:.2f}' for x in ms)} | {median(ms):.2f} |\n")
    out.write("\n| ratio (per round; median) | 1 thread | 2 threads |\n|---|---|---|\n")
    for isa in sorted({i for i, _ in configs}, key=lambda i: ["avx512", "avx2", "portable"].index(i)):
        for e in sorted({e for e, _ in peers}):
            cells = []
            for t in (1, 2):
                if (isa, t) not in mine or (e, t) not in peers:
                    cells.append("")
                    continue
                rs = [m["median_ms"] / p for m, p in zip(mine[(isa, t)], peers[(e, t)])]
                cells.append(f"{', '.join(f'{x:.2f}' for x in rs)}; **{median(rs):.2f}**")
            out.write(f"| mnv2c {isa} / {e} | {cells[0]} | {cells[1]} |\n")

    # Families and layers, 1 thread, medians over the rounds.
    out.write("\n| tier | threads | peak GFLOP/s per core | family | ms | % of the tier's peak "
              "| compile ms |\n|---|---|---|---|---|---|---|\n")
    for (isa, t), ds in mine.items():
        fams = {}
        for d in ds:
            for f in d["families"]:
                fams.setdefault(f["family"], []).append(f)
        peak = median([d["peak_gflops_per_core"] for d in ds])
        comp = median([d["compile_ms"] for d in ds])
        for name, fs in fams.items():
            if name in ("avgpool", "softmax"):
                continue
            out.write(f"| {isa} | {t} | {peak:.0f} | {name} | "
                      f"{median([f['ms'] for f in fs]):.3f} | "
                      f"{median([f['percent_of_peak'] for f in fs]):.1f}% | {comp:.0f} |\n")
    cols = [c for c in configs if c[1] == 1] + [c for c in configs if c[1] != 1]
    out.write("\n| layer | family | MFLOP | " +
              " | ".join(f"{i} {t}T ms | % peak" for i, t in cols) + " |\n")
    out.write("|---|---|---|" + "---|---|" * len(cols) + "\n")
    first = mine[cols[0]][0]["layers"]
    for j, layer in enumerate(first):
        cells = []
        for c in cols:
            ls = [d["layers"][j] for d in mine[c]]
            cells.append(f"{median([l['ms'] for l in ls]):.4f} | "
                         f"{median([l['percent_of_peak'] for l in ls]):.1f}%")
        out.write(f"| {layer['name']} | {layer['family']} | {layer['mflop']:.2f} | "
                  + " | ".join(cells) + " |\n")


if __name__ == "__main__":
    main()
