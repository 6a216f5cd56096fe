#!/usr/bin/env bash
# One sweep carried over several time-limited jobs (a cluster's wall-time limit): each job restores
# the results folder that the job before archived, runs the same `ctxscale sweep` until its time is
# nearly up, stops it as Ctrl-C would, and archives the folder again for the next job.
#
#   bash bench/gpu_resume.sh SPEC [SECONDS, default 540] [KEY=VALUE overrides ...]
#
# - SECONDS: how long the sweep may run. Leave a margin under the job's limit for starting, for the
#   stop (up to 60 s) and for archiving.
# - At SECONDS the sweep gets SIGINT: Tune stops its trials and the store keeps what they reported
#   (README, "Stopping and resuming"). The next job skips the finished points and starts each
#   stopped one from its last checkpoint (GPT and parity trials save them: `training.checkpoint_every_s`).
# - The archive ($ARCHIVE, default <sweep name>.tar here) holds the sweep's results folder: its rows,
#   its history and Ray's checkpoints under _ray/ (not the TensorBoard files), uncompressed: model
#   weights do not compress, and gzip of gpt2-gpu's 25 trial checkpoints (~150 MB each) ran
#   past 75 s on one H100 machine. Keep it on storage that outlives the job; an older .tgz
#   archive restores as well. A results folder already in place (a job on the same machine and disk)
#   is used as it is. $RESULTS is the results root (default: results); $PYTHON the interpreter.
# - Changing a training field changes config_hash, and a new hash starts afresh.
# - A parity-paper checkpoint is ~20 MB; one of the study's GPT models ~1 GB.
# Exit status: 0 when the sweep finished, 124 when the time ran out (submit the same job again).
# E.g. a SLURM job of 10 minutes, submitted until it exits 0:
#   sbatch --time=00:10:00 --gres=gpu:1 --wrap "bash bench/gpu_resume.sh sweeps/parity-paper.yaml 480 training.epochs=60"
set -u
spec=$1; limit=${2:-540}; shift $(( $# < 2 ? $# : 2 ))
python=${PYTHON:-python3}; results=${RESULTS:-results}
name=$("$python" -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$spec") || exit 2
archive=$(realpath -m "${ARCHIVE:-$name.tar}")
export PYTHONUNBUFFERED=1
mkdir -p "$results"
if [ -d "$results/$name" ]; then
  echo "$results/$name is in place: nothing restored"
elif [ -f "$archive" ]; then
  tar -C "$results" -xf "$archive" || exit 2  # GNU tar reads a gzipped (older) archive as well
  echo "restored $results/$name from $archive: $(tar tf "$archive" | grep -c '/trials/.*parquet') trials files," \
    "$(tar tf "$archive" | grep -c '/checkpoint_[0-9]*/$') checkpoints"
fi
started=$(date +%s)
# SIGINT first, as Ctrl-C: the trials stop and what they reported is stored; SIGKILL 60 s later
timeout -s INT -k 60 "$limit" "$python" -m ctxscale.cli sweep "$spec" "$@" --results "$results"
rc=$?
echo "exit $rc after $(( $(date +%s) - started )) s"
# written aside and then moved: a job killed while archiving leaves the last archive whole
tar -C "$results" -cf "$archive.part" --exclude=tensorboard "$name" && mv "$archive.part" "$archive" || exit 2
echo "archived $results/$name to $archive ($(du -h "$archive" | cut -f1))"
exit $rc
