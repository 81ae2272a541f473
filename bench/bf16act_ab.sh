#!/usr/bin/env bash
# bench/bf16act_ab.sh: what bf16 activations layer to layer (branch i10-bf16act) change, before against after, on
# one machine: bench/dense_bench --dtype bf16 (the Dense step of 784-512-512-10 against plain bf16 oneDNN matmuls
# of the same sizes) and `shardfit bench --model mlp` under mixed_bfloat16, 1 rank x 2 threads, batches 32 / 128 /
# 512. Both builds run in turn within each repeat (order alternating repeat by repeat), all pinned to the same two
# CPUs, so a busy minute slows both alike; the table shows medians over the repeats.
#
#   ./bf16act_ab.sh            # expects ./before/{shardfit,dense_bench} and ./after/{shardfit,dense_bench}
#
# Needs bash, coreutils, taskset, awk; no Python, nothing installed. About 1.5-2.5 minutes on a 16-core Xeon.
# Environment: BEFORE / AFTER (folders, default ./before ./after), REPEATS (3), BATCHES ("32 128 512"),
# CPUS (taskset list, 0,1), THREADS (OpenMP threads, 2), STEPS (shardfit bench's measured steps, 40), OUT (folder
# for the raw files),
# LAUNCH (prefix for shardfit, empty: a 1-rank shardfit starts as an MPI singleton; if that fails on this MPI,
# LAUNCH="mpirun -np 1 --bind-to none" -- never let mpirun bind the rank to one core). TABLE_ONLY=1 OUT=DIR
# prints the table of an earlier run's files again.
set -euo pipefail

BEFORE=${BEFORE:-./before}
AFTER=${AFTER:-./after}
REPEATS=${REPEATS:-3}
BATCHES=${BATCHES:-"32 128 512"}
CPUS=${CPUS:-0,1}
THREADS=${THREADS:-2}
STEPS=${STEPS:-40}
OUT=${OUT:-bf16act_$(date -u +%Y%m%dT%H%M%SZ)}
read -r -a LAUNCH_CMD <<<"${LAUNCH:-}"

die() { echo "bf16act_device: $*" >&2; exit 2; }
for dir in "$BEFORE" "$AFTER"; do
  for bin in shardfit dense_bench; do [[ -x $dir/$bin ]] || die "missing $dir/$bin"; done
done
command -v taskset >/dev/null || die "taskset not found (util-linux)"
mkdir -p "$OUT"

cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
flags=$(grep -m1 -oE '\b(amx_bf16|avx512_bf16)\b' /proc/cpuinfo | sort -u | tr '\n' ' ' || true)
[[ -n $flags ]] || echo "note: this CPU has neither AMX-BF16 nor AVX512_BF16: shardfit runs mixed_bfloat16 as float32"
batch_list=$(tr ' ' ',' <<<"$BATCHES")
echo "bf16act_device: $cpu_model; bf16 flags: ${flags:-none}; CPUs $CPUS; $REPEATS repeats; batches $BATCHES"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); raw files in $OUT"
start=$(date +%s)

run_build() {  # build-name folder repeat
  local name=$1 dir=$2 r=$3 b
  OMP_NUM_THREADS=$THREADS taskset -c "$CPUS" "$dir/dense_bench" --dtype bf16 --batches "$batch_list" --repeats 3 \
    --no-primitives --csv "$OUT/dense_${name}_${r}.csv" >"$OUT/dense_${name}_${r}.log" 2>&1 ||
    die "$dir/dense_bench failed: see $OUT/dense_${name}_${r}.log"
  if [[ $r == 1 ]]; then  # the pieces once per build, at the largest batch: what is not a matmul
    local big=${BATCHES##* }
    OMP_NUM_THREADS=$THREADS taskset -c "$CPUS" "$dir/dense_bench" --dtype bf16 --batches "$big" --repeats 3 \
      --csv "$OUT/pieces_${name}.csv" >"$OUT/pieces_${name}.log" 2>&1 ||
      die "$dir/dense_bench failed: see $OUT/pieces_${name}.log"
  fi
  for b in $BATCHES; do
    OMP_NUM_THREADS=$THREADS taskset -c "$CPUS" ${LAUNCH_CMD[@]+"${LAUNCH_CMD[@]}"} "$dir/shardfit" bench --model mlp --batch-size "$b" \
      --steps "$STEPS" --warmup-steps 5 --dtype-policy mixed_bfloat16 >"$OUT/bench_${name}_${r}_${b}.log" 2>&1 ||
      die "$dir/shardfit bench failed: see $OUT/bench_${name}_${r}_${b}.log (try LAUNCH=\"mpirun -np 1 --bind-to none\")"
  done
}

for r in $(seq 1 "$REPEATS"); do
  [[ ${TABLE_ONLY:-0} == 1 ]] && break  # the table again from OUT's files
  if ((r % 2)); then order="before after"; else order="after before"; fi
  for name in $order; do
    if [[ $name == before ]]; then run_build before "$BEFORE" "$r"; else run_build after "$AFTER" "$r"; fi
  done
  echo "repeat $r done ($(($(date +%s) - start)) s, load $(cut -d' ' -f1 /proc/loadavg))"
done

median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2];
  else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# dense_bench's CSV, the fwd+bwd step row of a batch: field 9 shardfit_s, 10 reference_s. Scopes are "step" and
# "primitive-in-step", with "-bf16" inside them under --dtype bf16.
dense_field() {  # name batch field
  for r in $(seq 1 "$REPEATS"); do
    awk -F, -v b="$2" -v f="$3" '$2 == b && $3 ~ /^step/ && $4 == "fwd+bwd" {print $f}' "$OUT/dense_$1_$r.csv"
  done | median
}
dense_ratio() {  # name batch: reference time / Dense time, per repeat (the same reference in both builds)
  for r in $(seq 1 "$REPEATS"); do
    awk -F, -v b="$2" '$2 == b && $3 ~ /^step/ && $4 == "fwd+bwd" {print $10 / $9}' "$OUT/dense_$1_$r.csv"
  done | median
}
bench_field() {  # name batch what: total samples/s, or the fastest step (ms)
  for r in $(seq 1 "$REPEATS"); do
    local log="$OUT/bench_$1_${r}_$2.log"
    if [[ $3 == rate ]]; then awk '$1 == "samples/s" {print $2}' "$log"
    else sed -n 's/.* min \([0-9.]*\) ms.*/\1/p' "$log"; fi
  done | median
}
# The pieces' in-step times: the share of the Dense step that is not a matmul, and the x conversions.
pieces() {  # name
  awk -F, '$3 ~ /^primitive.*in-step$/ {t += $9; if ($5 == 0) o += $9; if ($4 ~ /x-to-bf16/) x += $9}
    END {if (t > 0) printf "%.1f%% not matmul, x-to-bf16 %.1f%% (%.0f of %.0f us)", 100 * o / t, 100 * x / t,
      x * 1e6, t * 1e6; else printf "n/a"}' "$OUT/pieces_$1.csv"
}

echo
echo "bf16 activations layer to layer, before -> after: medians of $REPEATS interleaved repeats, taskset -c $CPUS,"
echo "$THREADS OpenMP thread(s). $cpu_model; load at the end $(cut -d' ' -f1-3 /proc/loadavg); $(($(date +%s) - start)) s."
echo "dense: dense_bench --dtype bf16, 784-512-512-10 fwd+bwd ms/step; 'ceil' = bf16 matmul reference time / Dense"
echo "time (the same reference in both builds: its after/before quotient is the speedup with machine drift divided"
echo "out). bench: shardfit bench --model mlp (784-1024-1024-10) mixed_bfloat16 1 rank x $THREADS thread(s), samples/s and"
echo "its fastest step (ms)."
printf '%6s | %9s %9s %6s | %5s %5s %6s | %9s %9s %6s | %8s %8s\n' batch "dense bef" "dense aft" speed \
  "ceil" "ceil" "speed" "bench bef" "bench aft" speed "best bef" "best aft"
for b in $BATCHES; do
  db=$(dense_field before "$b" 9); da=$(dense_field after "$b" 9)
  cb=$(dense_ratio before "$b"); ca=$(dense_ratio after "$b")
  sb=$(bench_field before "$b" rate); sa=$(bench_field after "$b" rate)
  mb=$(bench_field before "$b" min); ma=$(bench_field after "$b" min)
  awk -v b="$b" -v db="$db" -v da="$da" -v cb="$cb" -v ca="$ca" -v sb="$sb" -v sa="$sa" -v mb="$mb" -v ma="$ma" \
    'BEGIN {printf "%6d | %9.3f %9.3f %5.2fx | %5.2f %5.2f %5.2fx | %9.0f %9.0f %5.2fx | %8.3f %8.3f\n",
      b, db * 1e3, da * 1e3, db / da, cb, ca, ca / cb, sb, sa, sa / sb, mb, ma}'
done
echo "pieces at batch ${BATCHES##* } (dense_bench, in step, repeat 1): before $(pieces before); after $(pieces after)"
