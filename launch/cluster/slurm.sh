#!/usr/bin/env bash
# A SLURM cluster whose nodes are the namespace hosts of launch/cluster/netns.sh, for the multi-node test of
# launch/slurm_fit.sbatch: slurmctld on host 1, a slurmd on every host, each node as many CPUs as it is given. Not a
# way to set up a real cluster: its nodes share this machine's cores, and nothing checks who submits (auth/none).
#   slurm.sh up DIR [CPUS]   DIR/slurm.conf for the hosts PREFIXh1..N that `netns.sh up N` made (CPUS a node,
#                            default 1), starts the daemons, waits until every node is idle
#   slurm.sh run DIR CMD...  a SLURM command (sbatch, srun, squeue, scontrol, ...) inside host 1, with SLURM_CONF and
#                            the Open MPI settings these hosts need set
#   slurm.sh down DIR        cancels the jobs and stops the daemons (by the pids in DIR/run); `netns.sh down` then
#                            kills whatever the jobs left in the hosts
# PREFIX is $SHARDFIT_NETNS_PREFIX, as for netns.sh. Needs root, slurmd, slurmctld and slurm-client (launch/setup.sh).
#
# Why it is done this way:
#  1. Every daemon runs inside its host's network namespace, on the ports SLURM always uses (6817, 6818): each host
#     has its own ports, so this cluster never meets a SLURM of the machine itself (tests/slurm/cluster.sh) or of
#     another run, and every path it writes is under DIR. The client commands must run in a host too (`run`): the
#     controller's address 10.77.0.1 exists only there.
#  2. nsenter --net, not `ip netns exec`: the latter mounts a fresh /sys, which hides /sys/fs/cgroup, and slurmd
#     22.05 then exits ("No filesystem mounted on /sys/fs/cgroup"). unshare --uts gives each daemon its host's name
#     as hostname, which is how slurmd and slurmctld know which node they are, and what the ranks report.
#  3. TmpFS per node: srun --mpi=pmix makes <TmpFS>/spmix_appdir_<uid>_<job>.<step> on every node, and in a /tmp
#     that all the hosts share the second node's mkdir fails and the step does not start.
#  4. auth/none and cred/none: no munged to run (it refuses root, and its socket in /run would be shared by every
#     run). ProctrackType=proctrack/linuxproc and TaskPlugin=task/none: the cgroup plugins fail in containers.
#  5. MpiDefault=none: launch/slurm_fit.sbatch must choose pmix by itself, as it does on a cluster whose default is
#     not pmix.
set -euo pipefail
prefix=${SHARDFIT_NETNS_PREFIX:-sf-}
subnet=10.77.0

usage() {
  sed -n '5,11p' "$0" >&2
  exit 2
}

# in_host I CMD...: CMD in host I's network namespace, with its own hostname (the node's name).
in_host() {
  local host=${prefix}h$1
  shift
  # shellcheck disable=SC2016  # $0 and $@ are the inner shell's
  nsenter --net="/run/netns/$host" unshare --uts /bin/sh -c 'hostname "$0"; exec "$@"' "$host" "$@"
}

# run CMD...: CMD in host 1 with this cluster's SLURM_CONF, and the Open MPI settings that `netns.sh mpirun` passes
# (a job gets them through sbatch's and srun's --export=ALL; one set in the caller's environment wins): MPI's data
# only over the hosts' links, since the hosts share /dev/shm; waiting ranks that yield, since the nodes share this
# machine's cores. Without btl tcp,self (Open MPI 4.1.4 then also opens vader, ofi and openib), 4 of 28 three-node
# jobs here failed at start, 3 of them seen as rank 0's SIGSEGV inside MPI_Init (a null callback called from
# mca_btl_tcp.so); none of 80 with it.
run() {
  SLURM_CONF=$dir/slurm.conf OMPI_MCA_btl=${OMPI_MCA_btl:-tcp,self} \
    OMPI_MCA_btl_tcp_if_include=${OMPI_MCA_btl_tcp_if_include:-$subnet.0/24} \
    OMPI_MCA_oob_tcp_if_include=${OMPI_MCA_oob_tcp_if_include:-$subnet.0/24} \
    OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1} in_host 1 "$@"
}

up() {
  local cpus=$1 count i idle=0 missing=()
  count=$(ip netns list | awk '{print $1}' | grep -cE "^${prefix}h[0-9]+\$" || true)
  if [ "$count" -lt 1 ]; then
    echo "slurm.sh: no hosts ${prefix}h1..: run launch/cluster/netns.sh up N first" >&2
    return 1
  fi
  for p in slurmd slurmctld slurm-client; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "slurm.sh: ${missing[*]} not installed (launch/setup.sh installs them)" >&2
    return 1
  fi
  # A fresh controller: no jobs of an earlier run in DIR come back. Only what this script makes is removed.
  rm -rf "$dir"/{state,log,run} "$dir"/spool-"${prefix}"h* "$dir"/tmp-"${prefix}"h*
  mkdir -p "$dir"/{state,log,run}
  for i in $(seq 1 "$count"); do mkdir -p "$dir/spool-${prefix}h$i" "$dir/tmp-${prefix}h$i"; done
  cat >"$dir/slurm.conf" <<CONF
ClusterName=shardfit-hosts
SlurmctldHost=${prefix}h1($subnet.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool-%n
TmpFS=$dir/tmp-%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=600
NodeName=${prefix}h[1-$count] NodeAddr=$subnet.[1-$count] CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=30 State=UP
CONF
  # The daemons fork into the background; their output goes to their logs, never to the caller's pipes.
  SLURM_CONF=$dir/slurm.conf in_host 1 slurmctld -f "$dir/slurm.conf" </dev/null >/dev/null 2>&1
  for i in $(seq 1 "$count"); do
    SLURM_CONF=$dir/slurm.conf in_host "$i" slurmd -f "$dir/slurm.conf" -N "${prefix}h$i" </dev/null >/dev/null 2>&1
  done
  for _ in $(seq 1 240); do
    idle=$(run sinfo -h -N -o %T 2>/dev/null | grep -c '^idle$' || true)
    [ "$idle" = "$count" ] && break
    sleep 0.25
  done
  if [ "$idle" != "$count" ]; then
    echo "slurm.sh: $idle of $count nodes idle after 60 s; the daemons' logs:" >&2
    run sinfo -N >&2 || true
    tail -n 20 "$dir"/log/*.log >&2 || true
    return 1
  fi
  echo "slurm.sh: SLURM up in $dir: $count nodes ${prefix}h[1-$count], $cpus CPU(s) each"
}

down() {
  local pid_file pid
  [ -f "$dir/slurm.conf" ] || return 0
  run scancel --quiet --full --signal=KILL --user=root >/dev/null 2>&1 || true
  # A bounded shutdown: once it took minutes (shared/recipes); the daemons left are killed below.
  timeout 20 env SLURM_CONF="$dir/slurm.conf" nsenter --net="/run/netns/${prefix}h1" scontrol shutdown \
    >/dev/null 2>&1 || true
  for pid_file in "$dir"/run/*.pid; do
    [ -f "$pid_file" ] || continue
    pid=$(cat "$pid_file")
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pid_file"
  done
}

[ $# -ge 2 ] || usage
if [ "$(id -u)" -ne 0 ]; then
  echo "slurm.sh: needs root (the SLURM daemons, the namespace hosts); running as uid $(id -u)" >&2
  exit 77
fi
action=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd)  # slurm.conf names its files by absolute path
shift 2
case $action in
  up) up "${1:-1}" ;;
  run) run "$@" ;;
  down) down ;;
  *) usage ;;
esac
