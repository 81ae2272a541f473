#!/usr/bin/env bash
# Hosts on one machine for multi-host MPI tests and benchmarks: each "host" is a network namespace with its own
# address, joined to the others by a bridge in a namespace of its own, so ranks on different hosts talk over real
# TCP (veth links) and nothing is added to the machine's own network. Not a way to run on a real cluster: there
# the hosts are real and mpirun --hostfile starts the ranks (README, "Several hosts").
#   netns.sh up N              hosts PREFIXh1..PREFIXhN at 10.77.0.1..N/24, each reachable from every other
#   netns.sh down              kills (SIGKILL, by pid) what still runs in those hosts and deletes them
#   netns.sh reap              runs `down` for the hosts of earlier runs whose owner (the pid in the prefix) is gone
#   netns.sh mpirun NP ARGS... mpirun -np NP ARGS inside host 1, one slot a host, the others started by nsrsh
#   netns.sh pids I            the process ids running in host I (one a line)
#   netns.sh shape RATE|off    tc tbf bandwidth limit (e.g. 1gbit) on every host's link, or none
#   netns.sh link I down|up    cuts (or restores) host I's link: a silent partition, nothing tells its peers
# PREFIX is $SHARDFIT_NETNS_PREFIX, default "sf-". Tests and benchmarks set "sf<their pid>-": several runs on one
# machine never share hosts, each cleans up exactly its own, and `reap` can tell a dead run's hosts by that pid.
# Needs root, iproute2 and util-linux (unshare).
#
# Why it is done this way:
#  1. mpirun runs inside host 1 with its own hostname (unshare --uts), so Open MPI sees host 1 as "this host" and
#     starts the other hosts' daemons through the launch agent nsrsh, which "sshes" with `ip netns exec`.
#  2. Every host sees the same files (namespaces share the filesystem): no copying of binaries or data, and one
#     output folder is visible to all, as on a cluster with a shared home.
#  3. btl tcp,self and the if_include flags keep MPI's data (btl) and its control (oob) on the hosts' links: the
#     hosts share /dev/shm, and no shared-memory shortcut may spare a byte the trip over the network.
#  4. mpirun gets launch/cluster.tune, as a user's mpirun on a cluster does (README, "When a host goes quiet"): its
#     TCP keepalive ends a job whose host went silent (`link I down`). $SHARDFIT_MPIRUN_TUNE names another file
#     (tests use seconds, not the file's 45 s). Without it a silent partition hangs mpirun for minutes, and mpirun
#     may then ignore SIGTERM: callers still run mpirun under `timeout -k` and always end with `down`.
#  5. nsrsh, like ssh, starts each remote daemon in a session of its own: mpirun reaches it only over the network.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
prefix=${SHARDFIT_NETNS_PREFIX:-sf-}
switch=${prefix}sw
subnet=10.77.0

usage() {
  sed -n '6,12p' "$0" >&2
  exit 2
}
hosts() { ip netns list | awk '{print $1}' | grep -E "^${prefix}(h[0-9]+|sw)\$" || true; }

up() {
  local count=$1 i j answer
  ip netns add "$switch"
  ip -n "$switch" link set lo up
  ip -n "$switch" link add br0 type bridge
  ip -n "$switch" link set br0 up
  for i in $(seq 1 "$count"); do
    local host=${prefix}h$i
    ip netns add "$host"
    ip -n "$switch" link add "p$i" type veth peer name eth0 netns "$host"  # p$i stays on the bridge
    ip -n "$switch" link set "p$i" master br0
    ip -n "$switch" link set "p$i" up
    ip -n "$host" link set lo up
    ip -n "$host" addr add "$subnet.$i/24" dev eth0
    ip -n "$host" link set eth0 up
  done
  # Ready when every host reaches every other: a TCP connect to port 1 refused (a reset) means the peer answered.
  for i in $(seq 1 "$count"); do
    for j in $(seq 1 "$count"); do
      [ "$i" != "$j" ] || continue
      answer=""
      for _ in $(seq 1 50); do
        answer=$(ip netns exec "${prefix}h$i" bash -c "exec 3<>/dev/tcp/$subnet.$j/1" 2>&1 || true)
        [[ $answer == *refused* ]] && break
        sleep 0.1
      done
      [[ $answer == *refused* ]] || { echo "netns.sh: host $i cannot reach $subnet.$j: $answer" >&2; return 1; }
    done
  done
  echo "netns.sh: $count hosts ${prefix}h1..${prefix}h$count at $subnet.1-$count"
}

down() {
  local ns pid killed=()
  for ns in $(hosts); do
    for pid in $(ip netns pids "$ns"); do
      echo "netns.sh: killing pid $pid ($(cat "/proc/$pid/comm" 2>/dev/null || echo gone)) left in $ns" >&2
      kill -9 "$pid" 2>/dev/null || true
      killed+=("$pid")
    done
  done
  for pid in "${killed[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  done
  for ns in $(hosts); do ip netns del "$ns"; done
}

reap() {
  local owner
  local owners
  owners=$(ip netns list | awk '{print $1}' | sed -n 's/^sf\([0-9][0-9]*\)-\(h[0-9][0-9]*\|sw\)$/\1/p' | sort -u)
  for owner in $owners; do
    kill -0 "$owner" 2>/dev/null && continue
    echo "netns.sh: removing the hosts of an earlier run (sf$owner-, its owner is gone)" >&2
    SHARDFIT_NETNS_PREFIX=sf$owner- bash "$0" down
  done
}

run_mpirun() {
  local count=$1
  shift
  local hostfile
  hostfile=$(mktemp "${TMPDIR:-/tmp}/shardfit_hosts_XXXXXX")
  local hosts_up
  hosts_up=$(hosts | grep -c "h[0-9]" || true)
  for i in $(seq 1 "$hosts_up"); do echo "${prefix}h$i slots=1" >>"$hostfile"; done
  local root_flag=()
  [ "$(id -u)" -ne 0 ] || root_flag=(--allow-run-as-root)
  local status=0
  # Not exec: the hostfile is removed afterwards. The hosts share this machine's cores: no binding, and idle ranks
  # yield, as mpirun_local.sh does when oversubscribed.
  # shellcheck disable=SC2016,SC2086  # $0 and $@ are the inner shell's; the extra flags are words to split
  ip netns exec "${prefix}h1" unshare --uts /bin/sh -c 'hostname "$0"; export SHARDFIT_NETNS="$0"; exec "$@"' \
    "${prefix}h1" mpirun "${root_flag[@]}" -np "$count" --hostfile "$hostfile" \
    --mca plm_rsh_agent "$here/nsrsh" --tune "${SHARDFIT_MPIRUN_TUNE:-$here/../cluster.tune}" \
    --mca btl tcp,self --mca btl_tcp_if_include "$subnet.0/24" --mca oob_tcp_if_include "$subnet.0/24" \
    --mca mpi_yield_when_idle 1 --bind-to none ${SHARDFIT_MPIRUN_EXTRA:-} "$@" || status=$?
  rm -f "$hostfile"
  return "$status"
}

shape() {
  local rate=$1 ns burst
  # tbf sends at most `burst` bytes per timer tick beyond the rate: with a fixed small burst a fast rate is never
  # reached (10gbit with 256kb reached 5.5 Gbit/s here). 2 ms of the rate (at least 256 KiB) reached 8-9 Gbit/s.
  burst=$(awk -v r="$rate" 'BEGIN { n = r + 0; u = tolower(substr(r, length(n "") + 1));
    f = (u == "gbit") ? 1e9 : (u == "mbit") ? 1e6 : (u == "kbit") ? 1e3 : 1;
    b = n * f * 0.002 / 8; if (b < 262144) b = 262144; printf "%d", b }')
  for ns in $(hosts | grep "h[0-9]"); do
    ip netns exec "$ns" tc qdisc del dev eth0 root 2>/dev/null || true
    [ "$rate" = off ] || ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst "$burst" latency 50ms
  done
}

[ $# -ge 1 ] || usage
if [ "$(id -u)" -ne 0 ]; then
  echo "netns.sh: needs root (network namespaces); running as uid $(id -u)" >&2
  exit 77
fi
action=$1
shift
case $action in
  up) up "${1:-3}" ;;
  down) down ;;
  reap) reap ;;
  mpirun) run_mpirun "$@" ;;
  pids) ip netns pids "${prefix}h${1:?host number}" ;;
  shape) shape "${1:?RATE or off}" ;;
  link) ip -n "${prefix}h${1:?host number}" link set eth0 "${2:?down or up}" ;;
  *) usage ;;
esac
