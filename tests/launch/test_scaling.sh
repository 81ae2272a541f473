#!/usr/bin/env bash
# launch/scaling.sh end to end: the mlp preset, strong and weak, at 1, 2 and 4 ranks on 2 CPUs (4 ranks
# oversubscribed), tiny steps; then its records, table and chart checked against each other
# (tests/python/check_scaling.py), and the refusals: an existing records file, a failing point, bad records to plot.
#   usage: tests/launch/test_scaling.sh SOURCE_DIR SHARDFIT_BIN
set -euo pipefail
source_dir=$1
bin=$2
python=/usr/bin/python3
[ -x "$python" ] || python=python3
if [ "$(nproc)" -lt 2 ]; then
  echo "skipped: one CPU, the sweep needs two"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() {
  echo "FAILED: $*" >&2
  exit 1
}
# Two CPUs whatever this machine has (taskset: every rank inherits the mask), so 4 ranks are oversubscribed here
# as on the 2-core CI machine, and bench's placement check sees it.
pin=()
if command -v taskset >/dev/null; then
  pin=(taskset -c "$("$python" -c 'import os; print(",".join(map(str, sorted(os.sched_getaffinity(0))[:2])))')")
fi
sweep=(bash "$source_dir/launch/scaling.sh" --shardfit "$bin" --model mlp --batch 32 --steps 2 --warmup-steps 1)

echo "== the sweep"
"${pin[@]}" "${sweep[@]}" --ranks "1 2 4" --modes "strong weak" --cores 2 --out "$work/sweep" >"$work/sweep.txt" 2>&1 ||
  {
    cat "$work/sweep.txt"
    fail "scaling.sh exited non-zero"
  }
cat "$work/sweep.txt"
for file in records.jsonl scaling.svg scaling.md sweep.txt logs/strong_4x1.log; do
  [ -s "$work/sweep/$file" ] || fail "no $file in the sweep's folder"
done
grep -q "oversubscribed: 4 threads on 2 cores" "$work/sweep.txt" || fail "the 4-rank points were not run oversubscribed"
grep -q "^| strong | 4 |.*| yes |$" "$work/sweep.txt" || fail "the table printed does not mark 4 ranks oversubscribed"
"$python" "$source_dir/tests/python/check_scaling.py" "$work/sweep" --modes "strong weak" --ranks "1 2 4" \
  --oversubscribed-from 4

echo "== an existing records file is refused, and --append adds to it"
status=0
"${sweep[@]}" --ranks 1 --modes strong --out "$work/sweep" >"$work/again.txt" 2>&1 || status=$?
cat "$work/again.txt"
[ "$status" -eq 2 ] || fail "a second sweep into the same folder exited $status, expected 2"
grep -q "records.jsonl exists: --append" "$work/again.txt" || fail "no message about the existing records"
[ "$(wc -l <"$work/sweep/records.jsonl")" -eq 6 ] || fail "the records file changed"
first_log=$(cksum <"$work/sweep/logs/strong_1x1.log")
"${sweep[@]}" --ranks 1 --modes strong --out "$work/sweep" --append >/dev/null 2>&1 || fail "--append failed"
[ "$(wc -l <"$work/sweep/records.jsonl")" -eq 7 ] || fail "--append did not add one record"
[ "$(cksum <"$work/sweep/logs/strong_1x1.log")" = "$first_log" ] || fail "--append overwrote the first sweep's log"
[ -s "$work/sweep/logs/sweep2/strong_1x1.log" ] || fail "--append did not keep its log in logs/sweep2/"
grep -q "^logs: $work/sweep/logs/sweep2$" "$work/sweep/sweep.txt" || fail "sweep.txt does not name logs/sweep2"

echo "== a failing point ends the sweep naming it, its log kept"
status=0
"${sweep[@]}" --ranks "1 2" --modes weak --out "$work/failing" -- --optimizer nonsense >"$work/failing.txt" 2>&1 ||
  status=$?
cat "$work/failing.txt"
[ "$status" -eq 1 ] || fail "a failing point exited $status, expected 1"
grep -q "the point weak, 1 rank(s) x 1 thread(s) failed" "$work/failing.txt" || fail "the failing point is not named"
grep -q -- "--optimizer nonsense" "$work/failing/logs/weak_1x1.log" || fail "the point's log does not hold the error"
[ ! -e "$work/failing/logs/weak_2x1.log" ] || fail "the sweep went on after a failed point"

echo "== plot tells records by their content, whatever the file is called"
cp "$work/sweep/records.jsonl" "$work/runs.json"
"$bin" plot "$work/runs.json" -o "$work/runs.svg" >/dev/null || fail "plot of records named .json failed"
"$python" -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$work/runs.svg" || fail "runs.svg"
[ -s "$work/runs.md" ] || fail "no table beside runs.svg"
rm -f "$work/runs.svg"

echo "== plot refuses bad records, naming file, line and field"
"$python" - "$work/sweep/records.jsonl" "$work/bad.jsonl" <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
second = json.loads(lines[1])
second["samples_per_second"]["total"] = "fast"
open(sys.argv[2], "w").write(lines[0] + "\n" + json.dumps(second) + "\n")
EOF
expect_refusal() {  # RECORDS EXPECTED_TEXT
  local status=0
  "$bin" plot "$1" -o "$work/out.svg" >"$work/plot.txt" 2>&1 || status=$?
  cat "$work/plot.txt"
  [ "$status" -ne 0 ] || fail "plot $1 succeeded"
  grep -qF "$2" "$work/plot.txt" || fail "plot $1: no '$2' in its message"
  [ ! -e "$work/out.svg" ] || fail "plot $1 wrote a chart"
}
expect_refusal "$work/bad.jsonl" "bad.jsonl:2: field samples_per_second.total: expected a number"
printf '{"loss": [1.0, 0.5]}\n' >"$work/other.jsonl"
expect_refusal "$work/other.jsonl" "other.jsonl:1: not a shardfit bench record"
sed -n 1p "$work/sweep/records.jsonl" >"$work/one.jsonl"
expect_refusal "$work/one.jsonl" "no series of the records has runs at two rank counts"
status=0
"$bin" plot "$work/sweep/records.jsonl" -o "$work/sweep/records.jsonl" >/dev/null 2>&1 || status=$?
[ "$status" -ne 0 ] || fail "plot -o over the records file succeeded"
[ "$(wc -l <"$work/sweep/records.jsonl")" -eq 7 ] || fail "plot -o replaced the records file"
echo "== with --hostfile, --cores counts one host's cores"
# A stand-in mpirun that only records its arguments: the placement decision is scaling.sh's, not Open MPI's.
mkdir -p "$work/fake"
printf '#!/bin/sh\necho "mpirun $*" >>"%s"\n' "$work/fake/calls" >"$work/fake/mpirun"
chmod +x "$work/fake/mpirun"
hostfile_sweep() {  # HOSTFILE_TEXT OUT: 1, 2 and 4 ranks x 2 threads on hosts of 2 cores each
  printf '%b' "$1" >"$work/hosts"
  rm -f "$work/fake/calls"
  PATH=$work/fake:$PATH bash "$source_dir/launch/scaling.sh" --shardfit "$bin" --modes strong --ranks "1 2 4" \
    --threads 2 --cores 2 --hostfile "$work/hosts" --out "$work/$2" >"$work/$2.txt" 2>&1 || true
}
hostfile_sweep 'node1 slots=1\nnode2 slots=1\nnode3 slots=1\nnode4 slots=1\n' hosts4
[ "$(grep -c -- "--bind-to core" "$work/fake/calls")" -eq 3 ] || {
  cat "$work/hosts4.txt"
  fail "one rank of 2 threads on each 2-core host was run oversubscribed"
}
hostfile_sweep '# two ranks a host\nnode1 slots=2\nnode2 slots=2\n' hosts2
grep -q "strong, 1 rank(s) x 2 thread(s)$" "$work/hosts2.txt" || fail "1 rank x 2 threads marked oversubscribed"
grep -q "strong, 2 rank(s) x 2 thread(s) (oversubscribed: 4 threads on 2 cores of a host)" "$work/hosts2.txt" ||
  fail "2 ranks x 2 threads on one 2-core host not run oversubscribed"

echo "== scaling.sbatch: a --mpirun of the user's is joined to the script's --mpi choice, not put in its place"
# A stand-in srun that offers pmix and records its arguments; the points "run" and write no record.
# shellcheck disable=SC2016  # $1 and $* belong to the stand-in: they expand when it runs
printf '#!/bin/sh\n[ "$1" = --mpi=list ] && { echo "srun: MPI types are...\nsrun: pmix"; exit 0; }\necho "srun $*" >>"%s"\n' \
  "$work/fake/calls" >"$work/fake/srun"
chmod +x "$work/fake/srun"
rm -f "$work/fake/calls"
(
  unset SLURM_NTASKS_PER_NODE SLURM_CPUS_PER_TASK SHARDFIT_SRUN_MPI
  PATH=$work/fake:$PATH SLURM_NTASKS=2 SLURM_JOB_ID=7 SLURM_SUBMIT_DIR=$work SHARDFIT_ROOT=$source_dir \
    SHARDFIT_BIN=$bin bash "$source_dir/launch/scaling.sbatch" --modes strong --mpirun "--label --quiet" \
    --out "$work/sbatch" >"$work/sbatch.txt" 2>&1 || true
)
[ "$(grep -c -- "^srun --mpi=pmix --label --quiet -n " "$work/fake/calls")" -eq 2 ] || {
  cat "$work/sbatch.txt" "$work/fake/calls"
  fail "scaling.sbatch with --mpirun: srun did not get --mpi=pmix and the user's arguments after it"
}

echo "ok: scaling.sh at 1, 2 and 4 ranks (4 oversubscribed), its table and chart, and its refusals"
