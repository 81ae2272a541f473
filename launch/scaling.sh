#!/usr/bin/env bash
# A scaling study: `shardfit bench` at each rank count x threads per rank x mode, one mpirun a point, the records
# collected in OUT/records.jsonl, then `shardfit plot` draws OUT/scaling.svg and writes the table OUT/scaling.md
# (speedup and parallel efficiency against each series' smallest rank count; README.md, "Scaling benchmark").
#   usage: launch/scaling.sh [--ranks "1 2 4"] [--threads "1"] [--modes "strong weak"] [--model mlp|wide|JOB.pbtxt]
#                            [--batch N] [--steps N] [--warmup-steps N] [--out DIR] [--append] [--hostfile F]
#                            [--cores N] [--mpirun "ARGS"] [--launcher mpirun|srun] [--shardfit PATH] [-- bench flags]
# Not a scheduler: it runs the points one after the other on the hosts mpirun is given (this one by default), or
# with srun inside a SLURM allocation (launch/scaling.sbatch starts it so).
set -euo pipefail

usage() {  # on stdout: `usage >&2` where it goes with an error
  sed -n '5,7p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'EOF'
  --ranks "P..."       rank counts, run in the order given (default "1 2 4")
  --threads "T..."     OpenMP threads per rank, each its own series (default "1")
  --modes "M..."       strong (--batch is the global batch) and / or weak (--batch per rank) (default both)
  --model NAME|FILE    a bench preset (mlp, wide) or a job file (default mlp)
  --batch N            the batch, see --modes (default 256)
  --steps N            measured steps per point (default 20); --warmup-steps N (default 5)
  --out DIR            where records.jsonl, scaling.svg, scaling.md and logs/ go (default scaling-<UTC time>)
  --append             add to DIR/records.jsonl when it exists (without it an existing file is refused, never
                       overwritten); the chart and table then cover every record in the file; each later sweep's
                       point logs go to logs/sweep<N>/ (N counts the sweeps of sweep.txt), the earlier ones stay
  --hostfile F         mpirun --hostfile F: ranks spread over its hosts
  --cores N            CPUs per host the points may use (default: nproc here; with --hostfile, give it): a point
                       with more than N threads on a host (its ranks x threads; with --hostfile, the ranks as
                       mpirun fills the hosts' slots) runs oversubscribed, unbound, and its record says so
  --mpirun "ARGS"      more launcher arguments, split on spaces (e.g. "--mca btl self,vader"; with srun "--mpi=pmix");
                       given more than once, joined in order (launch/scaling.sbatch's --mpi=... first, yours after)
  --launcher L         mpirun (default) or srun: inside a SLURM allocation, `srun -n P -c T --cpu-bind=cores` a
                       point (ranks packed on the fewest nodes when --ntasks-per-node was given; never oversubscribed)
  --shardfit PATH      the shardfit binary (default $SHARDFIT_BIN, else build/launch/shardfit)
  -- FLAGS             passed to every `shardfit bench` (e.g. -- --optimizer adam)
EOF
}

die() {
  echo "scaling.sh: $*" >&2
  exit 2
}

root=$(cd "$(dirname "$0")/.." && pwd)
ranks_list="1 2 4"
threads_list="1"
modes="strong weak"
model=mlp
batch=256
steps=20
warmup=5
out=""
append=0
hostfile=""
cores=""
mpirun_extra=""
launcher=mpirun
bin=${SHARDFIT_BIN:-$root/build/launch/shardfit}
bench_extra=()
command_line=launch/scaling.sh  # as typed, for sweep.txt: arguments with spaces in quotes
for arg in "$@"; do
  if [[ $arg =~ [[:space:]] || -z $arg ]]; then command_line+=" '$arg'"; else command_line+=" $arg"; fi
done

while [ $# -gt 0 ]; do
  case "$1" in
    --ranks | --threads | --modes | --model | --batch | --steps | --warmup-steps | --out | --hostfile | --cores | \
      --mpirun | --launcher | --shardfit)
      [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in
        --ranks) ranks_list=$2 ;;
        --threads) threads_list=$2 ;;
        --modes) modes=$2 ;;
        --model) model=$2 ;;
        --batch) batch=$2 ;;
        --steps) steps=$2 ;;
        --warmup-steps) warmup=$2 ;;
        --out) out=$2 ;;
        --hostfile) hostfile=$2 ;;
        --cores) cores=$2 ;;
        --mpirun) mpirun_extra+="${mpirun_extra:+ }$2" ;;  # joined: scaling.sbatch's own, then the user's
        --launcher) launcher=$2 ;;
        --shardfit) bin=$2 ;;
      esac
      shift 2
      ;;
    --append)
      append=1
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      bench_extra=("$@")
      break
      ;;
    *)
      usage >&2
      die "unknown argument '$1'"
      ;;
  esac
done

whole() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge "$2" ]; }

# busiest_host RANKS THREADS: the most ranks mpirun puts on one host. Without --hostfile every rank is on this
# host. With one, --cores counts the CPUs of each host, not of all of them: mpirun fills each host's slots in file
# order (a host without slots= is taken to hold cores / threads ranks, as Open MPI 4 counts its cores), and spreads
# ranks beyond every slot evenly over the hosts.
busiest_host() {
  if [ -z "$hostfile" ]; then
    echo "$1"
    return
  fi
  awk -v ranks="$1" -v fill=$((cores / $2 > 0 ? cores / $2 : 1)) '
    { sub(/#.*/, "") }
    NF == 0 { next }
    {
      if (!($1 in slots)) { order[++hosts] = $1; slots[$1] = 0 }
      n = fill
      for (i = 2; i <= NF; i++) if ($i ~ /^slots=[0-9]+$/) { n = substr($i, 7) + 0 }
      slots[$1] += n
    }
    END {
      if (hosts == 0) { print ranks; exit }
      left = ranks; most = 0
      for (h = 1; h <= hosts; h++) { got[h] = left < slots[order[h]] ? left : slots[order[h]]; left -= got[h] }
      for (h = 1; h <= hosts; h++) {
        got[h] += int(left / hosts) + (h <= left % hosts ? 1 : 0)
        if (got[h] > most) most = got[h]
      }
      print most
    }' "$hostfile"
}
for p in $ranks_list; do whole "$p" 1 || die "--ranks: '$p' is not a whole number >= 1"; done
for t in $threads_list; do whole "$t" 1 || die "--threads: '$t' is not a whole number >= 1"; done
for m in $modes; do [ "$m" = strong ] || [ "$m" = weak ] || die "--modes: '$m': expected strong and / or weak"; done
if [ -z "$ranks_list" ] || [ -z "$threads_list" ] || [ -z "$modes" ]; then
  die "--ranks, --threads and --modes need values"
fi
whole "$batch" 1 || die "--batch: '$batch' is not a whole number >= 1"
whole "$steps" 1 || die "--steps: '$steps' is not a whole number >= 1"
whole "$warmup" 0 || die "--warmup-steps: '$warmup' is not a whole number >= 0"
[ -z "$cores" ] || whole "$cores" 1 || die "--cores: '$cores' is not a whole number >= 1"
[ -x "$bin" ] || die "no shardfit binary at '$bin': build it (cmake --build build) or give --shardfit PATH"
[ -z "$hostfile" ] || [ -f "$hostfile" ] || die "--hostfile '$hostfile': no such file"
[ "$launcher" = mpirun ] || [ "$launcher" = srun ] || die "--launcher '$launcher': expected mpirun or srun"
if [ "$launcher" = srun ]; then
  [ -n "${SLURM_JOB_ID:-}" ] || die "--launcher srun runs inside a SLURM allocation (sbatch, salloc): no SLURM_JOB_ID"
  [ -z "$hostfile" ] || die "--hostfile is for mpirun: srun runs on the allocation's nodes"
  cores=""  # SLURM gives each task its own cores and never starts more tasks than the allocation has
elif [ -z "$cores" ] && [ -z "$hostfile" ]; then
  cores=$(nproc)
fi
if [ -f "$model" ]; then
  model_args=("$model")
else
  model_args=(--model "$model")
fi

[ -n "$out" ] || out=scaling-$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$out/logs"
records=$out/records.jsonl
if [ -e "$records" ] && [ "$append" -eq 0 ]; then
  die "$records exists: --append adds this sweep's records to it; or choose another --out (it is never overwritten)"
fi

# Each sweep's point logs apart: the first in logs/, the N-th into the same folder (--append, or a sweep after one
# that failed before its first record) in logs/sweepN/, so a rerun never overwrites the logs of the runs whose
# records it adds to.
sweeps_before=0
[ ! -f "$out/sweep.txt" ] || sweeps_before=$(grep -c '^started: ' "$out/sweep.txt" || true)
logs=$out/logs
[ "$sweeps_before" -eq 0 ] || logs=$out/logs/sweep$((sweeps_before + 1))
mkdir -p "$logs"

# What made these numbers, beside them: the command, the machine and the time.
{
  echo "command: $command_line"
  echo "shardfit: $bin"
  echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
  if [ "$launcher" = srun ]; then
    echo "SLURM job ${SLURM_JOB_ID}: ${SLURM_NTASKS:-?} task(s) x ${SLURM_CPUS_PER_TASK:-1} CPU(s) on ${SLURM_JOB_NODELIST:-?}"
  else
    echo "cores: ${cores:-from the hostfile}; hosts: ${hostfile:-this one ($(hostname))}"
  fi
  echo "logs: $logs"
  echo "started: $(date -u +%Y-%m-%dT%H:%M:%SZ); load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
} >>"$out/sweep.txt"

base=("$launcher")
[ "$launcher" = srun ] || [ "$(id -u)" -ne 0 ] || base+=(--allow-run-as-root)
[ -z "$hostfile" ] || base+=(--hostfile "$hostfile")
# shellcheck disable=SC2206  # the user's extra mpirun arguments, split on spaces as documented
[ -z "$mpirun_extra" ] || base+=($mpirun_extra)

points=0
for threads in $threads_list; do
  for mode in $modes; do
    for ranks in $ranks_list; do
      flags=(-np "$ranks" -x OMP_NUM_THREADS="$threads")
      note=""
      if [ "$launcher" = srun ]; then
        # srun passes this environment on; --cpu-bind=cores keeps each task's threads on its own cores (as
        # launch/slurm_fit.sbatch, whose note says why OMP_PROC_BIND stays unset under SLURM).
        export OMP_NUM_THREADS=$threads
        flags=(-n "$ranks" -c "$threads" --cpu-bind=cores --kill-on-bad-exit=1)
        per_node=${SLURM_NTASKS_PER_NODE:-}
        if [[ $per_node =~ ^[0-9]+$ ]]; then flags+=(-N $(((ranks + per_node - 1) / per_node))); fi
      elif [ -n "$cores" ] && [ $(($(busiest_host "$ranks" "$threads") * threads)) -gt "$cores" ]; then
        # More threads than cores on a host: binding would stack ranks on one core; let the OS share them (as
        # launch/mpirun_local.sh does). bench sees the shared CPUs and marks the record oversubscribed.
        flags+=(--oversubscribe --bind-to none -x OMP_PROC_BIND=false --mca mpi_yield_when_idle 1)
        note=" (oversubscribed: $(($(busiest_host "$ranks" "$threads") * threads)) threads on $cores cores of a host)"
      else
        flags+=(--map-by "slot:PE=$threads" --bind-to core -x OMP_PROC_BIND=close -x OMP_PLACES=cores)
      fi
      log=$logs/${mode}_${ranks}x${threads}.log
      echo "scaling.sh: $mode, $ranks rank(s) x $threads thread(s)$note" >&2
      status=0
      "${base[@]}" "${flags[@]}" "$bin" bench "${model_args[@]}" --mode "$mode" --batch-size "$batch" \
        --steps "$steps" --warmup-steps "$warmup" --json "$records" "${bench_extra[@]}" </dev/null >"$log" 2>&1 ||
        status=$?
      if [ "$status" -ne 0 ]; then
        echo "scaling.sh: the point $mode, $ranks rank(s) x $threads thread(s) failed (status $status); its log," \
          "$log, ends:" >&2
        tail -n 15 "$log" | sed 's/^/  /' >&2
        echo "scaling.sh: the $points record(s) before it are in $records" >&2
        exit 1
      fi
      points=$((points + 1))
    done
  done
done

"$bin" plot "$records" -o "$out/scaling.svg"
echo "finished: $(date -u +%Y-%m-%dT%H:%M:%SZ), $points point(s); load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)" \
  >>"$out/sweep.txt"
