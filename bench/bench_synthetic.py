"""Benchmark: the synthetic set written row by row in pure Python vs `ctxscale.data.synthetic.write_cli`.

    python bench/bench_synthetic.py [--rows 12000000] [--ref-rows 200000]

Every measurement runs in its own child interpreter so that peak memory (ru_maxrss) belongs to
that measurement alone. Imports are done before anything is measured. Peak bytes per row =
(child's ru_maxrss at the end - its resident size just before the timed call) / rows. The
vectorised path is also measured with tracemalloc (peak of allocations during the call; numpy
reports its buffers to tracemalloc) and against an interpreter that only imported numpy.

The pure-Python reference follows the per-row style of the study's scripts: a list of random bits
per row from `random`, the label from two of them, appended to Python lists, with a set of
strings seen so far to keep rows distinct. It only generates (writes no file); its time is
measured on --ref-rows rows and extrapolated linearly to --rows.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def reference_generate(rows: int, tasks: list, string_length: int = 100, seed: int = 0):
    import random

    rnd = random.Random(seed)
    strings, labels, seen = [], [], set()
    for i in range(rows):
        while True:
            bits = [rnd.randint(0, 1) for _ in range(string_length)]
            key = tuple(bits)
            if key not in seen:
                break
        seen.add(key)
        l, a = tasks[i % len(tasks)]
        if l <= string_length and a <= string_length:
            labels.append(bits[a - 1] ^ bits[l - 1])
        else:
            labels.append(rnd.randint(0, 1))
        strings.append(bits)
    return strings, labels


def _maxrss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _rss_bytes() -> int:
    import os

    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(args) -> dict:
    """Runs inside the child interpreter; returns what the parent prints."""
    if args.child == "bare":
        return {"maxrss": _maxrss_bytes()}
    if args.child == "numpy":
        import numpy  # noqa: F401  (the baseline of the vectorised path)

        return {"maxrss": _maxrss_bytes()}
    # Imports happen before anything is measured: write_cli imports ctxscale.spec.synthetic for
    # the task list, and whatever ctxscale.spec pulls in is not the generator's cost.
    import numpy  # noqa: F401

    started = time.perf_counter()
    from ctxscale.spec.synthetic import load_task_list

    import_seconds = time.perf_counter() - started
    tasks = load_task_list(args.tasks)
    before = _rss_bytes()
    if args.child == "reference":
        started, cpu = time.perf_counter(), time.process_time()
        reference_generate(args.rows, tasks, seed=args.seed)
        return {
            "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu,
            "maxrss": _maxrss_bytes(), "before": before,
        }

    from ctxscale.data.synthetic import write_cli

    if args.child == "vectorised-tracemalloc":
        import tracemalloc

        tracemalloc.start()
        write_cli(args.rows, args.out, seed=args.seed, tasks=args.tasks)
        return {"traced_peak": tracemalloc.get_traced_memory()[1]}
    started, cpu = time.perf_counter(), time.process_time()
    summary = write_cli(args.rows, args.out, seed=args.seed, tasks=args.tasks)
    return {
        "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu,
        "maxrss": _maxrss_bytes(), "before": before,
        "summary": summary, "import_seconds": import_seconds,
    }


def _run_child(kind: str, rows: int, args, out: str = "") -> dict:
    command = [
        sys.executable, __file__, "--child", kind, "--rows", str(rows),
        "--seed", str(args.seed), "--tasks", args.tasks, "--out", out,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"child {kind} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=12_000_000, help="rows (train + val) of the vectorised run")
    parser.add_argument("--ref-rows", type=int, default=200_000, help="rows the pure-Python reference really draws")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", default="study50")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args)))
        return

    bare = _run_child("bare", 0, args)["maxrss"]
    with_numpy = _run_child("numpy", 0, args)["maxrss"]
    reference = _run_child("reference", args.ref_rows, args)
    with tempfile.TemporaryDirectory(prefix="bench-synthetic-") as scratch:
        fast = _run_child("vectorised", args.rows, args, out=str(Path(scratch) / "timed"))
        traced = _run_child("vectorised-tracemalloc", args.rows, args, out=str(Path(scratch) / "traced"))

    ref_rate = args.ref_rows / reference["seconds"]
    fast_rate = args.rows / fast["seconds"]
    ref_bytes = (reference["maxrss"] - reference["before"]) / args.ref_rows
    fast_bytes = (fast["maxrss"] - fast["before"]) / args.rows
    fast_bytes_numpy = (fast["maxrss"] - with_numpy) / args.rows
    traced_bytes = traced["traced_peak"] / args.rows

    print(f"python {sys.version.split()[0]}, tasks={args.tasks}, string_length=100, seed={args.seed}")
    print(f"baselines: bare interpreter {bare / 2**20:.1f} MiB, after `import numpy` {with_numpy / 2**20:.1f} MiB")
    print()
    header = f"{'path':<34}{'rows run':>12}{'seconds':>10}{'rows/s':>13}{f'secs for {args.rows:,}':>22}{'peak B/row':>12}"
    print(header)
    print("-" * len(header))
    print(
        f"{'pure Python, per row (reference)':<34}{args.ref_rows:>12,}{reference['seconds']:>10.2f}"
        f"{ref_rate:>13,.0f}{args.rows / ref_rate:>19,.0f} (x){ref_bytes:>12,.0f}"
    )
    print(
        f"{'vectorised write_cli':<34}{args.rows:>12,}{fast['seconds']:>10.2f}"
        f"{fast_rate:>13,.0f}{fast['seconds']:>22,.2f}{fast_bytes:>12.1f}"
    )
    print()
    print(f"speed-up: {fast_rate / ref_rate:,.0f}x  ((x) = extrapolated linearly from {args.ref_rows:,} rows)")
    print(
        f"CPU seconds of the timed calls (less sensitive to other load on the machine): reference "
        f"{reference['cpu_seconds']:.2f}, vectorised {fast['cpu_seconds']:.2f}"
    )
    print(
        "peak B/row = (child's ru_maxrss at the end - its resident size just before the timed call, "
        "imports done) / rows"
    )
    print(
        f"vectorised, other measures of the same peak: tracemalloc (allocations during the call) "
        f"{traced_bytes:.1f} B/row; ru_maxrss - interpreter that only imported numpy {fast_bytes_numpy:.1f} B/row "
        f"(this one also counts the imports)"
    )
    print(
        f"write_cli writes {fast['summary']['bytes_per_row']:.1f} B/row (bits 13 + label 1); the reference "
        "writes no file"
    )
    print(
        f"not in the timings: `import ctxscale.spec.synthetic` (task list loader) took "
        f"{fast['import_seconds']:.2f} s; whole vectorised child process {fast['process_seconds']:.2f} s"
    )


if __name__ == "__main__":
    main()
