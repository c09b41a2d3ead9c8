#!/usr/bin/env bash
# mnv2c and ONNX Runtime on the same ONNX files, in one sitting (docs/performance.md).
#   usage: tools/onnx_head_to_head.sh VENV_PYTHON MODEL_DIR [ROUNDS] [RUNS]
# MODEL_DIR holds the files `tools/onnx_fixtures.py --bench MODEL_DIR` writes. Each round times
# ONNX Runtime (../shared/bench/bench_ort.py), then `mnv2c bench --model` on each file, then the
# built-in model, at 1 and 2 threads; rounds interleave the engines so drift hits all alike.
# Prints one line per measurement: round, engine, model, threads, then the tool's JSON.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=$1; dir=$2; rounds=${3:-5}; runs=${4:-40}
mnv2c=${MNV2C:-$here/../target/release/mnv2c}
for round in $(seq "$rounds"); do
  for model in mnv2_tutorial keras_mnv2_224; do
    shape=""; [ "$model" = keras_mnv2_224 ] && shape="--input-shape 1,224,224,3"
    "$py" "$here/../../shared/bench/bench_ort.py" "$dir/$model.onnx" --threads 1 2 --runs "$runs" |
      sed "s/^/round $round ort $model /"
    for t in 1 2; do
      # shellcheck disable=SC2086
      json=$("$mnv2c" bench --model "$dir/$model.onnx" $shape --threads "$t" --runs "$runs" --json 2>/dev/null | tr -d '\n')
      echo "round $round mnv2c $model $t ${json:0:300}"
    done
  done
  for t in 1 2; do
    json=$("$mnv2c" bench --threads "$t" --runs "$runs" --json | tr -d '\n')
    echo "round $round mnv2c builtin $t ${json:0:300}"
  done
done
