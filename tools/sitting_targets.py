#!/usr/bin/env python3
"""Issue 10's targets, one Markdown row per sitting, from the JSON lines that
`tools/bench_sitting.py --raw FILE` writes (one file per sitting):

    python3 tools/bench_sitting.py --rounds 3 --runs 100 --raw s1.jsonl > s1.md
    python3 tools/sitting_targets.py s1.jsonl s2.jsonl ...

Columns: whole-model ratios to TFLite+XNNPACK and ONNX Runtime (the median of the per-round
ratios), the avx512 1x1 family's % of the 512-bit peak per round and its median, the peaks and
family times of those rounds, the avx2 1x1 and avx512 depthwise medians, the median of the
rounds' avx512 compile times, XNNPACK's 1-thread median, and which targets failed.
"""

import json
import statistics
import sys

TARGETS = {
    "1T/XNNPACK": lambda o: o["xnn1"] <= 1.0,
    "1T/ORT": lambda o: o["ort1"] <= 0.85,
    "2T/XNNPACK": lambda o: o["xnn2"] <= 1.0,
    "avx512 1x1": lambda o: o["pw512"] >= 75.0,
    "avx2 1x1": lambda o: o["pw256"] >= 75.0,
    "depthwise": lambda o: o["dw"] >= 30.0,
    "compile": lambda o: o["compile"] <= 100.0,
}


def summary(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]

    def mine(isa, threads):
        return [r for r in rows
                if r.get("engine") == "mnv2c" and r["isa"] == isa and r["threads"] == threads]

    def peer(engine, threads):
        return [r["median_ms"] for r in rows
                if r.get("engine") == engine and r["threads"] == threads]

    def family(ds, name):
        return [f for d in ds for f in d["families"] if f["family"] == name]

    def ratio(ms, peers):
        return statistics.median(d["median_ms"] / p for d, p in zip(ms, peers))

    a1, a2, v1 = mine("avx512", 1), mine("avx512", 2), mine("avx2", 1)
    pw = family(a1, "conv1x1")
    return {
        "xnn1": ratio(a1, peer("tflite-xnnpack", 1)),
        "ort1": ratio(a1, peer("onnxruntime", 1)),
        "xnn2": ratio(a2, peer("tflite-xnnpack", 2)),
        "pw512_rounds": [f["percent_of_peak"] for f in pw],
        "pw512": statistics.median(f["percent_of_peak"] for f in pw),
        "pw512_ms": [f["ms"] for f in pw],
        "peaks": [d["peak_gflops_per_core"] for d in a1],
        "pw256": statistics.median(f["percent_of_peak"] for f in family(v1, "conv1x1")),
        "dw": statistics.median(f["percent_of_peak"] for f in family(a1, "depthwise")),
        "compile": statistics.median(d["compile_ms"] for d in a1),
        "xnn1_ms": statistics.median(peer("tflite-xnnpack", 1)),
    }


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print("| sitting | 1T / XNNPACK | 1T / ORT | 2T / XNNPACK | avx512 1x1 (rounds; median) "
          "| peaks (GFLOP/s) | 1x1 family ms | avx2 1x1 | depthwise | compile | XNNPACK 1T "
          "| failed |")
    print("|---" * 12 + "|")
    for path in sys.argv[1:]:
        o = summary(path)
        failed = [name for name, ok in TARGETS.items() if not ok(o)]
        rounds = ", ".join(f"{x:.1f}" for x in o["pw512_rounds"])
        print(f"| {path} | {o['xnn1']:.2f} | {o['ort1']:.2f} | {o['xnn2']:.2f} "
              f"| {rounds}; **{o['pw512']:.1f}%** "
              f"| {min(o['peaks']):.0f}-{max(o['peaks']):.0f} "
              f"| {min(o['pw512_ms']):.2f}-{max(o['pw512_ms']):.2f} "
              f"| {o['pw256']:.1f}% | {o['dw']:.1f}% | {o['compile']:.0f} ms "
              f"| {o['xnn1_ms']:.2f} ms | {', '.join(failed) or 'none'} |")


if __name__ == "__main__":
    main()
