#!/usr/bin/env bash
# What a slow network costs data-parallel training: `shardfit bench --model mlp` on HOSTS namespace hosts
# (launch/cluster/netns.sh, one rank a host, TCP between them) with every host's link limited by tc tbf to each
# RATE, against the same hosts unshaped. Prints a table (samples/s and efficiency against unshaped, the step's split
# into compute and exposed communication, the step allreduce's bus bandwidth against a raw MPI_Allreduce of the
# same bytes that bench times in the same run) and appends every run's bench record, with the rate it ran at, to
# bench/results/shaped_<time>.jsonl. Root only. A benchmark, not a test: it checks no numbers.
#   bench/shaped_network.sh   (RATES="off 10gbit 1gbit" HOSTS=3 THREADS=1 BATCH=384 STEPS=30 WARMUP=5 REPEATS=3
#                              OVERLAPS=off BUCKET_BYTES= REDUCE_DTYPES=float32)
# OVERLAPS="off on" runs every rate with `--overlap off` and `--overlap on` (interleaved) and the table adds the
# share of off's exposed communication that on hides at the same rate; BUCKET_BYTES passes --bucket-bytes.
# REDUCE_DTYPES="float32 bfloat16" runs each with `--reduce-dtype` (interleaved) and the table adds bfloat16's
# speed against float32's at the same rate and overlap.
# BATCH is the global batch (strong scaling, BATCH/HOSTS a rank); THREADS OpenMP threads a rank. SHARDFIT=PATH runs
# a shardfit built elsewhere (no build here); SHARDFIT_MPIRUN_EXTRA adds mpirun flags (e.g. an allreduce algorithm).
# Latency cannot be added where the kernel lacks sch_netem (this development machine's does); see
# docs/shaped_network.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
RATES=${RATES:-off 10gbit 1gbit}
HOSTS=${HOSTS:-3}
THREADS=${THREADS:-1}
BATCH=${BATCH:-384}
STEPS=${STEPS:-30}
WARMUP=${WARMUP:-5}
REPEATS=${REPEATS:-3}
OVERLAPS=${OVERLAPS:-off}
REDUCE_DTYPES=${REDUCE_DTYPES:-float32}
BUCKET_BYTES=${BUCKET_BYTES:-}
bucket_flag=()
[ -z "$BUCKET_BYTES" ] || bucket_flag=(--bucket-bytes "$BUCKET_BYTES")
PYTHON=${PYTHON:-/usr/bin/python3}
if [ "$(id -u)" -ne 0 ]; then
  echo "shaped_network.sh: needs root (network namespaces)" >&2
  exit 77
fi
if [ -z "${SHARDFIT:-}" ]; then
  cmake --build "$BUILD_DIR" -j2 --target shardfit >/dev/null
  SHARDFIT=$(realpath "$BUILD_DIR/launch/shardfit")
fi
export SHARDFIT_NETNS_PREFIX=sf$$-
netns=(bash launch/cluster/netns.sh)
results=bench/results
mkdir -p "$results"
jsonl=$results/shaped_$(date -u +%Y%m%dT%H%M%SZ).jsonl
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/shardfit_shaped_XXXXXX")
job_pid=""
cleanup() {
  "${netns[@]}" down || true
  [ -z "$job_pid" ] || kill -9 "$job_pid" 2>/dev/null || true
  rm -rf "$run_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"${netns[@]}" reap
"${netns[@]}" up "$HOSTS"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $HOSTS hosts x 1 rank x" \
  "$THREADS thread(s); shardfit bench --model mlp, global batch $BATCH, $WARMUP warm-up + $STEPS measured steps;" \
  "load:$(cut -d' ' -f1-3 /proc/loadavg)"
[ -z "${SHARDFIT_MPIRUN_EXTRA:-}" ] || echo "mpirun flags added (SHARDFIT_MPIRUN_EXTRA): $SHARDFIT_MPIRUN_EXTRA"
# What each setting carries: one TCP stream from host 1 to host 2 (a shaped link is also limited by the CPU that
# forwards it; unshaped, only by that CPU).
tcp=()
for rate in $RATES; do
  "${netns[@]}" shape "$rate"
  megabytes=300
  [ "$rate" != 1gbit ] || megabytes=100
  timeout -k 5 60 ip netns exec "${SHARDFIT_NETNS_PREFIX}h2" "$PYTHON" bench/tcp_throughput.py server 5001 &
  server_pid=$!
  gbits=$(timeout -k 5 60 ip netns exec "${SHARDFIT_NETNS_PREFIX}h1" "$PYTHON" bench/tcp_throughput.py client \
    10.77.0.2 5001 "$megabytes" || echo "?")
  wait "$server_pid" || true
  echo "  $rate: one TCP stream carries $gbits Gbit/s"
  tcp+=("$rate=$gbits")
done
# Rates interleaved (off, 10gbit, 1gbit, off, ...), not one rate's repeats in a row: on a shared machine a busy
# minute then slows every rate alike, and the medians stay comparable.
for repeat in $(seq 1 "$REPEATS"); do
  for rate in $RATES; do
   for overlap in $OVERLAPS; do
    for reduce in $REDUCE_DTYPES; do
    "${netns[@]}" shape "$rate"
    rm -f "$run_dir/run.jsonl"
    # In the background and waited for, so that Ctrl-C reaches the cleanup at once; timeout bounds a hung run.
    # In run_dir: rank 0 writes its record there (the hosts share the filesystem).
    (cd "$run_dir" && exec timeout -k 5 300 bash "$OLDPWD/launch/cluster/netns.sh" mpirun "$HOSTS" \
      -x OMP_NUM_THREADS="$THREADS" "$SHARDFIT" bench --model mlp --mode strong --batch-size "$BATCH" \
      --steps "$STEPS" --warmup-steps "$WARMUP" --overlap "$overlap" --reduce-dtype "$reduce" "${bucket_flag[@]}" --json run.jsonl) \
      >"$run_dir/run.out" 2>&1 </dev/null &
    job_pid=$!
    status=0
    wait "$job_pid" || status=$?
    job_pid=""
    if [ "$status" -ne 0 ] || [ ! -s "$run_dir/run.jsonl" ]; then
      echo "rate $rate, overlap $overlap, reduce $reduce, repeat $repeat: shardfit bench exited $status" >&2
      tail -n 20 "$run_dir/run.out" >&2
      exit 1
    fi
    # The record, with what bench cannot know (the link's rate, the repeat, the machine's load, the mpirun flags
    # added), goes to the file.
    "$PYTHON" - "$run_dir/run.jsonl" "$jsonl" "$rate" "$repeat" "$(cut -d' ' -f1 /proc/loadavg)" \
      "${SHARDFIT_MPIRUN_EXTRA:-}" <<'PY'
import json, sys
record = json.loads(open(sys.argv[1]).read().splitlines()[-1])
record["shaped_network"] = {"rate": sys.argv[3], "repeat": int(sys.argv[4]), "load1": float(sys.argv[5]),
                            "mpirun_extra": sys.argv[6]}
with open(sys.argv[2], "a") as out:
    out.write(json.dumps(record, sort_keys=True) + "\n")
print(f"  {sys.argv[3]} overlap {'on' if record.get('overlap') else 'off'} reduce {record['allreduce']['dtype']} "
      f"#{sys.argv[4]}: "
      f"{record['samples_per_second']['total']:.0f} samples/s, "
      f"step {1e3 * record['phase_seconds']['step']:.1f} ms, exposed comm {100 * record['exposed_comm_share']:.0f}%")
PY
    done
   done
  done
done
"${netns[@]}" shape off

"$PYTHON" - "$jsonl" "${tcp[@]}" <<'PY'
import json, statistics, sys
records = [json.loads(line) for line in open(sys.argv[1])]
tcp = dict(arg.split("=", 1) for arg in sys.argv[2:])
by_rate = {}  # (rate, overlap, reduce dtype) -> runs, in the order first run
for r in records:
    by_rate.setdefault((r["shaped_network"]["rate"], bool(r.get("overlap")), r["allreduce"]["dtype"]),
                       []).append(r)
def med(runs, get):
    return statistics.median(get(r) for r in runs)
first = records[0]
hosts, ranks = first["hosts"], first["ranks"]
gradient_bytes = first["allreduce"]["bytes_per_step"]
base_key = ("off", False, "float32")
base = med(by_rate[base_key], lambda r: r["samples_per_second"]["total"]) if base_key in by_rate else None
repeats = len(next(iter(by_rate.values())))
print(f"\n{ranks} ranks on {hosts} hosts, {first['threads_per_rank']} thread(s) a rank; global batch "
      f"{first['batch']['global']}; f32 gradients {gradient_bytes / 1e6:.2f} MB a step in "
      f"{first['allreduce']['buckets']} bucket(s); medians of {repeats} runs")
print("| link | overlap | reduce dtype | MB a step | one TCP stream, Gbit/s | samples/s | vs unshaped | vs float32 reduction "
      "| step ms | compute ms | exposed comm ms | exposed share | hidden | step allreduce busbw, GB/s "
      "| raw MPI_Allreduce busbw, GB/s | ring at the rate, ms |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for (rate, overlap, dtype), runs in by_rate.items():
    sps = med(runs, lambda r: r["samples_per_second"]["total"])
    phase = lambda name: med(runs, lambda r: 1e3 * r["phase_seconds"][name])
    compute = med(runs, lambda r: 1e3 * sum(r["phase_seconds"][k] for k in ("gather", "forward", "backward",
                                                                             "optimizer")))
    step_bytes = runs[0]["allreduce"]["bytes_per_step"]
    # A ring allreduce sends 2 (P-1)/P of the buffer out of every host: the least time the link's rate allows.
    bits = 2 * (ranks - 1) / ranks * step_bytes * 8
    ideal = "-"
    for unit, factor in {"gbit": 1e9, "mbit": 1e6}.items():
        if rate.endswith(unit):
            ideal = f"{1e3 * bits / (float(rate[:-len(unit)]) * factor):.1f}"
    ratio = f"{sps / base:.2f}" if base else "-"
    f32_key = (rate, overlap, "float32")
    vs_f32 = "-"
    if dtype != "float32" and f32_key in by_rate:
        vs_f32 = f"{sps / med(by_rate[f32_key], lambda r: r['samples_per_second']['total']):.2f}"
    # The share of the exposed communication without overlap, at this rate, that overlap hides.
    hidden = "-"
    if overlap and (rate, False, dtype) in by_rate:
        off = med(by_rate[(rate, False, dtype)], lambda r: 1e3 * r["phase_seconds"]["exposed_comm"])
        hidden = f"{(off - phase('exposed_comm')) / off:.2f}" if off > 0 else "-"
    print(f"| {rate} | {'on' if overlap else 'off'} | {dtype} | {step_bytes / 1e6:.2f} | {tcp.get(rate, '-')} | "
          f"{sps:.0f} | {ratio} | {vs_f32} | {phase('step'):.1f} | "
          f"{compute:.1f} | {phase('exposed_comm'):.1f} | {100 * med(runs, lambda r: r['exposed_comm_share']):.0f}% | "
          f"{hidden} | "
          f"{med(runs, lambda r: r['allreduce']['busbw_gb_per_s']):.3f} | "
          f"{med(runs, lambda r: r['raw_allreduce']['busbw_gb_per_s']):.3f} | {ideal} |")
PY
echo "runs: $jsonl; load:$(cut -d' ' -f1-3 /proc/loadavg)"
