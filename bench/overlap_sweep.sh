#!/usr/bin/env bash
# overlap_sweep.sh: what overlapping the gradient allreduce with backward buys, and at which bucket size, measured
# with `shardfit bench` (the training step fit runs, on synthetic data) on the MLP 784-512-512-10 of issue 10.
# Not a test: it times and reports.
#
#   bench/overlap_sweep.sh                                  # the defaults below (~6-8 min on 2 idle cores)
#   BATCHES="128" BUCKETS="4194304 1048576" REPEATS=5 bench/overlap_sweep.sh
#   MPIRUN_EXTRA="--mca btl tcp,self" bench/overlap_sweep.sh   # TCP loopback instead of shared memory
#
# Runs (global batch B in each):
#   1x2            one rank x 2 OpenMP threads (no allreduce: the reference for 2 ranks)
#   2x1 off BYTES  mpirun -np 2 x 1 thread, --overlap off, --bucket-bytes BYTES
#   2x1 on  BYTES  the same with --overlap on
# for every batch of BATCHES and bucket size of BUCKETS, interleaved run by run (all configurations of a batch, then
# again, REPEATS times), so a busy minute on a shared machine slows all of them alike. Each run goes through
# bench/others_cpu.py, which records the share of the machine OTHER processes took meanwhile (others%).
# The records (bench --json, with overlap and bucket_bytes in each) go to RESULTS/overlap_sweep_STAMP.jsonl; the
# summary prints per configuration the median over repeats of samples/s, the step, backward and exposed
# communication (ms), the 2x1 / 1x2 ratio and, for overlap on, the share of off's exposed communication it hides:
# (exposed off - exposed on) / exposed off, at the same batch and bucket size.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build}"
BATCHES="${BATCHES:-32 128 512}"
BUCKETS="${BUCKETS:-4194304 1048576 262144}"
REPEATS="${REPEATS:-3}"
WARMUP="${WARMUP:-10}"
SAMPLES="${SAMPLES:-12288}"  # measured samples a run: steps = max(20, SAMPLES / batch)
PYTHON="${PYTHON:-/usr/bin/python3}"
RESULTS="${RESULTS:-bench/results}"
MPIRUN_EXTRA="${MPIRUN_EXTRA:-}"
STAMP="$(date +%Y%m%d-%H%M%S)"
RECORDS="$RESULTS/overlap_sweep_${STAMP}.jsonl"
RUNS_CSV="$RESULTS/overlap_sweep_${STAMP}_runs.csv"
SHARDFIT="$BUILD_DIR/launch/shardfit"
# shellcheck disable=SC2206  # MPIRUN_EXTRA is split into words on purpose
MPIRUN=(mpirun --allow-run-as-root -np 2 -x OMP_NUM_THREADS=1 --bind-to core $MPIRUN_EXTRA)

die() { echo "overlap_sweep: $*" >&2; exit 1; }
[[ -x "$SHARDFIT" ]] || die "missing $SHARDFIT: build first (cmake --build $BUILD_DIR -j2 --target shardfit)"
mkdir -p "$RESULTS"
JOB="$RESULTS/overlap_sweep_mlp.pbtxt"
cat >"$JOB" <<'EOF'
# bench/overlap_sweep.sh's job: issue 10's MLP 784-512-512-10, plain SGD (bench makes the data).
model {
  input_dim: 784
  layers { dense { units: 512 activation: "relu" } }
  layers { dense { units: 512 activation: "relu" } }
  layers { dense { units: 10 activation: "softmax" } }
}
loss: "sparse_categorical_crossentropy"
optimizer { sgd { learning_rate: 0.01 } }
EOF

field() { tr ' ' '\n' | sed -n "s/^$1=//p"; }
load1() { cut -d' ' -f1 /proc/loadavg; }

echo "config,batch,bucket_bytes,overlap,repeat,others_pct,load1_before,record_line" >"$RUNS_CSV"
run() {  # config batch bucket overlap repeat
  local config=$1 batch=$2 bucket=$3 overlap=$4 repeat=$5 steps report load others lines
  steps=$(( SAMPLES / batch > 20 ? SAMPLES / batch : 20 ))
  report=$(mktemp)
  load=$(load1)
  local -a flags=(bench "$JOB" --batch-size "$batch" --warmup-steps "$WARMUP" --steps "$steps" --json "$RECORDS"
                  --bucket-bytes "$bucket" --overlap "$overlap")
  if [[ $config == 1x2 ]]; then
    OMP_NUM_THREADS=2 "$PYTHON" bench/others_cpu.py "$report" -- "$SHARDFIT" "${flags[@]}" >/dev/null
  else
    "$PYTHON" bench/others_cpu.py "$report" -- "${MPIRUN[@]}" "$SHARDFIT" "${flags[@]}" >/dev/null
  fi
  others=$(field others_pct <"$report")
  rm -f "$report"
  lines=$(wc -l <"$RECORDS")
  echo "$config,$batch,$bucket,$overlap,$repeat,$others,$load,$lines" >>"$RUNS_CSV"
  printf '  %-4s batch %-4s bucket %-8s overlap %-3s #%s  (others %s%%, load %s)\n' "$config" "$batch" "$bucket" \
    "$overlap" "$repeat" "$others" "$load"
}

echo "overlap_sweep: MLP 784-512-512-10, batches $BATCHES, buckets $BUCKETS, repeats $REPEATS;" \
  "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); uptime:$(uptime)"
START=$SECONDS
for batch in $BATCHES; do
  echo "== global batch $batch"
  for repeat in $(seq 1 "$REPEATS"); do
    run 1x2 "$batch" 4194304 off "$repeat"
    for bucket in $BUCKETS; do
      run 2x1 "$batch" "$bucket" off "$repeat"
      run 2x1 "$batch" "$bucket" on "$repeat"
    done
  done
done
echo "runs took $((SECONDS - START)) s; uptime:$(uptime)"
echo "records: $RECORDS; runs: $RUNS_CSV"

"$PYTHON" - "$RECORDS" "$RUNS_CSV" <<'EOF'
import csv, json, statistics, sys
records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
runs = list(csv.DictReader(open(sys.argv[2])))
groups = {}
for record, run in zip(records, runs):
    key = (record["batch"]["global"], record["ranks"], record["allreduce"]["bucket_bytes"] if record["ranks"] > 1 else 0,
           record["overlap"] if record["ranks"] > 1 else False)
    groups.setdefault(key, []).append((record, float(run["others_pct"])))
med = lambda values: statistics.median(values)
def summary(key):
    rs = groups[key]
    p = lambda name: 1e3 * med([r["phase_seconds"][name] for r, _ in rs])
    return {"sps": med([r["samples_per_second"]["total"] for r, _ in rs]), "step": p("step"), "bwd": p("backward"),
            "exposed": p("exposed_comm"), "others": max(o for _, o in rs), "n": len(rs),
            "buckets": rs[0][0]["allreduce"]["buckets"]}
print("\n| batch | config | bucket KiB (buckets) | overlap | samples/s | vs 1x2 | step ms | backward ms | exposed comm ms "
      "| hidden | runs (max others%) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(groups):
    batch, ranks, bucket, overlap = key
    s = summary(key)
    base = summary((batch, 1, 0, False))["sps"] if (batch, 1, 0, False) in groups else float("nan")
    hidden = ""
    if ranks > 1 and overlap and (batch, ranks, bucket, False) in groups:
        off = summary((batch, ranks, bucket, False))["exposed"]
        hidden = f"{(off - s['exposed']) / off:.2f}" if off > 0 else ""
    config = "1x2" if ranks == 1 else f"{ranks}x1"
    buckets = f"{bucket // 1024} ({s['buckets']})" if ranks > 1 else "-"
    print(f"| {batch} | {config} | {buckets} | {'on' if overlap else 'off'} | {s['sps']:.0f} | {s['sps'] / base:.2f} | "
          f"{s['step']:.2f} | {s['bwd']:.2f} | {s['exposed']:.2f} | {hidden} | {s['n']} ({s['others']:.0f}) |")
EOF
