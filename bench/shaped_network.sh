#!/usr/bin/env bash
# What a slow network costs data-parallel training: bench/fit_bench on HOSTS namespace hosts (launch/cluster/netns.sh,
# one rank a host, TCP between them) with every host's link limited by tc tbf to each RATE, against the same
# hosts unshaped. Prints a table (samples/s, step and allreduce ms, efficiency against unshaped) and writes every
# run to bench/results/shaped_<time>.csv. Root only. A benchmark, not a test: it checks no numbers.
#   bench/shaped_network.sh        (RATES="off 10gbit 1gbit" HOSTS=3 THREADS=1 BATCH=384 EPOCHS=3 REPEATS=3)
# The model is the MLP 784-1024-1024-10 (1.86 M parameters, 7.5 MB of fp32 gradients allreduced every step) on
# synthetic data (bench/make_mlp_data.py); THREADS OpenMP threads a rank. FIT_BENCH=PATH runs a fit_bench built
# elsewhere (no build here); SHARDFIT_MPIRUN_EXTRA adds mpirun flags (e.g. an allreduce algorithm).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
RATES=${RATES:-off 10gbit 1gbit}
HOSTS=${HOSTS:-3}
THREADS=${THREADS:-1}
BATCH=${BATCH:-384}
EPOCHS=${EPOCHS:-3}
REPEATS=${REPEATS:-3}
ROWS=${ROWS:-6144}
PYTHON=${PYTHON:-/usr/bin/python3}
if [ "$(id -u)" -ne 0 ]; then
  echo "shaped_network.sh: needs root (network namespaces)" >&2
  exit 77
fi
if [ -z "${FIT_BENCH:-}" ]; then
  cmake --build "$BUILD_DIR" -j2 --target fit_bench >/dev/null
  FIT_BENCH=$(realpath "$BUILD_DIR/bench/fit_bench")
fi
export SHARDFIT_NETNS_PREFIX=sf$$-
netns=(bash launch/cluster/netns.sh)
results=bench/results
data=$results/shaped_data
mkdir -p "$data"
csv=$results/shaped_$(date -u +%Y%m%dT%H%M%SZ).csv
job_pid=""
cleanup() {
  "${netns[@]}" down || true
  [ -z "$job_pid" ] || kill -9 "$job_pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ -s "$data/x.npy" ] || "$PYTHON" bench/make_mlp_data.py --rows "$ROWS" --out "$data" >/dev/null
cat >"$data/mlp.pbtxt" <<'JOB'
# bench/shaped_network.sh's job: MLP 784-1024-1024-10, plain SGD (epochs and batch come as flags).
model {
  layers { dense { units: 1024 activation: "relu" } }
  layers { dense { units: 1024 activation: "relu" } }
  layers { dense { units: 10 activation: "softmax" } }
}
loss: "sparse_categorical_crossentropy"
optimizer { sgd { learning_rate: 0.01 } }
fit { shuffle: true seed: 1337 }
data { train { x { path: "x.npy" } y { path: "y.npy" } } }
outputs { checkpoint_every_epochs: 0 plot: false }
JOB

"${netns[@]}" reap
"${netns[@]}" up "$HOSTS"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $HOSTS hosts x 1 rank x" \
  "$THREADS thread(s); global batch $BATCH, $EPOCHS measured epochs of $((ROWS / BATCH)) steps;" \
  "load:$(cut -d' ' -f1-3 /proc/loadavg)"
[ -z "${SHARDFIT_MPIRUN_EXTRA:-}" ] || echo "mpirun flags added (SHARDFIT_MPIRUN_EXTRA): $SHARDFIT_MPIRUN_EXTRA"
echo "rate,repeat,load1,line" >"$csv"
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
    "${netns[@]}" shape "$rate"
    # In the background and waited for, so that Ctrl-C reaches the cleanup at once; timeout bounds a hung run.
    timeout -k 5 300 "${netns[@]}" mpirun "$HOSTS" -x OMP_NUM_THREADS="$THREADS" "$FIT_BENCH" "$data/mlp.pbtxt" \
      --epochs "$EPOCHS" --batch-size "$BATCH" --verbose 0 >"$results/shaped_run.out" 2>&1 </dev/null &
    job_pid=$!
    status=0
    wait "$job_pid" || status=$?
    job_pid=""
    line=$(grep '^fit_bench ' "$results/shaped_run.out" || true)
    if [ "$status" -ne 0 ] || [ -z "$line" ]; then
      echo "rate $rate, repeat $repeat: fit_bench exited $status" >&2
      tail -n 20 "$results/shaped_run.out" >&2
      exit 1
    fi
    echo "$rate,$repeat,$(cut -d' ' -f1 /proc/loadavg),\"$line\"" >>"$csv"
    summary=$(tr ' ' '\n' <<<"$line" | grep -E '^(samples_per_second|step_ms|allreduce_ms)=' | tr '\n' ' ')
    echo "  $rate #$repeat: $summary"
  done
done
"${netns[@]}" shape off

"$PYTHON" - "$csv" "$HOSTS" "${tcp[@]}" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
hosts = int(sys.argv[2])
tcp = dict(arg.split("=", 1) for arg in sys.argv[3:])
gradient_bytes = 4 * (784 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10)
by_rate = {}
for r in rows:
    fields = dict(kv.split("=", 1) for kv in r["line"].split()[1:])
    by_rate.setdefault(r["rate"], []).append({k: float(v) for k, v in fields.items()})
def med(runs, key):
    return statistics.median(run[key] for run in runs)
base = med(by_rate["off"], "samples_per_second") if "off" in by_rate else None
repeats = len(next(iter(by_rate.values())))
print(f"\n{hosts} hosts, gradients {gradient_bytes / 1e6:.2f} MB a step; medians of {repeats} runs")
print("| link | one TCP stream, Gbit/s | samples/s | step ms | compute ms | allreduce ms, rank 0 "
      "| allreduce ms, least rank | ring at the rate, ms | samples/s vs unshaped |")
print("|---|---|---|---|---|---|---|---|---|")
for rate, runs in by_rate.items():
    sps = med(runs, "samples_per_second")
    compute = statistics.median(r["gather_ms"] + r["forward_ms"] + r["backward_ms"] + r["optimizer_ms"] for r in runs)
    # The least rank's allreduce time is the closer estimate of the transfer itself: the others' includes waiting
    # for a slower rank to arrive.
    least = statistics.median(1e3 * r["allreduce_seconds_min_rank"] / r["steps"] for r in runs)
    # A ring allreduce sends 2 (P-1)/P of the buffer out of every host: the least time the link rate allows.
    bits = 2 * (hosts - 1) / hosts * gradient_bytes * 8
    ideal = "-"
    for unit, factor in {"gbit": 1e9, "mbit": 1e6}.items():
        if rate.endswith(unit):
            ideal = f"{1e3 * bits / (float(rate[:-len(unit)]) * factor):.1f}"
    ratio = f"{sps / base:.2f}" if base else "-"
    print(f"| {rate} | {tcp.get(rate, '-')} | {sps:.0f} | {med(runs, 'step_ms'):.1f} | {compute:.1f} | "
          f"{med(runs, 'allreduce_ms'):.1f} | "
          f"{least:.1f} | {ideal} | {ratio} |")
PY
echo "runs: $csv; load:$(cut -d' ' -f1-3 /proc/loadavg)"
