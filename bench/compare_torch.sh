#!/usr/bin/env bash
# compare_torch.sh: shardfit against PyTorch (Debian's python3-torch) on the same MLP 784-512-512-10 (and, with
# MODELS="mlp convnet" or MODELS=convnet, the Fashion-MNIST convnet of peer_torch.py --model convnet), the same .npy
# data and the same global batches, run side by side and interleaved. Not a test: it times and reports.
#
#   bench/compare_torch.sh                       # build dir `build`, batches 32 128 512, 3 repeats
#   MODELS="mlp convnet" bench/compare_torch.sh  # the MLP's table, then the convnet's (issue 11's targets)
#   BUILD_DIR=build-peer REPEATS=3 BATCHES="512" bench/compare_torch.sh
#   REPEATS=1 BATCHES=512 CONFIGS=1x2 bench/compare_torch.sh      # a quick look
#
# What runs, per (config, global batch B), REPEATS times interleaved (one of each, then again):
#   shardfit fp32 and bf16 (`--dtype-policy mixed_bfloat16`; DTYPES), and for 2x1 each with `--overlap off` and
#   `on` (OVERLAP); torch fp32 on OpenBLAS and torch bf16 autocast; in the 1x2 row of CEILING_BATCH also a short
#   bench/dense_bench on 2 threads: the sum of oneDNN's own matmuls at the step's shapes, fp32 and bf16 (the
#   ceilings the step is compared to). Then bench/fit_bench once (allreduce share and per-phase breakdown of
#   shardfit's fp32 step). A run that hangs is killed after RUN_TIMEOUT_S and stops the script.
# Configurations (B split over the ranks in both trainers):
#   1x2  shardfit 1 rank x 2 OpenMP threads      vs torch 1 process, torch.set_num_threads(2)
#   2x1  shardfit mpirun -np 2 x 1 thread        vs torch DDP (gloo) 2 processes x 1 thread, B/2 each
# samples/s is training samples / training time of an epoch, median of the epochs after the first (the first
# builds primitives / warms up), for both: shardfit's from run.json, torch's from bench/peer_torch.py. Peak memory
# is each rank's max RSS (getrusage), shardfit's from run.json's peak_rss_bytes, torch's from peer_torch.py; the
# table shows the largest rank's.
#
# The fair fp32 peer: Debian's torch has no MKL and calls the system libblas.so.3. With only the reference BLAS
# installed that runs ~6 GFLOP/s and makes every fp32 ratio meaningless, so:
#  - Run as root with something missing, the script installs it (apt-get update; apt-get install -y python3-torch
#    python3-numpy libopenblas0-pthread) and says so; INSTALL=0 stops that. Not root: it says what to install.
#  - peer_torch.py reports the BLAS its process actually loaded (/proc/self/maps after a first matmul) and the fp32
#    matmul speed it measures; the table header prints it. If it is not OpenBLAS (or MKL) the script refuses to
#    report fp32 ratios (exit 3) unless ALLOW_REFERENCE_BLAS=1, which marks them as against the reference BLAS.
#  - OpenBLAS starts a thread per core whatever torch.set_num_threads says; peer_torch.py sets it to the run's
#    threads (1 per DDP rank), or 2 DDP ranks would run 4 BLAS threads on 2 cores.
# A flag the binary does not know (--dtype-policy before the bf16 branch, --overlap before the overlap branch) is
# skipped with a note, not an error: the same script measures any build.
#
# Caveats the table repeats:
#  - torch fp32 trains on the first TORCH_FP32_ROWS samples of the same files, torch bf16 on TORCH_BF16_ROWS:
#    samples/s does not depend on N, and it keeps each run to seconds.
#  - The machine has 2 cores shared with other people's builds. Every run goes through bench/others_cpu.py, which
#    records the share of the machine OTHER processes used while it ran (others%). A run first waits up to
#    QUIET_WAIT_S s for a quiet machine, and is retried up to RETRIES times while others% > NOISY_PCT; the least
#    disturbed attempt counts. The table shows the worst others% behind each row: if it is high, rerun.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build}"
MODELS="${MODELS:-mlp}"             # mlp (784-512-512-10), convnet (the Fashion-MNIST convnet): "mlp convnet" both
BATCHES="${BATCHES:-32 128 512}"
CONFIGS="${CONFIGS:-1x2 2x1}"
DTYPES="${DTYPES:-fp32 bf16}"       # shardfit's: fp32, bf16 (--dtype-policy mixed_bfloat16)
OVERLAP="${OVERLAP:-off on}"        # shardfit 2x1's --overlap values
TORCH_PRECISIONS="${TORCH_PRECISIONS:-fp32 bf16}"
REPEATS="${REPEATS:-3}"
EPOCHS="${EPOCHS:-4}"
ROWS="${ROWS:-16384}"
TORCH_FP32_ROWS="${TORCH_FP32_ROWS:-8192}"
TORCH_BF16_ROWS="${TORCH_BF16_ROWS:-8192}"
CEILING_BATCH="${CEILING_BATCH:-512}"  # dense_bench's batch for the matmul ceilings (1x2); CEILING=0: none
CEILING="${CEILING:-1}"
ALLOW_REFERENCE_BLAS="${ALLOW_REFERENCE_BLAS:-0}"  # 1: report fp32 ratios even if torch did not load OpenBLAS
INSTALL="${INSTALL:-1}"             # 0: never apt-get install, only say what is missing
RUN_TIMEOUT_S="${RUN_TIMEOUT_S:-600}"  # one trainer run longer than this is killed (a hang), and the script stops
QUIET_PCT="${QUIET_PCT:-25}"        # before each run, wait for the machine's CPU use to drop below this ...
QUIET_WAIT_S="${QUIET_WAIT_S:-10}"  # ... for at most this many seconds, then run anyway
NOISY_PCT="${NOISY_PCT:-10}"        # a run during which others took more than this % of the machine ...
RETRIES="${RETRIES:-1}"             # ... is run again up to this many times; the least disturbed attempt counts
SPREAD_PCT="${SPREAD_PCT:-25}"      # a target resting on shardfit repeats that spread more than this % is marked unreliable
PYTHON="${PYTHON:-/usr/bin/python3}"
RESULTS="${RESULTS:-bench/results}"
DATA="$RESULTS/data"
STAMP="$(date +%Y%m%d-%H%M%S)"
RAW_CSV="$RESULTS/compare_torch_${STAMP}_runs.csv"
SUMMARY_CSV="$RESULTS/compare_torch_${STAMP}.csv"
MPIRUN=(mpirun --allow-run-as-root -np 2 -x OMP_NUM_THREADS=1 --bind-to core)
PACKAGES=(python3-torch python3-numpy libopenblas0-pthread)

die() { echo "compare_torch: $*" >&2; exit 1; }
mkdir -p "$RESULTS"

# 0. What the torch side needs: torch and numpy for $PYTHON, and an OpenBLAS behind libblas.so.3.
MULTIARCH="$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"
BLAS_ALTERNATIVE="libblas.so.3-$MULTIARCH"
missing() {
  "$PYTHON" -c "import torch, numpy" 2>/dev/null || { echo "torch/numpy"; return; }
  if command -v update-alternatives >/dev/null && ! update-alternatives --list "$BLAS_ALTERNATIVE" 2>/dev/null | grep -q openblas; then
    echo "OpenBLAS"
  fi
}
what=$(missing)
if [[ -n $what ]]; then
  if [[ $INSTALL == 1 && $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "compare_torch: $what missing: installing ${PACKAGES[*]} (apt-get update; apt-get install -y; log" \
      "$RESULTS/install.log)"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${PACKAGES[@]}"; } >"$RESULTS/install.log" 2>&1 ||
      { tail -20 "$RESULTS/install.log" >&2; die "apt-get install ${PACKAGES[*]} failed (log: $RESULTS/install.log)"; }
    what=$(missing)
    [[ -z $what ]] || die "$what still missing after installing ${PACKAGES[*]}"
  else
    die "$what missing. As root: apt-get install -y ${PACKAGES[*]} (or run this script as root with INSTALL=1:" \
      "it installs them). torch's fp32 needs OpenBLAS behind libblas.so.3; the reference BLAS is not a peer."
  fi
fi

# 1. Build shardfit, fit_bench, core_to_core and dense_bench (configuring the build dir if it is new).
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  {
    [[ -f "$BUILD_DIR/CMakeCache.txt" ]] || cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
    cmake --build "$BUILD_DIR" -j2 --target shardfit fit_bench core_to_core dense_bench
  } >"$RESULTS/build.log" 2>&1 || { tail -20 "$RESULTS/build.log" >&2; die "build failed in $BUILD_DIR (log: $RESULTS/build.log)"; }
fi
SHARDFIT="$BUILD_DIR/launch/shardfit"
FIT_BENCH="$BUILD_DIR/bench/fit_bench"
CORE_TO_CORE="$BUILD_DIR/bench/core_to_core"
DENSE_BENCH="$BUILD_DIR/bench/dense_bench"
[[ -x "$SHARDFIT" && -x "$FIT_BENCH" && -x "$CORE_TO_CORE" && -x "$DENSE_BENCH" ]] ||
  die "missing $SHARDFIT, $FIT_BENCH, $CORE_TO_CORE or $DENSE_BENCH"

# Which of the measured flags this binary knows; the others are skipped with a note.
NOTES=()
SHARDFIT_HELP=$("$SHARDFIT" --help 2>&1 || true)
SF_DTYPES=()
for dtype in $DTYPES; do
  case $dtype in
    fp32) SF_DTYPES+=(fp32) ;;
    bf16)
      if grep -q -- '--dtype-policy' <<<"$SHARDFIT_HELP"; then SF_DTYPES+=(bf16)
      else NOTES+=("shardfit bf16 skipped: $SHARDFIT has no --dtype-policy (build the bf16 branch or main after its merge)"); fi ;;
    *) die "DTYPES: unknown $dtype (fp32, bf16)" ;;
  esac
done
if [[ " ${SF_DTYPES[*]} " == *" bf16 "* ]] && ! grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
  NOTES+=("this CPU has neither AVX512_BF16 nor AMX-BF16: shardfit's mixed_bfloat16 trains in fp32 (it warns), so its" \
    "bf16 column measures fp32")
fi
SF_OVERLAP=()
if grep -q -- '--overlap' <<<"$SHARDFIT_HELP"; then
  for value in $OVERLAP; do
    [[ $value == on || $value == off ]] || die "OVERLAP: unknown $value (off, on)"
    SF_OVERLAP+=("$value")
  done
else
  SF_OVERLAP=(-)
  NOTES+=("shardfit --overlap skipped: $SHARDFIT has no --overlap (2x1 runs its default)")
fi
CEILING_DTYPE=fp32
DENSE_HELP=$("$DENSE_BENCH" --help 2>&1 || true)  # its usage (exit 2)
if grep -q -- '--dtype' <<<"$DENSE_HELP"; then CEILING_DTYPE=both
else NOTES+=("bf16 ceiling skipped: $DENSE_BENCH has no --dtype (fp32 ceiling only)"); fi

# 2. The BLAS torch's fp32 runs on, checked in a torch process before anything is timed (every torch run reports it
# again). Not OpenBLAS or MKL: no fp32 ratios unless ALLOW_REFERENCE_BLAS=1.
BLAS_LINE=$("$PYTHON" bench/peer_torch.py --blas-only --threads 2) || die "peer_torch.py --blas-only failed"
BLAS_KIND=$(tr ' ' '\n' <<<"$BLAS_LINE" | sed -n 's/^blas=//p')
BLAS_ALT_VALUE=$(update-alternatives --query "$BLAS_ALTERNATIVE" 2>/dev/null | sed -n 's/^Value: //p' || true)
if [[ $BLAS_KIND != openblas && $BLAS_KIND != mkl ]]; then
  msg="torch's fp32 loaded the $BLAS_KIND BLAS, not OpenBLAS ($BLAS_LINE; libblas.so.3 alternative: ${BLAS_ALT_VALUE:-?})."
  if [[ $ALLOW_REFERENCE_BLAS != 1 ]]; then
    echo "compare_torch: $msg fp32 ratios against it would be meaningless (~40x too kind to shardfit)." >&2
    echo "  fix: apt-get install libopenblas0-pthread; update-alternatives --auto $BLAS_ALTERNATIVE" >&2
    echo "  (or check LD_LIBRARY_PATH / LD_PRELOAD); ALLOW_REFERENCE_BLAS=1 reports them anyway, marked." >&2
    exit 3
  fi
  NOTES+=("ALLOW_REFERENCE_BLAS=1: $msg Every fp32 ratio is against it and says so.")
fi

for model in $MODELS; do
  [[ $model == mlp || $model == convnet ]] || die "MODELS: unknown $model (mlp, convnet)"
done

# 3. Data and the jobs, shared by both trainers.
mkdir -p "$DATA"
if ! "$PYTHON" -c "import numpy, sys; sys.exit(numpy.load('$DATA/x.npy', mmap_mode='r').shape[0] != $ROWS)" 2>/dev/null; then
  "$PYTHON" bench/make_mlp_data.py --rows "$ROWS" --out "$DATA"
fi
cat >"$DATA/mlp.pbtxt" <<'EOF'
# bench/compare_torch.sh's job: MLP 784-512-512-10, plain SGD, written by the script (epochs/batch come as flags).
model {
  layers { dense { units: 512 activation: "relu" } }
  layers { dense { units: 512 activation: "relu" } }
  layers { dense { units: 10 activation: "softmax" } }
}
loss: "sparse_categorical_crossentropy"
optimizer { sgd { learning_rate: 0.01 } }
fit { shuffle: true seed: 1337 }
data { train { x { path: "x.npy" } y { path: "y.npy" } } }
# Only the history: checkpoints and the plot are written outside the timed steps, but cost wall time and files.
outputs { checkpoint_every_epochs: 0 plot: false }
EOF
# The convnet of bench/peer_torch.py --model convnet (examples/fashion_mnist's), on the same flat rows read as
# 28x28x1 images.
cat >"$DATA/convnet.pbtxt" <<'EOF'
# bench/compare_torch.sh's job: the Fashion-MNIST convnet, plain SGD, written by the script.
model {
  input_shape: [28, 28, 1]
  layers { conv2d { filters: 32 kernel_size: 3 activation: "relu" } }
  layers { max_pooling2d { pool_size: 2 } }
  layers { conv2d { filters: 64 kernel_size: 3 activation: "relu" } }
  layers { max_pooling2d { pool_size: 2 } }
  layers { flatten { } }
  layers { dense { units: 128 activation: "relu" } }
  layers { dense { units: 10 activation: "softmax" } }
}
loss: "sparse_categorical_crossentropy"
optimizer { sgd { learning_rate: 0.01 } }
fit { shuffle: true seed: 1337 }
data { train { x { path: "x.npy" } y { path: "y.npy" } } }
outputs { checkpoint_every_epochs: 0 plot: false }
EOF

# CPU busy % of the whole machine over 0.5 s, measured while this script runs nothing.
busy_pct() {
  local a b
  read -r _ a1 a2 a3 a4 a5 a6 a7 _ </proc/stat
  sleep 0.5
  read -r _ b1 b2 b3 b4 b5 b6 b7 _ </proc/stat
  a=$(( (b1 + b2 + b3 + b6 + b7) - (a1 + a2 + a3 + a6 + a7) ))
  b=$(( a + (b4 + b5) - (a4 + a5) ))
  echo $(( b > 0 ? 100 * a / b : 0 ))
}
# Waits (up to QUIET_WAIT_S seconds) for the machine's busy% to drop below QUIET_PCT.
wait_for_quiet() {
  local waited=0
  while (( $(busy_pct) >= QUIET_PCT && waited < QUIET_WAIT_S )); do
    sleep 0.5; waited=$((waited + 1))
  done
}
field() { tr ' ' '\n' | sed -n "s/^$1=//p"; }

# run.json -> "SAMPLES_PER_SECOND peak_rss_bytes=R0,R1" (the median epoch after the first; no peak_rss_bytes from
# a shardfit that does not write them).
shardfit_result() {
  "$PYTHON" -c "import json, statistics, sys
r = json.load(open(sys.argv[1]))
rates = r['samples_per_second']
peaks = ','.join(str(p) for p in r.get('peak_rss_bytes', []))
print(statistics.median(rates[1:] if len(rates) > 1 else rates), 'peak_rss_bytes=' + (peaks or '-'))" "$1"
}

# One attempt of one run: trainer config batch precision overlap report -> prints "SAMPLES_PER_SECOND DETAIL...".
# bench/others_cpu.py wraps the trainer and writes the CPU share other processes took meanwhile to `report`.
PORT=29600
run_once() {
  local trainer=$1 config=$2 batch=$3 precision=$4 overlap=$5 report=$6 line history rows=0
  # timeout signals its whole process group (mpirun's ranks, mp.spawn's workers): a hung run ends as a failed one.
  local -a wrap=("$PYTHON" bench/others_cpu.py "$report" -- timeout --kill-after=10 "$RUN_TIMEOUT_S") flags=()
  case $trainer in
    shardfit)
      history="$RESULTS/history_${config}_${batch}"
      rm -rf "$history"
      [[ $precision == bf16 ]] && flags+=(--dtype-policy mixed_bfloat16)
      [[ $overlap != - ]] && flags+=(--overlap "$overlap")
      if [[ $config == 1x2 ]]; then
        OMP_NUM_THREADS=2 "${wrap[@]}" "$SHARDFIT" fit "$JOB" --epochs "$EPOCHS" --batch-size "$batch" --verbose 0 \
          --history "$history" "${flags[@]}"
      else
        "${wrap[@]}" "${MPIRUN[@]}" "$SHARDFIT" fit "$JOB" --epochs "$EPOCHS" --batch-size "$batch" --verbose 0 \
          --history "$history" "${flags[@]}"
      fi
      shardfit_result "$history/run.json"
      ;;
    torch)
      rows="$TORCH_BF16_ROWS"
      [[ $precision == fp32 ]] && rows="$TORCH_FP32_ROWS"
      PORT=$((PORT + 1))
      if [[ $config == 1x2 ]]; then
        line=$("${wrap[@]}" "$PYTHON" bench/peer_torch.py --data "$DATA" --model "$MODEL" --batch "$batch" \
          --epochs "$EPOCHS" --rows "$rows" --threads 2 --precision "$precision")
      else
        line=$("${wrap[@]}" "$PYTHON" bench/peer_torch.py --data "$DATA" --model "$MODEL" --batch "$batch" \
          --epochs "$EPOCHS" --rows "$rows" --ranks 2 --threads 1 --precision "$precision" --port "$PORT")
      fi
      echo "$(field samples_per_second <<<"$line") $line"
      ;;
    dense_bench)
      # The ceilings, interleaved with the trainers' runs of the same row: a short dense_bench (its own calls
      # alternate A B A B inside), whose CSV gives the seconds of a step made of the reference matmuls only.
      local csv
      csv=$(mktemp)
      OMP_NUM_THREADS=2 "${wrap[@]}" "$DENSE_BENCH" --batches "$batch" --no-primitives --repeats 3 --min-seconds 0.1 \
        --min-iterations 10 --csv "$csv" $([[ $precision == both ]] && echo --dtype both) >/dev/null
      "$PYTHON" -c "import csv, sys
rows = {r['scope']: r for r in csv.DictReader(open(sys.argv[1])) if r['name'] == 'fwd+bwd'}
out = [str(int(sys.argv[2]) / float(rows['step']['reference_s']))]
for scope, dtype in (('step', 'fp32'), ('step-bf16', 'bf16')):
    if scope in rows:
        out += [f'ceiling_{dtype}_s={rows[scope][\"reference_s\"]}', f'dense_{dtype}_s={rows[scope][\"shardfit_s\"]}',
                f'ceiling_{dtype}_gflops={rows[scope][\"reference_gflops\"]}']
print(' '.join(out))" "$csv" "$batch"
      rm -f "$csv"
      ;;
    fit_bench)
      if [[ $config == 1x2 ]]; then
        line=$(OMP_NUM_THREADS=2 "${wrap[@]}" "$FIT_BENCH" "$JOB" --epochs "$EPOCHS" --batch-size "$batch")
      else
        line=$("${wrap[@]}" "${MPIRUN[@]}" "$FIT_BENCH" "$JOB" --epochs "$EPOCHS" --batch-size "$batch")
      fi
      echo "$(field samples_per_second <<<"$line") $line"
      ;;
  esac
}

# One run, retried (up to RETRIES more times) while others took more than NOISY_PCT of the machine; keeps the
# attempt disturbed least.
measure() {  # trainer config batch precision overlap repeat
  local attempt best_out="" best_others=101 best_wall=0 best_c2c="" best_rss=0 out others load report c2c
  report=$(mktemp)
  for attempt in $(seq 0 "$RETRIES"); do
    wait_for_quiet
    load=$(load1)
    c2c=$("$CORE_TO_CORE" | field round_trip_ns)
    out=$(run_once "$1" "$2" "$3" "$4" "$5" "$report" </dev/null)  # timeout's own process group reads no tty
    others=$(field others_pct <"$report")
    if (( others < best_others )); then
      best_others=$others; best_out=$out; best_wall=$(field wall_s <"$report"); best_c2c=$c2c
      best_rss=$(field max_rss_bytes <"$report")
    fi
    (( others <= NOISY_PCT )) && break
  done
  rm -f "$report"
  local sps=${best_out%% *} detail="" peaks
  [[ $best_out == *" "* ]] && detail=${best_out#* }
  peaks=$(field peak_rss_bytes <<<"$detail")
  echo "$2,$3,$6,$1,$4,$5,$sps,\"${peaks:--}\",$best_rss,$best_others,$((attempt + 1)),$best_wall,$best_c2c,$load,\"$detail\"" >>"$RAW_CSV"
  printf '  %-4s batch %-4s #%s %-10s %-5s %-4s %10.0f samples/s  peak RSS %s MiB  (others %s%%, c2c %s ns, attempt %s)\n' \
    "$2" "$3" "$6" "$1" "$4" "$5" "$sps" "$(mib_list "${peaks:--}")" "$best_others" "$best_c2c" "$((attempt + 1))"
}
load1() { cut -d' ' -f1 /proc/loadavg; }
mib_list() { [[ $1 == - ]] && { echo -; return; }; tr ',' '\n' <<<"$1" | awk '{printf "%s%.0f", (NR > 1 ? "/" : ""), $1 / 1048576}'; }

TORCH_VERSION=$("$PYTHON" -c 'import torch; print(torch.__version__)')
{
  echo "compare_torch: shardfit vs PyTorch $TORCH_VERSION, models $MODELS, SGD lr 0.01, $ROWS samples" \
    "($TORCH_FP32_ROWS for torch fp32, $TORCH_BF16_ROWS for bf16), $EPOCHS epochs, repeats $REPEATS"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
    "(family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs), model $(grep -m1 '^model\s' /proc/cpuinfo | cut -d: -f2 | xargs))," \
    "uptime:$(uptime)"
  echo "torch fp32 BLAS (checked in a torch process, 2 threads): $(sed 's/^peer_torch //' <<<"$BLAS_LINE")"
  echo "libblas.so.3 alternative: ${BLAS_ALT_VALUE:-(no update-alternatives)}"
  echo "shardfit: $SHARDFIT ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')); dtypes ${SF_DTYPES[*]}; 2x1 overlap ${SF_OVERLAP[*]}"
  for note in "${NOTES[@]}"; do echo "note: $note"; done
} | tee "$RESULTS/compare_torch_${STAMP}_header.txt"

# Measurements and table per model: MODEL, JOB and the CSVs are the model's (the mlp's keep their old names).
for MODEL in $MODELS; do
JOB="$DATA/$MODEL.pbtxt"
SUFFIX=""
[[ $MODEL == mlp ]] || SUFFIX="_$MODEL"
RAW_CSV="$RESULTS/compare_torch_${STAMP}${SUFFIX}_runs.csv"
SUMMARY_CSV="$RESULTS/compare_torch_${STAMP}${SUFFIX}.csv"
echo "config,batch,repeat,trainer,precision,overlap,samples_per_second,peak_rss_bytes,max_rss_bytes,others_pct,attempts,wall_s,core_to_core_ns,load1_before,detail" >"$RAW_CSV"
echo "==== model $MODEL ($JOB)"
START=$SECONDS
for config in $CONFIGS; do
  for batch in $BATCHES; do
    echo "== $config, global batch $batch"
    for repeat in $(seq 1 "$REPEATS"); do
      for dtype in "${SF_DTYPES[@]}"; do
        if [[ $config == 2x1 ]]; then
          for overlap in "${SF_OVERLAP[@]}"; do measure shardfit "$config" "$batch" "$dtype" "$overlap" "$repeat"; done
        else
          measure shardfit "$config" "$batch" "$dtype" - "$repeat"
        fi
      done
      for precision in $TORCH_PRECISIONS; do measure torch "$config" "$batch" "$precision" - "$repeat"; done
      # dense_bench's ceilings are the MLP's matmuls (the convnet's convolutions: bench/conv_bench, run apart).
      if [[ $CEILING == 1 && $MODEL == mlp && $config == 1x2 && $batch == "$CEILING_BATCH" ]]; then
        measure dense_bench "$config" "$batch" "$CEILING_DTYPE" - "$repeat"
      fi
    done
    measure fit_bench "$config" "$batch" fp32 - 1
  done
done

echo "runs took $((SECONDS - START)) s; uptime:$(uptime)"

# 4. The table: medians over repeats, ratios, peak RSS, the ceilings and the issue's targets.
"$PYTHON" - "$RAW_CSV" "$SUMMARY_CSV" "$BLAS_KIND" "$NOISY_PCT" "$SPREAD_PCT" "${SF_DTYPES[*]}" "$MODEL" <<'EOF'
import csv, os, statistics, sys
from collections import defaultdict

raw_path, summary_path, blas, noisy_pct = sys.argv[1:4] + [int(sys.argv[4])]
spread_limit, sf_dtypes, model = float(sys.argv[5]), sys.argv[6].split(), sys.argv[7]
fair = blas in ("openblas", "mkl")
runs = list(csv.DictReader(open(raw_path)))
rates, peaks, fit, others, c2c = defaultdict(list), defaultdict(list), {}, defaultdict(list), defaultdict(list)
blas_seen, approximate, ceiling_runs = set(), set(), defaultdict(list)
for r in runs:
    row = (r["config"], int(r["batch"]))
    others[row].append(int(r["others_pct"]))
    c2c[row].append(float(r["core_to_core_ns"]))
    detail = dict(kv.split("=", 1) for kv in r["detail"].split() if "=" in kv)
    if r["trainer"] == "fit_bench":
        fit[row] = detail
        continue
    if r["trainer"] == "dense_bench":
        for dtype in ("fp32", "bf16"):
            if f"ceiling_{dtype}_s" in detail:
                ceiling_runs[dtype].append((int(r["batch"]), float(detail[f"ceiling_{dtype}_s"]),
                                            float(detail[f"dense_{dtype}_s"]), int(r["others_pct"]),
                                            float(detail[f"ceiling_{dtype}_gflops"])))
        continue
    key = row + (r["trainer"], r["precision"], r["overlap"])
    rates[key].append(float(r["samples_per_second"]))
    if r["peak_rss_bytes"] not in ("", "-"):
        peaks[key].append(max(int(v) for v in r["peak_rss_bytes"].split(",")))
    elif r["max_rss_bytes"] not in ("", "0"):
        # A shardfit without run.json's peak_rss_bytes: the largest process of the run's tree (others_cpu.py),
        # which is a rank's (mpirun is smaller); marked "~" in the table.
        peaks[key].append(int(r["max_rss_bytes"]))
        approximate.add(key)
    if r["trainer"] == "torch" and r["precision"] == "fp32":
        blas_seen.add(detail.get("blas", "?"))
if any(b not in ("openblas", "mkl") for b in blas_seen):
    fair = False  # a run loaded another BLAS than the check before the runs did

def med(key):
    return statistics.median(rates[key]) if rates.get(key) else float("nan")

def rss(key):  # MiB, the largest rank's peak, the largest over repeats
    return max(peaks[key]) / 2**20 if peaks.get(key) else float("nan")

def rss_text(key):
    return ("~" if key in approximate else "") + num(rss(key))

def spread(key):  # (max - min) / median over repeats, in %
    v = rates.get(key, [])
    return 100 * (max(v) - min(v)) / statistics.median(v) if len(v) > 1 else 0.0

def num(v, fmt="{:,.0f}"):
    return "-" if v != v else fmt.format(v)

def ratio(a, b):
    return a / b if a == a and b == b and b > 0 else float("nan")

# The ceilings: samples/s of a step made of nothing but oneDNN's matmuls (dense_bench's reference), 2 threads,
# the median over the repeats that ran between the trainers' runs.
ceiling = {}
for dtype, found in ceiling_runs.items():
    batch = found[0][0]
    seconds = statistics.median(f[1] for f in found)
    ceiling[dtype] = {"batch": batch, "samples_per_second": batch / seconds,
                      "dense_samples_per_second": batch / statistics.median(f[2] for f in found),
                      "gflops": statistics.median(f[4] for f in found), "others_pct_max": max(f[3] for f in found),
                      "repeats": len(found)}

row_keys = sorted({k[:2] for k in rates}, key=lambda k: (k[0], k[1]))
variants = sorted({k[4] for k in rates if k[2] == "shardfit"})  # overlap values ("-" for 1x2)
rows = []
for config, batch in row_keys:
    for overlap in ([v for v in variants if v != "-"] or ["-"]) if config == "2x1" else ["-"]:
        k = (config, batch)
        sf32, sf16 = k + ("shardfit", "fp32", overlap), k + ("shardfit", "bf16", overlap)
        t32, t16 = k + ("torch", "fp32", "-"), k + ("torch", "bf16", "-")
        f = fit.get(k, {})
        g = lambda name: float(f.get(name, "nan"))
        rows.append({
            "config": config, "batch": batch, "overlap": overlap,
            "shardfit_fp32": med(sf32), "shardfit_bf16": med(sf16), "torch_fp32": med(t32), "torch_bf16": med(t16),
            "ratio_fp32": ratio(med(sf32), med(t32)), "ratio_bf16": ratio(med(sf16), med(t16)),
            "rss_shardfit_fp32_mib": rss(sf32), "rss_shardfit_bf16_mib": rss(sf16),
            "rss_torch_fp32_mib": rss(t32), "rss_torch_bf16_mib": rss(t16),
            "rss_text": " / ".join(rss_text(x) for x in (sf32, sf16, t32, t16)),
            "torch_blas": ",".join(sorted(blas_seen)) or "-",
            "allreduce_fraction": g("allreduce_fraction"), "step_ms": g("step_ms"),
            "gather_ms": g("gather_ms"), "forward_ms": g("forward_ms"), "backward_ms": g("backward_ms"),
            "allreduce_issued_ms": g("allreduce_issued_ms"), "allreduce_waited_ms": g("allreduce_waited_ms"),
            "optimizer_ms": g("optimizer_ms"), "allreduce_ms": g("allreduce_ms"),
            "allreduce_fraction_min_rank": g("allreduce_fraction_min_rank"),
            "spread_fp32_pct": spread(sf32), "spread_bf16_pct": spread(sf16),
            "others_pct_max": max(others[k]), "core_to_core_ns_min": min(c2c[k]), "core_to_core_ns_max": max(c2c[k]),
        })

with open(summary_path, "w", newline="") as out:
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})

star = "" if fair else "*"
print()
print(f"model {model}" + (" (shardfit bf16: Conv2D and Dense compute in bf16 under mixed_bfloat16; the pooling and"
                          " the loss in f32)" if model == "convnet" else ""))
print("samples/s, median of repeats (each: median epoch after the first); x = shardfit / torch at the same precision;")
print("peak RSS = the largest rank's max RSS, MiB (shardfit: run.json peak_rss_bytes; torch: getrusage per process).")
if not fair:
    print(f"* torch fp32 did NOT run on OpenBLAS (check before the runs: {blas}; the runs: "
          f"{','.join(sorted(blas_seen)) or '-'}): fp32 ratios are against the reference BLAS, not a peer.")
head = ("config", "batch", "shardfit fp32", "shardfit bf16", f"torch fp32{star}", "torch bf16 autocast",
        f"fp32 x{star}", "bf16 x", "peak RSS MiB sf fp32 / sf bf16 / torch fp32 / torch bf16", "allreduce %",
        "spread % fp32/bf16", "others% max", "c2c ns")
print("| " + " | ".join(head) + " |")
print("|" + "|".join(" --- " for _ in head) + "|")
for r in rows:
    config = r["config"] if r["overlap"] == "-" else f"{r['config']} overlap {r['overlap']}"
    ar = "-" if r["config"] == "1x2" else num(100 * r["allreduce_fraction"], "{:.1f}")
    print("| " + " | ".join((
        config, str(r["batch"]), num(r["shardfit_fp32"]), num(r["shardfit_bf16"]), num(r["torch_fp32"]),
        num(r["torch_bf16"]), num(r["ratio_fp32"], "{:.2f}x"), num(r["ratio_bf16"], "{:.2f}x"),
        r["rss_text"],
        ar, f"{num(r['spread_fp32_pct'])}/{num(r['spread_bf16_pct'])}", str(r["others_pct_max"]),
        f"{r['core_to_core_ns_min']:.0f}-{r['core_to_core_ns_max']:.0f}")) + " |")
print("allreduce %: fit_bench (shardfit::fit, fp32, rank 0's clock, the binary's default overlap). spread %: (max -")
print("min) / median of shardfit's repeats. others% max: the most CPU other processes took during any run of the row")
print("(rerun if high). c2c ns: cache-line round trip between the two CPUs before each run (core_to_core.cpp).")
if approximate:
    print("~ peak RSS: this shardfit writes no peak_rss_bytes; the largest process of the run (others_cpu.py) instead.")

print()
if ceiling:
    print("ceilings: oneDNN's own matmuls at the step's shapes (dense_bench reference: fwd, bwd-data, bwd-weights of")
    print("the 3 layers, plain layouts, no bias / post-ops / loss / optimizer), 2 threads, same run:")
    for dtype, c in sorted(ceiling.items()):
        print(f"  {dtype} batch {c['batch']}: {c['samples_per_second']:,.0f} samples/s ({c['gflops']:.0f} GFLOP/s), median"
              f" of {c['repeats']}; shardfit's Dense alone (fwd+bwd, no loss/optimizer) "
              f"{c['dense_samples_per_second']:,.0f}; others% max {c['others_pct_max']}")
else:
    print("ceilings: not measured (they run with the 1x2 row of CEILING_BATCH; CEILING=0 turns them off)")

# The issue's targets, each as the measured ratio against its threshold.
def row(config, batch, overlap="-"):
    for r in rows:
        if r["config"] == config and r["batch"] == batch and (r["overlap"] == overlap or overlap == "*"):
            return r
    return None

def target(name, value, at_least, note="", others_pct=0, spread_pct=0.0):
    if value != value:
        print(f"  {name}: not measured{note}")
        return
    verdict = "met" if value >= at_least else "NOT met"
    if others_pct > noisy_pct:
        note += f"  (unreliable: other processes took up to {others_pct}% of the machine meanwhile)"
    if spread_pct == spread_pct and spread_pct > spread_limit:
        note += f"  (unreliable: shardfit's repeats spread {spread_pct:.0f}%, more than SPREAD_PCT={spread_limit:.0f})"
    print(f"  {name}: {value:.2f} (target >= {at_least}) {verdict}{note}")

# 2x1 figures for the targets: overlap on where it was measured (the feature), else what ran.
overlap_for_targets = "on" if "on" in variants else ("off" if "off" in variants else "-")
if model == "convnet":
    # issue 11: the convnet's step >= 1.5x PyTorch's at batch 128 in both configs.
    print()
    print(f"targets (issue 11), measured in this run; 2x1 = shardfit with overlap {overlap_for_targets}:")
    for r in rows:
        if r["batch"] != 128 or r["overlap"] not in ("-", overlap_for_targets):
            continue
        for dtype in [d for d in ("fp32", "bf16") if d in sf_dtypes]:
            peer = "torch fp32 (OpenBLAS)" if dtype == "fp32" else "torch bf16 autocast"
            target(f"convnet {dtype} {r['config']} b128 vs {peer}", r[f"ratio_{dtype}"], 1.5,
                   others_pct=r["others_pct_max"], spread_pct=r[f"spread_{dtype}_pct"])
else:
    print()
    print(f"targets (issue 10), measured in this run; 2x1 = shardfit with overlap {overlap_for_targets}:")
    r = row("1x2", 512)
    if r:
        noise = r["others_pct_max"]
        if "bf16" in sf_dtypes:
            target("bf16 1x2 b512 vs torch bf16 autocast", r["ratio_bf16"], 1.5, others_pct=noise,
                   spread_pct=r["spread_bf16_pct"])
            c = ceiling.get("bf16")
            target("bf16 1x2 b512 step / bf16 matmul ceiling", ratio(r["shardfit_bf16"], c["samples_per_second"]) if c
                   and c["batch"] == 512 else float("nan"), 0.75, others_pct=noise, spread_pct=r["spread_bf16_pct"])
        c = ceiling.get("fp32")
        target("fp32 1x2 b512 step / fp32 matmul ceiling", ratio(r["shardfit_fp32"], c["samples_per_second"]) if c
               and c["batch"] == 512 else float("nan"), 0.85, others_pct=noise, spread_pct=r["spread_fp32_pct"])
    for r in rows:
        if r["overlap"] not in ("-", overlap_for_targets):
            continue
        note = "" if fair else "  (* against the reference BLAS: not the target's peer)"
        target(f"fp32 {r['config']} b{r['batch']} vs torch fp32 (OpenBLAS)", r["ratio_fp32"], 2.5, note,
               r["others_pct_max"], r["spread_fp32_pct"])
    for batch, at_least in ((32, 0.75), (128, 0.9), (512, 0.9)):
        one, two = row("1x2", batch), row("2x1", batch, overlap_for_targets)
        for dtype in [d for d in ("fp32", "bf16") if d in sf_dtypes]:
            if one and two:
                spreads = [x for x in (one[f"spread_{dtype}_pct"], two[f"spread_{dtype}_pct"]) if x == x]
                target(f"{dtype} 2x1 / 1x2 b{batch}", ratio(two[f"shardfit_{dtype}"], one[f"shardfit_{dtype}"]), at_least,
                       others_pct=max(one["others_pct_max"], two["others_pct_max"]),
                       spread_pct=max(spreads) if spreads else float("nan"))
print("  peak RSS per rank, shardfit / torch at the same precision (target <= 1.00):")
for r in rows:
    if r["overlap"] not in ("-", overlap_for_targets):
        continue
    parts = []
    for dtype in ("fp32", "bf16"):
        q = ratio(r[f"rss_shardfit_{dtype}_mib"], r[f"rss_torch_{dtype}_mib"])
        if q == q:
            parts.append(f"{dtype} {q:.2f} ({'met' if q <= 1 else 'NOT met'})")
    print(f"    {r['config']} b{r['batch']}: " + ("; ".join(parts) or "not measured"))

print()
print("shardfit step breakdown (fit_bench: the measured fit's TrainStep timers, fp32, ms per step, rank 0):")
print("config | batch | gather | forward | backward | allreduce issued | waited | optimizer | fit step | "
      "fit allreduce (min rank %)")
seen = set()
for r in rows:
    if (r["config"], r["batch"]) in seen:
        continue
    seen.add((r["config"], r["batch"]))
    print(f"{r['config']} | {r['batch']} | {r['gather_ms']:.3f} | {r['forward_ms']:.3f} | {r['backward_ms']:.3f} | "
          f"{r['allreduce_issued_ms']:.3f} | {r['allreduce_waited_ms']:.3f} | {r['optimizer_ms']:.3f} | "
          f"{r['step_ms']:.3f} | {r['allreduce_ms']:.3f} ({100 * r['allreduce_fraction_min_rank']:.1f}%)")
print()
print(f"wrote {summary_path} and {raw_path}")
EOF
done
