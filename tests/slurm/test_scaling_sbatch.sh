#!/usr/bin/env bash
# launch/scaling.sbatch under a real single-node SLURM (tests/slurm/cluster.sh brings one up): 2 tasks x 1 CPU, so
# the sweep is 1 and 2 ranks, strong and weak, one srun a point; the job completes and its records, table and chart
# agree (tests/python/check_scaling.py), none oversubscribed.
#   usage: tests/slurm/test_scaling_sbatch.sh SOURCE_DIR SHARDFIT_BIN   (exit 77: skipped, the cluster needs root)
set -euo pipefail
src=$(cd "${1:?usage: test_scaling_sbatch.sh SOURCE_DIR SHARDFIT_BIN}" && pwd)
SHARDFIT_BIN=$(realpath "${2:?usage: test_scaling_sbatch.sh SOURCE_DIR SHARDFIT_BIN}")
export SHARDFIT_BIN
export SHARDFIT_ROOT=$src  # the sbatch script runs from SLURM's spool: where launch/scaling.sh is
python=/usr/bin/python3
[ -x "$python" ] || python=python3
cluster=${TMPDIR:-/tmp}/shardfit_slurm_cluster
work=$(mktemp -d "${TMPDIR:-/tmp}/shardfit_slurm_scaling_XXXXXX")

up_status=0
bash "$src/tests/slurm/cluster.sh" up "$cluster" || up_status=$?
if [ "$up_status" -ne 0 ]; then
  rm -rf "$work"
  exit "$up_status"  # 77: skipped (not root)
fi
trap 'bash "$src/tests/slurm/cluster.sh" down "$cluster"; rm -rf "$work"' EXIT
export SLURM_CONF=$cluster/slurm.conf
field() { scontrol show job "$1" | grep -o " $2=[^ ]*" | head -n 1 | cut -d= -f2; }
fail() {
  echo "FAIL: $*"
  echo "---- slurm.out"
  cat "$work/slurm.out" 2>/dev/null || true
  exit 1
}

id=$(sbatch --parsable --ntasks=2 --cpus-per-task=1 --chdir="$work" --output="$work/slurm.out" \
  "$src/launch/scaling.sbatch" --model mlp --modes "strong weak" --batch 32 --steps 2 --warmup-steps 1 \
  --out "$work/sweep")
state=""
for _ in $(seq 1 2400); do  # 120 s
  state=$(field "$id" JobState)
  case "$state" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL) break ;; esac
  sleep 0.05
done
cat "$work/slurm.out"
[ "$state" = COMPLETED ] || fail "job $id is $state, expected COMPLETED"
[ "$(field "$id" ExitCode)" = 0:0 ] || fail "job $id exit code $(field "$id" ExitCode), expected 0:0"
grep -q "^SLURM job $id: 2 task(s) x 1 CPU(s)" "$work/sweep/sweep.txt" || fail "sweep.txt does not name the allocation"
for point in strong_1x1 strong_2x1 weak_1x1 weak_2x1; do
  [ -s "$work/sweep/logs/$point.log" ] || fail "no log of the point $point"
done
"$python" "$src/tests/python/check_scaling.py" "$work/sweep" --modes "strong weak" --ranks "1 2" \
  --oversubscribed-from 3 || fail "the sweep's records, table and chart disagree"
echo "ok: scaling.sbatch swept 1 and 2 ranks in job $id"
