#!/usr/bin/env bash
# A sweep longer than one call to the GPU machine (10 min each), run over several calls: each call
# restores the results of the one before, runs the same command until SECONDS pass, and returns the
# results folder (rows, history and Ray's checkpoints) as $OUT/results.tgz.aa, .ab, ... (parts of
# 15 MiB: a file over 16 MiB does not come back). Stopped trials go on from their last checkpoint at
# the next call (README, "Stopping and resuming"); finished points are skipped. Before a call after
# the first, join the parts: cat results.tgz.?? > .devcarry/results.tgz. (A call to a machine still
# warm finds the results folder of the call before in place, and this restores nothing older.)
#   bash bench/gpu_resume.sh SPEC [SECONDS, default 540] [KEY=VALUE overrides ...]
# e.g. from the `run` tool, with carry [".devcarry"]:
#   bash bench/gpu_resume.sh sweeps/parity-paper.yaml 540 training.epochs=60
# What travels both ways must fit the carry limit (64 MiB with the Ray bundle): a parity-paper
# checkpoint is ~20 MB; a GPT checkpoint of the study's model is ~1 GB and does not fit.
set -u
spec=$1; limit=${2:-540}; shift $(( $# < 2 ? $# : 2 ))
out=${OUT:-/tmp/gpu_resume}; mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ! python3 -c "import ray" 2>/dev/null; then  # the GPU image has no Ray: the bundle (gpu.md)
  bash .devcarry/ray-unpack.sh || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
name=$(python3 -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$spec")
if [ -d "results/$name" ]; then
  echo "results/$name is here already (a warm machine): nothing restored"
elif [ -f .devcarry/results.tgz ]; then
  tar xzf .devcarry/results.tgz && echo "restored: $(tar tzf .devcarry/results.tgz | grep -c '/trials/.*parquet') trials files," \
    "$(tar tzf .devcarry/results.tgz | grep -c '/checkpoint_[0-9]*/$') checkpoints"
fi
started=$(date +%s)
# SIGINT first: Tune stops the trials and the store writes what they reported; then SIGKILL after 60 s
timeout -s INT -k 60 "$limit" python3 -m ctxscale.cli sweep "$spec" "$@" --results results > "$out/sweep.txt" 2>&1
echo "exit $? after $(( $(date +%s) - started )) s" | tee -a "$out/sweep.txt"
tar czf - --exclude=tensorboard "results/$name" | split -b 15M - "$out/results.tgz."
ls -la "$out"/results.tgz.*
grep -E "going on from|step [0-9]+: loss|l=|^ran " "$out/sweep.txt" | tail -40
