#!/usr/bin/env bash
# launch/slurm_fit.sbatch on a three-node SLURM whose nodes are namespace hosts (launch/cluster/netns.sh and
# launch/cluster/slurm.sh), one rank a node over TCP, started by `sbatch -N 3` as a user would:
#   1. a plain job trains to the end: COMPLETED, exit 0, its ranks on the 3 nodes (--report-ranks), history.json and
#      the plot written, and every epoch's loss and val_loss within 1e-5 (relative, the P-ranks tolerance of
#      tests/dist/train/test_fit.cpp) of a 1-rank mpirun run of the same job (the same global batch) on this host;
#   2. the rank on node 3 killed with SIGKILL mid-epoch: srun --kill-on-bad-exit ends the others and the job FAILS
#      within seconds, nothing of it left running on any node.
#   usage: tests/slurm/test_three_nodes.sh SOURCE_DIR SHARDFIT_BIN
# Exit 77 (skipped) when not root or not allowed to make network namespaces. Whatever happens, the daemons, the
# hosts and every process in them are removed on exit. Its SLURM lives in its own hosts and temporary folder, so it
# may run beside tests/slurm/test_sbatch.sh's single-node one.
set -euo pipefail
src=$(cd "${1:?usage: test_three_nodes.sh SOURCE_DIR SHARDFIT_BIN}" && pwd)
bin=$(realpath "${2:?usage: test_three_nodes.sh SOURCE_DIR SHARDFIT_BIN}")
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIPPED: the SLURM daemons and the namespace hosts need root (running as uid $(id -u))"
  exit 77
fi
export SHARDFIT_NETNS_PREFIX=sf$$-
netns=$src/launch/cluster/netns.sh
slurm=$src/launch/cluster/slurm.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/shardfit_slurm3_XXXXXX")
cluster=$work/cluster
local_pid=""
cleanup() {
  # The daemons first (they would restart what is killed under them), then everything left in the hosts (the
  # jobs' slurmstepd and ranks, by pid), then the hosts.
  bash "$slurm" down "$cluster" || true
  bash "$netns" down || true
  if [ -n "$local_pid" ]; then kill -9 "$local_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
fail() {
  echo "FAIL: $*"
  for f in "$work"/*/slurm.out "$work"/*.out; do
    [ -e "$f" ] && { echo "---- $f"; grep -v '━' "$f" | tail -n 40; }
  done
  [ -d "$cluster/log" ] && tail -n 20 "$cluster"/log/*.log
  exit 1
}
now() { date +%s.%N; }
since() { awk -v start="$1" -v end="$(now)" 'BEGIN { printf "%.2f", end - start }'; }
in_slurm() { bash "$slurm" run "$cluster" "$@"; }
field() { in_slurm scontrol show job "$1" | grep -o " $2=[^ ]*" | head -n 1 | cut -d= -f2; }

# wait_until JOB SECONDS STATE...: polls (faster than sbatch --wait) until the job is in one of the states.
wait_until() {
  local job=$1 seconds=$2 state=""
  shift 2
  for _ in $(seq 1 $((seconds * 10))); do
    state=$(field "$job" JobState)
    for want in "$@"; do [ "$state" = "$want" ] && return 0; done
    sleep 0.1
  done
  fail "job $job is $state after $seconds s, expected one of: $*"
}

bash "$netns" reap  # hosts a killed earlier run left behind (its pid is gone)
if ! unshare --net true 2>/dev/null; then
  echo "SKIPPED: root, but not allowed to make network namespaces here (a container without CAP_SYS_ADMIN?)"
  exit 77
fi
bash "$netns" up 3
bash "$slurm" up "$cluster" 1

cp "$src/examples/digits/x.npy" "$src/examples/digits/y.npy" "$work/"

# job NAME EPOCHS: the digits MLP, global batch 100 (not a multiple of 3: the slices differ by a sample, as in the
# P-ranks tests); every node reads the same files (one filesystem), rank 0 writes to NAME/out.
job() {
  mkdir -p "$work/$1"
  cat >"$work/$1/job.pbtxt" <<JOB
model {
  layers { dense { units: 64 activation: "relu" } }
  layers { dense { units: 10 activation: "softmax" } }
}
loss: "sparse_categorical_crossentropy"
metrics: "accuracy"
optimizer { adam { learning_rate: 0.001 } }
fit { epochs: $2 batch_size: 100 validation_split: 0.2 shuffle: true seed: 11 }
data { train { x { path: "$work/x.npy" } y { path: "$work/y.npy" } } }
outputs { history_dir: "$work/$1/out" }
JOB
}
# submit NAME: the job script as a user submits it, one task (rank) on each of the 3 nodes; sbatch passes on the
# binary to run (SHARDFIT_BIN) and the Open MPI settings of `slurm.sh run` (--export=ALL).
submit() {
  in_slurm env SHARDFIT_BIN="$bin" sbatch --parsable -N 3 --ntasks-per-node=1 --cpus-per-task=1 --time=2 \
    --chdir="$work/$1" --output="$work/$1/slurm.out" "$src/launch/slurm_fit.sbatch" "$work/$1/job.pbtxt" --report-ranks --verbose 2
}

# The ranks say where they run (--report-ranks): one on each of the 3 nodes, or the test proves nothing.
check_three_nodes() {
  local out=$1 hosts
  hosts=$(sed -n 's/^\[rank [0-9]\/3\] host \([^,]*\),.*/\1/p' "$out" | sort -u | tr '\n' ' ')
  [ "$(echo "$hosts" | wc -w)" -eq 3 ] || fail "the ranks did not run on 3 nodes: '$hosts'"
  for i in 1 2 3; do
    echo "$hosts" | grep -q "${SHARDFIT_NETNS_PREFIX}h$i" ||
      fail "no rank on node ${SHARDFIT_NETNS_PREFIX}h$i: '$hosts'"
  done
  echo "ranks on nodes: $hosts"
}

echo "== 1. a plain job on 3 nodes, against 1 rank on this host"
start=$(now)
job three 3
id=$(submit three)
wait_until "$id" 90 COMPLETED FAILED CANCELLED TIMEOUT NODE_FAIL OUT_OF_MEMORY
echo "job $id: $(field "$id" JobState), exit $(field "$id" ExitCode), nodes $(field "$id" NodeList)," \
  "$(since "$start") s"
[ "$(field "$id" JobState)" = COMPLETED ] || fail "job $id is $(field "$id" JobState)"
[ "$(field "$id" ExitCode)" = 0:0 ] || fail "job $id exit code $(field "$id" ExitCode), expected 0:0"
check_three_nodes "$work/three/slurm.out"
grep -q "^shardfit: 3 rank(s) x 1 thread(s)" "$work/three/slurm.out" || fail "not 3 ranks x 1 thread"
for f in history.json loss.svg; do
  [ -s "$work/three/out/$f" ] || fail "$f not written"
done
start=$(now)
job one 3
# In the background, so that a signal to this script (CTest's timeout) runs the cleanup at once.
SHARDFIT_BIN=$bin SHARDFIT_CORES=1 bash "$src/launch/mpirun_local.sh" 1 fit "$work/one/job.pbtxt" --verbose 2 \
  >"$work/one.out" 2>&1 </dev/null &
local_pid=$!
status=0
wait "$local_pid" || status=$?
local_pid=""
[ "$status" -eq 0 ] || fail "the 1-rank run on this host exited $status"
echo "1 rank on this host: $(since "$start") s"
/usr/bin/python3 "$src/tests/python/compare_histories.py" "$work/three/out/history.json" "3 nodes" "$work/one/out/history.json" "1 rank" 3 ||
  fail "the histories differ"
echo "ok: 3 SLURM nodes train as 1 rank does"

echo "== 2. the rank on node 3 killed mid-epoch"
# Long enough that the kill lands mid-training on any machine; ended by the kill within seconds.
job killed 2000
id=$(submit killed)
out=$work/killed/slurm.out
for _ in $(seq 1 600); do
  grep -q '^Epoch 2/' "$out" 2>/dev/null && break
  case $(field "$id" JobState) in PENDING | CONFIGURING | RUNNING) ;; *) fail "job $id ended before the kill" ;; esac
  sleep 0.1
done
grep -q '^Epoch 2/' "$out" || fail "no epoch 2 within 60 s"
check_three_nodes "$out"
victim=""
for pid in $(bash "$netns" pids 3); do
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = shardfit ] && victim=$pid
done
[ -n "$victim" ] || fail "no shardfit process on node 3"
start=$(now)
kill -9 "$victim"
wait_until "$id" 30 COMPLETED FAILED CANCELLED TIMEOUT NODE_FAIL OUT_OF_MEMORY
seconds=$(since "$start")
echo "killed rank pid $victim on node 3: job $id $(field "$id" JobState), exit $(field "$id" ExitCode) after $seconds s"
[ "$(field "$id" JobState)" = FAILED ] || fail "job $id is $(field "$id" JobState), expected FAILED"
# srun (--kill-on-bad-exit) sees the task die at once and sends the others SIGTERM, which shardfit takes as "stop
# after this step": with a peer gone that step never ends, and SLURM's SIGKILL follows KillWait (5 s) later.
awk -v s="$seconds" 'BEGIN { exit !(s < 5 + 7) }' || fail "the job took $seconds s to end, expected < 12 s"
grep -q "^srun: error: ${SHARDFIT_NETNS_PREFIX}h3: task 2: Killed" "$out" || fail "srun did not report task 2 killed"
# Nothing of the job left on any node (given a moment to exit): the daemons alone remain.
for i in 1 2 3; do
  left=""
  for _ in $(seq 1 100); do
    left=""
    for pid in $(bash "$netns" pids "$i"); do
      name=$(cat "/proc/$pid/comm" 2>/dev/null || true)
      case $name in slurmd | slurmctld | slurmscriptd | "") ;; *) left="$left $pid ($name)" ;; esac
    done
    [ -z "$left" ] && break
    sleep 0.1
  done
  [ -z "$left" ] || fail "node $i still runs:$left"
done
echo "ok: the killed rank failed the job, nothing left running on the 3 nodes"
