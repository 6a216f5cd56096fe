#!/usr/bin/env bash
# One sweep timed at two versions of the code, one after the other on the same machine: an earlier
# commit (the anchor) and this working tree. A speed change is judged against an anchor measured
# beside it, since machines of one kind differ from day to day.
#
#   bash bench/ab_sweep.sh OLD SECONDS SPEC [KEY=VALUE overrides ...]
#
# - OLD: a commit, checked out with `git worktree` into a temporary folder, or a folder that holds
#   that version's tree.
# - Each version runs its own copy of SPEC (a path from the repository root) with the same
#   overrides, through this tree's bench/gpu_sweep.sh, given SECONDS; `ctxscale from ...` in each
#   log says which package ran. The old tree gets a link to this tree's data/ (prepared corpora are
#   not in git).
# - Writes under ${OUT:-/tmp/ab_sweep}: old/ and new/ (gpu_sweep.sh's files each) and prints both
#   runs' first lines and the ratio of their wall times.
# E.g. the synthetic grid against the commit before a change:
#   bash bench/ab_sweep.sh HEAD~1 280 sweeps/synthetic-paper.yaml
set -u
old=$1; limit=$2; spec=$3; shift 3
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-/tmp/ab_sweep}
mkdir -p "$out"
if [ -d "$old" ]; then
    old_tree=$(cd "$old" && pwd)
else
    old_tree=$(mktemp -d)/old
    git -C "$here" worktree add --detach "$old_tree" "$old" >/dev/null 2>&1 || { echo "cannot check out $old" >&2; exit 2; }
    trap 'git -C "$here" worktree remove --force "$old_tree"' EXIT
fi
if [ -d "$here/data" ] && [ ! -e "$old_tree/data" ]; then ln -s "$here/data" "$old_tree/data"; fi
wall() { sed -n 's/.* \([0-9.]*\) s wall.*/\1/p' "$1" | head -1; }
(cd "$old_tree" && PYTHONPATH="$old_tree${PYTHONPATH:+:$PYTHONPATH}" OUT="$out/old" \
    bash "$here/bench/gpu_sweep.sh" "$limit" "$spec" "$@" > "$out/old.txt" 2>&1)
(cd "$here" && PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" OUT="$out/new" \
    bash "$here/bench/gpu_sweep.sh" "$limit" "$spec" "$@" > "$out/new.txt" 2>&1)
for side in old new; do echo "== $side"; head -2 "$out/$side.txt"; done
python3 - "$(wall "$out/old.txt")" "$(wall "$out/new.txt")" <<'PY'
import sys
old, new = (float(v) if v else float("nan") for v in sys.argv[1:3])
print(f"wall: old {old:.1f} s, new {new:.1f} s, new / old = {new / old:.3f}")
PY
