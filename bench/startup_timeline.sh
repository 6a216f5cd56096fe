#!/usr/bin/env bash
# Where a sweep's first seconds go: the sweep through `ctxscale sweep` with every process's start,
# torch import, trainer import, CUDA initialisation and first device memory stamped
# (bench/timeline/sitecustomize.py), the CLI's lines stamped as they come, and the GPU's SM use
# sampled every 250 ms with nvidia-smi's own clock. Prints the events in time order, the first
# sample with a kernel running, the mean SM use per stretch of the run, and the sweep's last lines.
#
#   bash bench/startup_timeline.sh [seconds allowed, default 300] [spec, default sweeps/synthetic-paper.yaml] [KEY=VALUE ...]
#
# Writes under ${OUT:-/tmp/startup_timeline}: timeline.txt (every line, seconds from the start),
# sm.txt (the samples) and the results folder.
set -u
limit=${1:-300}; spec=${2:-sweeps/synthetic-paper.yaml}; shift $(( $# < 2 ? $# : 2 ))
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-/tmp/startup_timeline}
mkdir -p "$out"; rm -rf "$out/results"
: > "$out/sm.txt"; sampler=
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu --format=csv,noheader,nounits -lms 250 > "$out/sm.txt" &
    sampler=$!
fi
started=$(date +%s.%N)
CTXSCALE_TIMELINE=1 PYTHONPATH="$here/timeline${PYTHONPATH:+:$PYTHONPATH}" timeout "$limit" \
    python3 -m ctxscale.cli sweep "$spec" "$@" --results "$out/results" 2>&1 | python3 -c '
import re, sys, time
started = float(sys.argv[1])
for line in sys.stdin:
    stamp = re.search(r"TL (\d+\.\d+)", line)  # the probe says when; other lines are stamped on arrival
    seconds = (float(stamp.group(1)) if stamp else time.time()) - started
    print(f"{seconds:8.2f} {line.rstrip()}", flush=True)
' "$started" > "$out/timeline.txt"
[ -n "$sampler" ] && kill "$sampler"
python3 - "$out" "$started" <<'PY'
import re, sys
from datetime import datetime
from pathlib import Path
out, started = Path(sys.argv[1]), float(sys.argv[2])
events = [line for line in (out / "timeline.txt").read_text().splitlines() if re.search(r"TL \d|ctxscale: ", line)]
for line in sorted(events, key=lambda line: float(line.split()[0])):
    print(re.sub(r"TL \d+\.\d+ ", "", line)[:150])
samples = []
for line in (out / "sm.txt").read_text().splitlines():
    when, use = (field.strip() for field in line.split(","))
    moment = datetime.strptime(when, "%Y/%m/%d %H:%M:%S.%f").timestamp()  # nvidia-smi writes local time
    samples.append((moment - started, float(use)))
busy = [t for t, use in samples if use > 0]
print(f"first sample with a kernel running: {busy[0]:.2f} s" if busy else
      "no kernel seen" if samples else "no SM samples (no nvidia-smi)")
end = samples[-1][0] if samples else 0.0
edges = [0.0] + ([busy[0]] if busy else []) + [t for t in range(30, int(end) + 1, 30) if not busy or t > busy[0]] + [end]
for low, high in zip(edges, edges[1:]):
    window = [use for t, use in samples if low <= t < high]
    if window:
        print(f"{low:6.1f}-{high:6.1f} s: mean SM use {sum(window) / len(window):5.1f} %")
PY
tail -3 "$out/timeline.txt"
