#!/usr/bin/env bash
# Starts shardfit on this machine with mpirun: RANKS ranks, each with cores/RANKS OpenMP threads (at least 1),
# ranks bound to their own cores when there are enough (the binding is printed), unbound and yielding when not.
#   usage: launch/mpirun_local.sh RANKS fit JOB.pbtxt [flags]   (or any shardfit command: RANKS bench --model mlp)
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 RANKS fit JOB.pbtxt [flags]" >&2
  exit 2
fi
ranks=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SHARDFIT_BIN:-$root/build/launch/shardfit}
cores=${SHARDFIT_CORES:-$(nproc)}
threads=$((cores / ranks))
[ "$threads" -ge 1 ] || threads=1

flags=(-np "$ranks" -x OMP_NUM_THREADS="$threads")
if [ "$ranks" -le "$cores" ]; then
  # Each rank owns $threads cores; OpenMP pins its threads to them, one per core.
  flags+=(-x OMP_PROC_BIND=close -x OMP_PLACES=cores --map-by "slot:PE=$threads" --bind-to core --report-bindings)
else
  # More ranks than cores: binding would stack ranks on one core; let the OS schedule and make idle ranks yield.
  # OpenMP must not bind either: an unbound process sees every core as its places, and OMP_PROC_BIND would pin
  # each rank's thread to the first of them, CPU 0 on every rank. OMP_PROC_BIND=false leaves threads to the OS.
  flags+=(-x OMP_PROC_BIND=false --oversubscribe --bind-to none --mca mpi_yield_when_idle 1)
  echo "shardfit: $ranks ranks on $cores cores: oversubscribed, ranks not bound" >&2
fi
[ "$(id -u)" -ne 0 ] || flags+=(--allow-run-as-root)
echo "+ OMP_NUM_THREADS=$threads mpirun ${flags[*]} $bin $*" >&2

# Stopping: Open MPI's mpirun takes SIGINT (Ctrl-C) and SIGTERM as "abort the job": it sends the ranks SIGTERM,
# kills them a second later and exits 1 whatever they did. It forwards SIGUSR1, on which every rank finishes its
# step, rank 0 writes a checkpoint and the job exits 75. So mpirun runs in a process group of its own (set -m: the
# terminal's Ctrl-C reaches this script alone) with stdin from /dev/null (a background group reading the terminal
# would be stopped), and the first SIGINT / SIGTERM here becomes SIGUSR1 to mpirun. A second one aborts at once: the
# ranks (mpirun's children) get SIGKILL and the script exits 128 + the signal (130 for Ctrl-C); the last checkpoint
# on disk stays whole (it is replaced atomically). mpirun itself is not signalled again: Open MPI 4.1's mpirun
# crashes (SIGSEGV in PMIx_Finalize, exit 139, a backtrace) when a second SIGINT reaches it while it is already
# ending the job. When the ranks have already stopped, a second request changes nothing and the job's own status
# (75) stands. SIGUSR1 is passed on as it is; SIGHUP (the terminal closed) too, which aborts.
set -m
mpirun "${flags[@]}" "$bin" "$@" </dev/null &
mpirun_pid=$!
set +m
requests=0
aborted=0
# The ranks: mpirun's child processes (this machine only), from /proc, by process id.
ranks_of_mpirun() {
  cat /proc/"$mpirun_pid"/task/*/children 2>/dev/null || true
}
stop() {
  requests=$((requests + 1))
  if [ "$requests" -eq 1 ]; then
    printf '\nshardfit: SIG%s: stopping after this step with a checkpoint (exit 75); again to abort at once\n' "$1" >&2
    kill -USR1 "$mpirun_pid" 2>/dev/null || true
    return 0  # (a bare return in a trap handler returns the status before the trap: 130, and set -e ends the script)
  fi
  local pids
  pids=$(ranks_of_mpirun)
  [ -n "$pids" ] || return 0  # the ranks have stopped already: mpirun is ending the job
  printf '\nshardfit: SIG%s again: aborting, the ranks are killed (the last checkpoint on disk is whole)\n' "$1" >&2
  aborted=$(kill -l "$1")
  # shellcheck disable=SC2086  # one process id a word
  kill -KILL $pids 2>/dev/null || true
}
trap 'stop INT' INT
trap 'stop TERM' TERM
trap 'kill -USR1 "$mpirun_pid" 2>/dev/null || true' USR1
trap 'kill -HUP "$mpirun_pid" 2>/dev/null || true' HUP
status=0
while :; do
  wait "$mpirun_pid" && status=0 || status=$?
  kill -0 "$mpirun_pid" 2>/dev/null || break  # wait also returns when a trapped signal arrives
done
[ "$aborted" -eq 0 ] || exit $((128 + aborted))
exit "$status"
