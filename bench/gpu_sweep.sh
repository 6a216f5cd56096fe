#!/usr/bin/env bash
# The H200 figure of issue 10: the whole sweeps/synthetic-paper.yaml grid through `ctxscale sweep`,
# with the GPU's SM use sampled by nvidia-smi every 500 ms in the same run. Prints the wall time,
# the stored rows by status, the mean SM use, and the best-loss table.
#   bash bench/gpu_sweep.sh [seconds allowed, default 600] [spec, default sweeps/synthetic-paper.yaml] [KEY=VALUE ...]
# GPU=i samples GPU i (nvidia-smi's numbering; default 0): on a machine of several GPUs, run with
# CUDA_VISIBLE_DEVICES=i and a RAY_TMPDIR of its own beside another job.
# Also prints the GPU's busy seconds per step (GPT) or point-epoch (synthetic) trained, which compares
# two runs whose early stopping landed differently.
# MPS=1 runs the sweep under an NVIDIA MPS control daemon of its own (pipe and log folders in a fresh
# temporary folder, quit on exit), so that the trials sharing the GPU run their kernels side by side
# instead of taking turns; the summary line says whether it was on.
# Writes under ${OUT:-/tmp/gpu_sweep}: sm.txt (the samples), sweep.txt (the CLI's output), and the
# results folder as one archive, results.tgz.
set -u
limit=${1:-600}; spec=${2:-sweeps/synthetic-paper.yaml}; shift $(( $# < 2 ? $# : 2 ))
out=${OUT:-/tmp/gpu_sweep}
mkdir -p "$out"; rm -rf "$out/results"
python3 -c 'import ctxscale; print("ctxscale from", ctxscale.__file__)'
mps=off
if [ "${MPS:-0}" = 1 ]; then
  mps_dir=$(mktemp -d)
  export CUDA_MPS_PIPE_DIRECTORY=$mps_dir/pipe CUDA_MPS_LOG_DIRECTORY=$mps_dir/log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d || { echo "MPS=1: nvidia-cuda-mps-control -d failed" >&2; exit 1; }
  trap 'echo quit | nvidia-cuda-mps-control' EXIT
  mps=on
fi
sample_ms=500
nvidia-smi -i "${GPU:-0}" --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms "$sample_ms" > "$out/sm.txt" &
sampler=$!
started=$(date +%s.%N)
timeout "$limit" python3 -m ctxscale.cli sweep "$spec" "$@" --quiet --results "$out/results" > "$out/sweep.txt" 2>&1
rc=$?
ended=$(date +%s.%N)
kill "$sampler"
python3 - "$out" "$spec" "$started" "$ended" "$rc" "$sample_ms" "$mps" <<'PY'
import sys
from pathlib import Path
import yaml
from ctxscale import load_results
from ctxscale.tables import best_loss_table
out, spec, started, ended, rc = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
sample_s, mps = float(sys.argv[6]) / 1000, sys.argv[7]
samples = [float(v) for v in Path(out, "sm.txt").read_text().split() if v.strip()]
name = yaml.safe_load(Path(spec).read_text())["name"]
try:
    trials = load_results(Path(out, "results"), sweep=name)
    counts = trials["status"].value_counts().to_dict()
except Exception as err:  # nothing stored yet
    trials, counts = None, {"error": str(err)[:200]}
print(f"{spec}: exit {rc}, {ended - started:.1f} s wall, stored {counts}, "
      f"mean SM use {sum(samples) / max(len(samples), 1):.1f} % over {len(samples)} samples, MPS {mps}")
if trials is not None and len(trials):
    # two runs of one spec stop early at different steps: GPU-busy time per unit trained compares
    # them where the wall time alone would not
    unit = "step" if "step" in trials and trials["step"].notna().any() else "epoch"
    trained = float(trials.loc[trials["status"] == "ok", unit].sum())
    busy_s = sum(v > 0 for v in samples) * sample_s
    if trained:
        print(f"GPU busy (a kernel running) {busy_s:.1f} s; {trained:,.0f} {unit}s trained in all: "
              f"{1e3 * busy_s / trained:.2f} ms of busy GPU per {unit}")
    print(best_loss_table(trials))
PY
tail -5 "$out/sweep.txt"
tar czf "$out/results.tgz" -C "$out" --exclude=_ray --exclude=tensorboard results && rm -rf "$out/results"
