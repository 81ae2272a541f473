#!/usr/bin/env bash
# launch/mpirun_local.sh with more ranks than cores: every rank must be free to run on every core. Before the fix
# OpenMP pinned each unbound rank's thread to the first core, so all ranks shared CPU 0.
#   usage: tests/launch/test_mpirun_local.sh SOURCE_DIR SHARDFIT_BIN
set -euo pipefail
source_dir=$1
bin=$2
online=$(nproc)
if [ "$online" -lt 2 ]; then
  echo "skipped: one CPU, nothing to spread over"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$source_dir/examples/digits/mlp.pbtxt" "$source_dir/examples/digits/x.npy" "$source_dir/examples/digits/y.npy" \
  "$work/"
# Four ranks on two cores: the oversubscribed branch, whatever this machine has.
set +e
SHARDFIT_CORES=2 SHARDFIT_BIN=$bin timeout 120 bash "$source_dir/launch/mpirun_local.sh" 4 fit "$work/mlp.pbtxt" \
  --epochs 1 --verbose 2 --report-ranks --history "$work/out" >"$work/out.txt" 2>&1
status=$?
set -e
cat "$work/out.txt"
fail() {
  echo "FAILED: $*" >&2
  exit 1
}
[ "$status" -eq 0 ] || fail "mpirun_local.sh exited $status"
grep -q "oversubscribed" "$work/out.txt" || fail "the oversubscribed branch was not taken"
lines=$(grep -c '^\[rank [0-9]/4\]' "$work/out.txt" || true)
[ "$lines" -eq 4 ] || fail "expected 4 --report-ranks lines, got $lines"
# Each rank's thread may run on every CPU the launcher gave it: never a single CPU while several are online.
if grep -E '^\[rank [0-9]/4\].* on cpus [0-9]+, ' "$work/out.txt"; then
  fail "a rank is bound to a single CPU"
fi
if grep -E 'on 1 CPU \(' "$work/out.txt"; then
  fail "the placement warning says the ranks share one CPU"
fi
echo "ok: 4 ranks on 2 cores, none bound to a single CPU"
