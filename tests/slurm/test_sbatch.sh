#!/usr/bin/env bash
# launch/slurm_fit.sbatch under a real SLURM (tests/slurm/cluster.sh brings one up on this machine), 2 tasks:
#   1. a plain job trains to the end: COMPLETED, exit 0, history, plot and weights written;
#   2. the same job stopped with SIGUSR1 (what `#SBATCH --signal=USR1@60` sends before the time limit): the ranks
#      write a checkpoint and exit 75, the script requeues the job, the requeued job resumes and ends with the same
#      history.csv and weights, byte for byte, as job 1;
#   3. a job with a missing data file: FAILED with exit code 1 and one error naming the file, in seconds.
#   4. srun as a person runs it: SIGUSR1 to srun, and Ctrl-C (SIGINT) to `srun -X`, reach every task, which write a
#      checkpoint and exit 75, and srun exits 75; a single Ctrl-C to a plain srun only makes srun print the tasks'
#      state (SLURM's rule), the training goes on; SIGTERM to srun is SLURM's "forcing job termination": the tasks
#      are killed, no stop line.
#   usage: tests/slurm/test_sbatch.sh SOURCE_DIR SHARDFIT_BIN      (exit 77: skipped, the cluster needs root)
set -euo pipefail
src=$(cd "${1:?usage: test_sbatch.sh SOURCE_DIR SHARDFIT_BIN}" && pwd)
SHARDFIT_BIN=$(realpath "${2:?usage: test_sbatch.sh SOURCE_DIR SHARDFIT_BIN}")
export SHARDFIT_BIN
cluster=${TMPDIR:-/tmp}/shardfit_slurm_cluster
work=$(mktemp -d "${TMPDIR:-/tmp}/shardfit_slurm_XXXXXX")

up_status=0
bash "$src/tests/slurm/cluster.sh" up "$cluster" || up_status=$?
if [ "$up_status" -ne 0 ]; then
  rm -rf "$work"
  exit "$up_status"  # 77: skipped (not root)
fi
trap 'bash "$src/tests/slurm/cluster.sh" down "$cluster"; rm -rf "$work"' EXIT
export SLURM_CONF=$cluster/slurm.conf
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
now() { date +%s.%N; }
since() { awk -v start="$1" -v end="$(now)" 'BEGIN { printf "%.1f", end - start }'; }
field() { scontrol show job "$1" | grep -o " $2=[^ ]*" | head -n 1 | cut -d= -f2; }

# stepds [JOB]: the slurmstepd processes of this test's SLURM (of job JOB when given): those in this network
# namespace. A SLURM whose nodes are namespace hosts (tests/slurm/test_three_nodes.sh) may run beside it, with job
# ids of its own.
stepds() {
  local pid net
  net=$(readlink /proc/self/ns/net)
  for pid in $(pgrep -f "slurmstepd: \[${1:+$1\.}"); do
    [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$net" ] && echo "$pid"
  done
  return 0
}

# wait_until JOB SECONDS STATE...: polls (faster than sbatch --wait) until the job is in one of the states.
wait_until() {
  local job=$1 seconds=$2 state
  shift 2
  for _ in $(seq 1 $((seconds * 20))); do
    state=$(field "$job" JobState)
    for want in "$@"; do [ "$state" = "$want" ] && return 0; done
    sleep 0.05
  done
  fail "job $job is $state after $seconds s, expected one of: $*"
  scontrol show job "$job"
  return 1
}

# job NAME DATA_X: a folder with a job file; 40 epochs of 90 steps on the bundled digits, a checkpoint every 10 steps.
job() {
  mkdir -p "$work/$1"
  cat >"$work/$1/job.pbtxt" <<JOB
model {
  layers { dense { units: 256 activation: "relu" } }
  layers { dense { units: 10 activation: "softmax" } }
}
loss: "sparse_categorical_crossentropy"
metrics: "accuracy"
optimizer { adam { learning_rate: 0.001 } }
fit { epochs: 40 batch_size: 16 validation_split: 0.2 seed: 7 }
data { train { x { path: "$2" } y { path: "$src/examples/digits/y.npy" } } }
outputs {
  history_dir: "$work/$1/out"
  checkpoint_every_steps: 10
  export_weights: "$work/$1/out/weights.npz"
}
JOB
}
submit() {
  sbatch --parsable --ntasks=2 --cpus-per-task=1 --chdir="$work/$1" --output="$work/$1/slurm.out" \
    "$src/launch/slurm_fit.sbatch" "$work/$1/job.pbtxt"
}
show_output() {  # slurm.out of an sbatch job, srun.out of an srun started here
  echo "---- $1"
  cat "$work/$1/slurm.out" "$work/$1/srun.out" 2>/dev/null | grep -v '━' || true
  echo "----"
}

echo "== 1. a plain job"
start=$(now)
job plain "$src/examples/digits/x.npy"
id=$(submit plain)
if wait_until "$id" 120 COMPLETED FAILED CANCELLED TIMEOUT; then
  out=$work/plain/slurm.out
  [ "$(field "$id" JobState)" = COMPLETED ] || fail "job $id is $(field "$id" JobState)"
  [ "$(field "$id" ExitCode)" = 0:0 ] || fail "job $id exit code $(field "$id" ExitCode), expected 0:0"
  grep -q "^shardfit: 2 rank(s) x 1 thread(s)" "$out" || fail "not 2 ranks x 1 thread"
  grep -q "^Epoch 40/40" "$out" || fail "no epoch 40 in the output"
  [ "$(cat "$work/plain/out/history.csv" 2>/dev/null | wc -l)" -eq 41 ] || fail "history.csv does not hold 40 epochs"
  for f in history.json run.json history.pb loss.svg weights.npz; do
    [ -s "$work/plain/out/$f" ] || fail "$f missing"
  done
  echo "job $id: $(field "$id" JobState), exit $(field "$id" ExitCode), $(since "$start") s"
fi
[ "$failures" -eq 0 ] || show_output plain

echo "== 2. the same job stopped by SIGUSR1, requeued, resumed"
start=$(now)
job stopped "$src/examples/digits/x.npy"
id=$(submit stopped)
checkpoint=$work/stopped/out/checkpoints/checkpoint.pb
for _ in $(seq 1 1200); do
  [ -e "$checkpoint" ] && break
  [ "$(field "$id" JobState)" = PENDING ] || [ "$(field "$id" JobState)" = RUNNING ] || break
  sleep 0.05
done
if [ -e "$checkpoint" ]; then
  # What --signal=USR1@60 does a minute before the time limit: SIGUSR1 to every task of the job's steps.
  scancel --signal=USR1 "$id"
  # A requeued job waits about 2 minutes (BeginTime) before it may start again; the test does not.
  for _ in $(seq 1 1200); do
    [ "$(field "$id" Restarts)" = 1 ] && [ "$(field "$id" JobState)" = PENDING ] && break
    sleep 0.05
  done
  echo "job $id: stopped and requeued after $(since "$start") s: $(field "$id" JobState), $(field "$id" Reason)"
  # Released early only once its first run is wholly gone (no slurmstepd of the job left, the node idle): a run
  # started while the old one is still being cleaned up fails to launch its step.
  for _ in $(seq 1 600); do
    [ -z "$(stepds "$id")" ] && [ "$(sinfo -h -o %T)" = idle ] && break
    sleep 0.05
  done
  scontrol update JobId="$id" StartTime=now || fail "job $id could not be released: not requeued (it is $(field "$id" JobState), $(field "$id" Restarts) restarts)"
  if wait_until "$id" 120 COMPLETED FAILED CANCELLED TIMEOUT; then
    out=$work/stopped/slurm.out
    [ "$(field "$id" JobState)" = COMPLETED ] || fail "job $id is $(field "$id" JobState)"
    [ "$(field "$id" ExitCode)" = 0:0 ] || fail "job $id exit code $(field "$id" ExitCode), expected 0:0"
    [ "$(field "$id" Restarts)" = 1 ] || fail "job $id restarted $(field "$id" Restarts) times, expected 1"
    grep -q "^stopped by signal after epoch .*: checkpoint written" "$out" || fail "no checkpoint at the stop"
    grep -q "^shardfit: checkpoint written before the time limit; requeueing job $id" "$out" ||
      fail "the script did not requeue"
    grep -q "^resuming from .*checkpoint.pb: epoch " "$out" || fail "the requeued job did not resume"
    grep -q "^Epoch 40/40" "$out" || fail "no epoch 40 in the output"
    for f in history.csv weights.npz; do
      cmp "$work/plain/out/$f" "$work/stopped/out/$f" || fail "$f differs from the uninterrupted job's"
    done
    echo "job $id: $(field "$id" JobState) after 1 requeue, $(since "$start") s; $(grep -o '^stopped by signal after epoch [0-9]* step [0-9]*' "$out");" \
      "history.csv and weights.npz identical to job 1's"
  fi
else
  fail "job $id wrote no checkpoint (state $(field "$id" JobState))"
fi
[ "$failures" -eq 0 ] || show_output stopped

echo "== 3. a job with a missing data file"
start=$(now)
job missing "$work/missing/no_such_x.npy"
id=$(submit missing)
if wait_until "$id" 60 COMPLETED FAILED CANCELLED TIMEOUT; then
  out=$work/missing/slurm.out
  [ "$(field "$id" JobState)" = FAILED ] || fail "job $id is $(field "$id" JobState), expected FAILED"
  [ "$(field "$id" ExitCode)" = 1:0 ] || fail "job $id exit code $(field "$id" ExitCode), expected 1:0"
  [ "$(grep -c "cannot open data file '$work/missing/no_such_x.npy'" "$out")" -eq 1 ] ||
    fail "the error naming the file is not printed exactly once"
  echo "job $id: $(field "$id" JobState), exit $(field "$id" ExitCode), $(since "$start") s:" \
    "$(grep -m 1 "^error on rank" "$out")"
fi
[ "$failures" -eq 0 ] || show_output missing

echo "== 4. srun itself signalled: SIGUSR1, Ctrl-C with srun -X, a single Ctrl-C to a plain srun, SIGTERM"
# srun_stop NAME SIGNAL [SRUN_FLAG]: starts the job with srun, signals srun once the first checkpoint is written;
# prints srun's exit status. A SIGINT to a plain srun is followed 2 s later by SIGUSR1, which stops the tasks. The
# jobs run 1000 epochs (about 35 s on an idle 2-core machine, 40 epochs take 1.3 s): long enough that every signal
# lands while they train, however fast the machine; each is stopped or killed within seconds.
srun_stop() {
  local name=$1 signal=$2 flag=${3:-} pid status
  job "$name" "$src/examples/digits/x.npy"
  # As in case 2: a step started while the previous job is still being cleaned up can fail to launch ("task launch
  # failed"), even once no job is left and the node is idle. Such a start is tried again, up to 3 times.
  for attempt in 1 2 3; do
    for _ in $(seq 1 600); do
      [ -z "$(squeue -h 2>/dev/null)" ] && [ -z "$(stepds)" ] && [ "$(sinfo -h -o %T)" = idle ] &&
        break
      sleep 0.05
    done
    # Job control on: a background command of a script otherwise starts with SIGINT ignored.
    set -m
    OMP_NUM_THREADS=1 srun --ntasks=2 --cpus-per-task=1 --mpi=pmix --chdir="$work/$name" $flag \
      "$SHARDFIT_BIN" fit "$work/$name/job.pbtxt" --epochs 1000 >"$work/$name/srun.out" 2>&1 </dev/null &
    pid=$!
    set +m
    for _ in $(seq 1 1200); do
      [ -e "$work/$name/out/checkpoints/checkpoint.pb" ] && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    [ -e "$work/$name/out/checkpoints/checkpoint.pb" ] && break
    wait "$pid" || true
    grep -q "launch failed" "$work/$name/srun.out" || break
    echo "srun $flag: the step failed to launch (attempt $attempt); trying again in 1 s" >&2
    sleep 1
  done
  kill "-$signal" "$pid" 2>/dev/null || true
  if [ "$signal" = INT ] && [ -z "$flag" ]; then
    sleep 2
    kill -0 "$pid" 2>/dev/null && touch "$work/$name/still_running_after_ctrl_c"
    kill -USR1 "$pid" 2>/dev/null || true
  fi
  status=0
  wait "$pid" || status=$?
  echo "$status"
}
for case in "USR1 srun_usr1" "INT srun_int -X" "INT srun_int_once" "TERM srun_term"; do
  read -r signal name flag <<<"$case"
  start=$(now)
  status=$(srun_stop "$name" "$signal" "${flag:-}")
  out=$work/$name/srun.out
  named=$signal
  [ "$name" = srun_int_once ] && named=USR1  # srun kept the Ctrl-C; the SIGUSR1 after it stopped the tasks
  if [ "$name" = srun_term ]; then
    [ "$status" != 0 ] && [ "$status" != 75 ] || fail "srun after SIGTERM: exit $status, expected the step killed"
    grep -q "forcing job termination" "$out" || fail "srun after SIGTERM: no 'forcing job termination'"
  else
    [ "$status" = 75 ] || fail "srun ${flag:-} after SIG$signal: exit $status, expected 75"
    [ "$(grep -c "^stopped by signal after epoch .*: checkpoint written to .* (SIG$named; exit 75" "$out")" -eq 1 ] ||
      fail "srun ${flag:-} after SIG$signal: not one stop line naming SIG$named"
  fi
  if [ "$name" = srun_int_once ]; then
    [ -e "$work/$name/still_running_after_ctrl_c" ] || fail "a single Ctrl-C to srun stopped the training"
  fi
  echo "srun ${flag:-}, SIG$signal: exit $status after $(since "$start") s;" \
    "$(grep -o '^stopped by signal after epoch [0-9]* step [0-9]*.*' "$out" | cut -d'(' -f2)"
  [ "$failures" -eq 0 ] || show_output "$name"
done

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed; the controller's log:"
  tail -n 30 "$cluster/log/slurmctld.log"
  exit 1
fi
echo "all SLURM checks passed"
