#!/usr/bin/env bash
# The real shardfit binary over TCP between 3 hosts (network namespaces, launch/cluster/netns.sh), one rank a host:
#   equivalence  per-epoch loss and val_loss (history.json) of the 3-host run equal a 1-host, 1-rank run of the
#                same global batch within 1e-5 relative, the P-ranks tolerance (tests/dist/train/test_fit.cpp);
#   kill         the rank on host 3 killed with SIGKILL mid-epoch: the whole job ends with a non-zero status within
#                seconds, and nothing of it is left running on any host;
#   links        the tools later cases build on: cut_link silences host 3 (a connect times out) until its link is
#                up again, and `netns.sh shape 1gbit` holds a TCP stream to about 1 Gbit/s;
#   sigstop      host 3's rank stopped with SIGSTOP: the watchdog (2 s / 4 s) ends the job non-zero within its
#                timeout plus a few seconds, a rank on hosts 1-2 naming where it waits, nothing left running;
#   linkdrop     host 3's link cut mid-epoch (and left cut): the job ends by itself, non-zero, within the
#                watchdog's abort time plus a few seconds (about 7 s against 10 s), mpirun naming the lost host, the
#                ranks of hosts 1-2 saying where they wait when its SIGTERM reaches them, and
#                nothing is left running on any host, host 3 included: the keepalive of launch/cluster.tune (3 s
#                here) notices the silent host before the watchdog's warning (6 s here), as that file requires, and
#                the shipped file keeps that order for the watchdog's default warning.
#   usage: tests/cluster/test_three_hosts.sh equivalence|kill|links|linkdrop|sigstop SOURCE_DIR SHARDFIT_BIN
# Exit 77 (skipped) when not root or not allowed to make network namespaces. Whatever happens, the hosts and every
# process in them are removed on exit.
set -euo pipefail
case_name=${1:?usage: test_three_hosts.sh equivalence|kill|links|linkdrop|sigstop SOURCE_DIR SHARDFIT_BIN}
src=$(cd "${2:?source dir}" && pwd)
bin=$(realpath "${3:?shardfit binary}")
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIPPED: the namespace hosts need root (running as uid $(id -u))"
  exit 77
fi
export SHARDFIT_NETNS_PREFIX=sf$$-
netns=$src/launch/cluster/netns.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/shardfit_hosts_XXXXXX")
job_pid=""
cleanup() {
  # Everything in the hosts first (mpirun, orteds, ranks, by pid), then the hosts; the job's timeout and its
  # netns.sh, outside the hosts, end with them.
  bash "$netns" down || true
  if [ -n "$job_pid" ]; then
    for _ in $(seq 1 40); do kill -0 "$job_pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$job_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
fail() {
  echo "FAIL: $*"
  for f in "$work"/*.out; do
    [ -e "$f" ] && { echo "---- $f"; grep -v '━' "$f" | tail -n 40; }
  done
  exit 1
}
now() { date +%s.%N; }
since() { awk -v start="$1" -v end="$(now)" 'BEGIN { printf "%.2f", end - start }'; }

bash "$netns" reap  # hosts a killed earlier run left behind (its pid is gone)
if ! unshare --net true 2>/dev/null; then
  echo "SKIPPED: root, but not allowed to make network namespaces here (a container without CAP_SYS_ADMIN?)"
  exit 77
fi
bash "$netns" up 3
cp "$src/examples/digits/x.npy" "$src/examples/digits/y.npy" "$work/"

# job EPOCHS: the digits MLP, global batch 100 (not a multiple of 3: the slices differ by a sample, as in the
# P-ranks tests); every host reads the same files (one filesystem).
job() {
  cat >"$work/job.pbtxt" <<JOB
model {
  layers { dense { units: 64 activation: "relu" } }
  layers { dense { units: 10 activation: "softmax" } }
}
loss: "sparse_categorical_crossentropy"
metrics: "accuracy"
optimizer { adam { learning_rate: 0.001 } }
fit { epochs: $1 batch_size: 100 validation_split: 0.2 shuffle: true seed: 11 }
data { train { x { path: "x.npy" } y { path: "y.npy" } } }
JOB
}

# start_job NP SECONDS OUT ARGS...: `shardfit ARGS` on NP hosts (one rank each, one OpenMP thread: 3 ranks share
# 2 cores), in the background, so that a signal to this script (CTest's timeout) runs the cleanup at once; bash
# would run a trap only after a foreground command ends.
start_job() {
  timeout -k 5 "$2" bash "$netns" mpirun "$1" -x OMP_NUM_THREADS=1 "$bin" "${@:4}" >"$3" 2>&1 </dev/null &
  job_pid=$!
}
wait_job() {
  local status=0
  wait "$job_pid" || status=$?
  job_pid=""
  return "$status"
}

# Every rank says where it runs (--report-ranks): 3 distinct hosts, one rank each, or the test proves nothing.
check_three_hosts() {
  local out=$1 hosts
  hosts=$(sed -n 's/^\[rank [0-9]\/3\] host \([^,]*\),.*/\1/p' "$out" | sort -u | tr '\n' ' ')
  [ "$(echo "$hosts" | wc -w)" -eq 3 ] || fail "the ranks did not run on 3 hosts: '$hosts'"
  for i in 1 2 3; do
    echo "$hosts" | grep -q "${SHARDFIT_NETNS_PREFIX}h$i" ||
      fail "no rank on host ${SHARDFIT_NETNS_PREFIX}h$i: '$hosts'"
  done
  echo "ranks on hosts: $hosts"
}

# rank_pid I: the process id of the shardfit rank on host I (empty when none runs there).
rank_pid() {
  local pid
  for pid in $(bash "$netns" pids "$1"); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = shardfit ] && echo "$pid" && return 0
  done
  return 0
}
# cut_link I: host I's link goes down, silently (its peers are told nothing). The links case checks it; a training
# job with a cut link ends through Open MPI's keepalive (launch/cluster.tune), without it mpirun hangs for minutes.
cut_link() { bash "$netns" link "$1" down; }

if [ "$case_name" = links ]; then
  # reach I: host 1 gets an answer from host I (a refused connect is one); a cut link answers nothing.
  reach() {
    local answer
    answer=$(timeout 2 ip netns exec "${SHARDFIT_NETNS_PREFIX}h1" bash -c "exec 3<>/dev/tcp/10.77.0.$1/1" 2>&1 || true)
    [[ $answer == *refused* ]]
  }
  reach 3 || fail "host 3 does not answer before its link is cut"
  cut_link 3
  ! reach 3 || fail "host 3 still answers after cut_link 3"
  bash "$netns" link 3 up
  for _ in $(seq 1 50); do reach 3 && break; sleep 0.1; done
  reach 3 || fail "host 3 does not answer once its link is up again"
  echo "ok: cut_link 3 silences host 3, link 3 up brings it back"
  bash "$netns" shape 1gbit
  timeout -k 2 30 ip netns exec "${SHARDFIT_NETNS_PREFIX}h2" /usr/bin/python3 "$src/bench/tcp_throughput.py" \
    server 5001 &
  job_pid=$!
  gbits=$(timeout -k 2 30 ip netns exec "${SHARDFIT_NETNS_PREFIX}h1" /usr/bin/python3 \
    "$src/bench/tcp_throughput.py" client 10.77.0.2 5001 100) || fail "no TCP stream from host 1 to host 2"
  wait_job || true
  echo "one TCP stream at shape 1gbit: $gbits Gbit/s"
  # Unshaped, the same stream carries 6-24 Gbit/s on a 2-core machine; tbf lets a burst of 256 KiB through.
  awk -v g="$gbits" 'BEGIN { exit !(g > 0.3 && g < 1.3) }' || fail "shape 1gbit carried $gbits Gbit/s"
  echo "ok: shape 1gbit holds a stream to about 1 Gbit/s"
  exit 0
fi

if [ "$case_name" = equivalence ]; then
  job 3
  start=$(now)
  start_job 3 60 "$work/three.out" fit "$work/job.pbtxt" --report-ranks --verbose 2 --history "$work/three"
  wait_job || fail "the 3-host run exited $?"
  echo "3 hosts: $(since "$start") s"
  check_three_hosts "$work/three.out"
  start=$(now)
  # One rank on host 1, the same job file and global batch.
  start_job 1 60 "$work/one.out" fit "$work/job.pbtxt" --verbose 2 --history "$work/one"
  wait_job || fail "the 1-host run exited $?"
  echo "1 host, 1 rank: $(since "$start") s"
  /usr/bin/python3 "$src/tests/python/compare_histories.py" "$work/three/history.json" "3 hosts" "$work/one/history.json" "1 host" 3 ||
    fail "the histories differ"
  echo "ok: 3 hosts equal 1 host"
  exit 0
fi

# until_epoch2 OUT WHAT: waits until the job's output shows epoch 2 (training is under way on every host).
until_epoch2() {
  for _ in $(seq 1 600); do
    grep -q '^Epoch 2/' "$1" 2>/dev/null && break
    kill -0 "$job_pid" 2>/dev/null || fail "the job ended before $2"
    sleep 0.05
  done
  grep -q '^Epoch 2/' "$1" || fail "no epoch 2 within 30 s"
}

# nothing_left: no rank, no orted, on any host (given a moment to exit).
nothing_left() {
  local left
  for i in 1 2 3; do
    left=""
    for _ in $(seq 1 100); do
      left=$(bash "$netns" pids "$i" | tr '\n' ' ')
      [ -z "$left" ] && break
      sleep 0.05
    done
    [ -z "$left" ] ||
      fail "host $i still runs: $(for p in $left; do echo -n "$p ($(cat /proc/"$p"/comm 2>/dev/null)) "; done)"
  done
  echo "ok: nothing left running on the 3 hosts"
}

# Host 3 cut off mid-training, its link left down. Nothing answers from it, so only timers can tell: Open MPI's
# runtime learns of it through TCP keepalive on its own connections (mpirun <-> each host's daemon), which probes
# only while a connection has nothing waiting to be sent. launch/cluster.tune declares a host lost 45 s after its
# last packet, before the watchdog's first warning (60 s by default) puts anything on the wire; here the same
# settings in seconds (3 s) come before a warning at 6 s. mpirun then names the lost host and ends the job, and
# host 3's daemon, which has lost mpirun, ends its rank and itself: nothing is left anywhere with the link still
# down, as on a cluster where nothing else reaches that host.
if [ "$case_name" = linkdrop ]; then
  # The shipped settings keep that order for the watchdog's default warning.
  warn_default=$(sed -n 's/^ *double warn_seconds = \([0-9.]*\);.*/\1/p' "$src/dist/watchdog.h")
  lost_after=$(awk '$2 ~ /^oob_tcp_keepalive_/ { v[$2] = $3 } END {
    print v["oob_tcp_keepalive_time"] + v["oob_tcp_keepalive_intvl"] * v["oob_tcp_keepalive_probes"] }' \
    "$src/launch/cluster.tune")
  awk -v d="$lost_after" -v w="$warn_default" 'BEGIN { exit !(d > 0 && w > 0 && d < w) }' ||
    fail "launch/cluster.tune declares a host lost after $lost_after s, not before the watchdog's warning ($warn_default s)"
  echo "launch/cluster.tune: a silent host is lost after $lost_after s (the watchdog warns after $warn_default s)"
  printf -- '--mca oob_tcp_keepalive_time 1\n--mca oob_tcp_keepalive_intvl 1\n--mca oob_tcp_keepalive_probes 2\n' \
    >"$work/seconds.tune"
  export SHARDFIT_MPIRUN_TUNE=$work/seconds.tune
  job 2000
  start_job 3 90 "$work/cut.out" fit "$work/job.pbtxt" --report-ranks --verbose 2 --history "$work/cut" \
    --watchdog-warn-seconds 6 --watchdog-abort-seconds 10
  until_epoch2 "$work/cut.out" "the link was cut"
  check_three_hosts "$work/cut.out"
  [ -n "$(rank_pid 3)" ] || fail "no shardfit process on host 3"
  start=$(now)
  cut_link 3
  status=0
  wait_job || status=$?
  seconds=$(since "$start")
  echo "linkdrop: host 3's link cut; the job exited $status after $seconds s"
  grep -A3 "lost communication with a remote daemon" "$work/cut.out" || true
  [ "$status" -ne 0 ] || fail "the job exited 0"
  case $status in 124 | 137) fail "the job did not end by itself (status $status)" ;; esac
  # About 3 s to declare host 3 lost, then about 4 s for mpirun to end the ranks on hosts 1-2.
  awk -v s="$seconds" 'BEGIN { exit !(s < 10 + 4) }' || fail "the job took $seconds s to end, expected < 14 s"
  grep -qE "Remote daemon: .* on node ${SHARDFIT_NETNS_PREFIX}h3\$" "$work/cut.out" ||
    fail "mpirun did not name host 3 as lost"
  # mpirun's SIGTERM finds the ranks of hosts 1-2 stuck in a collective: the watchdog says where, before the SIGKILL.
  grep -E "rank [01]: waiting [0-9.]+ s in .*: SIGTERM received" "$work/cut.out" | head -2 || true
  grep -qE "rank [01]: waiting [0-9.]+ s in .* of epoch [0-9]+.*: SIGTERM received" "$work/cut.out" ||
    fail "no rank on hosts 1-2 said where it waited when mpirun ended it"
  nothing_left
  exit 0
fi

# Host 3's rank stopped mid-training: its host still answers (TCP is alive, keepalive sees nothing), and Open MPI
# alone would wait forever; the ranks' watchdog (2 s warn, 4 s abort here) must end the job non-zero within its
# timeout plus a few seconds, a rank that can still act naming the phase it waits in, and leave nothing running.
if [ "$case_name" = sigstop ]; then
  job 2000
  start_job 3 90 "$work/quiet.out" fit "$work/job.pbtxt" --report-ranks --verbose 2 --history "$work/quiet" \
    --watchdog-warn-seconds 2 --watchdog-abort-seconds 4
  until_epoch2 "$work/quiet.out" "host 3 went quiet"
  check_three_hosts "$work/quiet.out"
  victim=$(rank_pid 3)
  [ -n "$victim" ] || fail "no shardfit process on host 3"
  start=$(now)
  kill -STOP "$victim"
  status=0
  wait_job || status=$?
  seconds=$(since "$start")
  echo "sigstop: host 3's rank stopped; the job exited $status after $seconds s"
  grep -E "waiting [0-9.]+ s in " "$work/quiet.out" | head -3 || true
  [ "$status" -ne 0 ] || fail "the job exited 0"
  case $status in 124 | 137) fail "the job did not end by itself (status $status)" ;; esac
  awk -v s="$seconds" 'BEGIN { exit !(s < 4 + 10) }' || fail "the job took $seconds s to end, expected < 14 s"
  grep -qE "rank [01]: waiting [0-9.]+ s in .* of epoch [0-9]+" "$work/quiet.out" ||
    fail "no rank on hosts 1-2 said where it waits"
  kill -CONT "$victim" 2>/dev/null || true
  nothing_left
  exit 0
fi

[ "$case_name" = kill ] || {
  echo "unknown case '$case_name' (expected equivalence, kill, links, linkdrop or sigstop)"
  exit 2
}
# Long enough that the kill lands mid-training on any machine; ended by the kill within seconds.
job 2000
start_job 3 120 "$work/killed.out" fit "$work/job.pbtxt" --report-ranks --verbose 2 --history "$work/killed"
until_epoch2 "$work/killed.out" "the kill"
check_three_hosts "$work/killed.out"
victim=$(rank_pid 3)
[ -n "$victim" ] || fail "no shardfit process on host 3"
start=$(now)
kill -9 "$victim"
status=0
wait_job || status=$?
seconds=$(since "$start")
echo "killed rank pid $victim on host 3: the job exited $status after $seconds s"
[ "$status" -ne 0 ] || fail "the job exited 0 after a rank was killed"
# mpirun exits 137 itself (the killed rank's status, 128 + 9); timeout would have stopped it only after 120 s.
awk -v s="$seconds" 'BEGIN { exit !(s < 10) }' || fail "the job took $seconds s to end, expected < 10 s"
grep -q "process rank 2 .* on node ${SHARDFIT_NETNS_PREFIX}h3 exited on signal 9" "$work/killed.out" ||
  fail "mpirun did not report the killed rank on host 3"
nothing_left
