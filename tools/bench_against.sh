#!/usr/bin/env bash
# Time the kernels of commit OLD against the working tree, alternately in one run (old, new, old, new), so
# that the ratios compare code on the same machine at the same moment:
#     bash tools/bench_against.sh OLD_COMMIT [ROUNDS]
# Prints the CPU, then bench_kernels.py's and bench_lif.py's tables for each side. The old commit is checked
# out as a git worktree under ${TMPDIR:-/tmp} (kept for the next call); both sides run the working tree's
# benchmark scripts (the same method on both sides), the old side importing the old fo_edge (tools/run_at.py).
set -euo pipefail
old=${1:?usage: bash tools/bench_against.sh OLD_COMMIT [ROUNDS]}
rounds=${2:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
tree="${TMPDIR:-/tmp}/fo-edge-at-$(git -C "$here" rev-parse --short "$old")"
[ -d "$tree" ] || git -C "$here" worktree add -q --detach "$tree" "$old"
lscpu | grep 'Model name' || true
for _ in $(seq "$rounds"); do
  echo "== $old: python tools/bench_kernels.py --seconds 2 --batches 1,8,32,64,128"
  (cd "$tree/tools" && python "$here/tools/run_at.py" "$tree" "$here/tools/bench_kernels.py" --seconds 2 \
     --batches 1,8,32,64,128)
  echo "== working tree: python tools/bench_kernels.py --seconds 2 --batches 1,8,32,64,128"
  (cd "$here/tools" && python bench_kernels.py --seconds 2 --batches 1,8,32,64,128)
done
echo "== $old: python tools/bench_lif.py"
(cd "$tree/tools" && python "$here/tools/run_at.py" "$tree" "$here/tools/bench_lif.py")
echo "== working tree: python tools/bench_lif.py"
(cd "$here/tools" && python bench_lif.py)
