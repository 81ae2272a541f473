#!/usr/bin/env bash
# A real single-node SLURM "cluster" on this machine, for the tests: slurmctld and slurmd as root, no munge
# (auth/none), no cgroups (proctrack/linuxproc, task/none: the cgroup plugins fail in these containers).
#   tests/slurm/cluster.sh up DIR     installs slurmd slurmctld slurm-client with apt-get when missing, writes
#                                     DIR/slurm.conf, starts both daemons, waits until the node is idle
#   tests/slurm/cluster.sh down DIR   stops the daemons that DIR's pid files name
# Then: export SLURM_CONF=DIR/slurm.conf. Exit status 77 (CTest's "skipped") when not root: the daemons need it.
set -euo pipefail
action=${1:?usage: cluster.sh up|down DIR}
dir=${2:?usage: cluster.sh up|down DIR}

stop() {
  export SLURM_CONF=$dir/slurm.conf
  [ -f "$SLURM_CONF" ] && timeout 20 scontrol shutdown >/dev/null 2>&1 || true
  for name in slurmd slurmctld; do
    local pid_file=$dir/run/$name.pid
    [ -f "$pid_file" ] || continue
    local pid
    pid=$(cat "$pid_file")
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pid_file"
  done
}

if [ "$action" = down ]; then
  stop
  exit 0
fi
[ "$action" = up ] || { echo "cluster.sh: unknown action '$action' (expected up or down)" >&2; exit 2; }
if [ "$(id -u)" -ne 0 ]; then
  echo "cluster.sh: SKIPPED: the SLURM daemons need root (running as uid $(id -u))"
  exit 77
fi

packages=(slurmd slurmctld slurm-client)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "cluster.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stop  # daemons of an earlier run in the same folder (the ports are fixed)
rm -rf "$dir"/{state,spool,log}  # a fresh controller: no jobs of an earlier run come back
mkdir -p "$dir"/{state,spool,log,run}
node_line=$(slurmd -C | head -n 1)  # NodeName=<host> CPUs=... RealMemory=...
cat >"$dir/slurm.conf" <<CONF
ClusterName=shardfit-test
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=600
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=30 State=UP
CONF
export SLURM_CONF=$dir/slurm.conf

# The daemons fork into the background; their output goes to their logs, never to the caller's pipes.
slurmctld -f "$SLURM_CONF" </dev/null >/dev/null 2>&1
slurmd -f "$SLURM_CONF" </dev/null >/dev/null 2>&1
state=""
for _ in $(seq 1 240); do
  state=$(sinfo -h -o %T 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 0.25
done
if [ "$state" != idle ]; then
  echo "cluster.sh: the node did not become idle within 60 s (state '$state'); the daemons' logs:" >&2
  tail -n 20 "$dir"/log/*.log >&2 || true
  stop
  exit 1
fi
echo "cluster.sh: SLURM up in $dir ($(sinfo -h -o '%N, %c CPUs'))"
