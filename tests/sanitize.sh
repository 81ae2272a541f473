#!/usr/bin/env bash
# One command for the AddressSanitizer + UndefinedBehaviorSanitizer run of the test suite:
#   bash tests/sanitize.sh [ctest -R regex]
# Configures build-asan/ (RelWithDebInfo, -fsanitize=address,undefined), builds everything, and runs ctest
# (all tests but the SLURM ones, slurm_*, which need root and a SLURM of their own; or only those matching the regex
# given).
# Any report fails the test that triggered it: UBSan halts on its first finding, ASan always does.
# Leak checking is off: Open MPI and its plugins keep allocations to exit by design, which LeakSanitizer would
# report from every rank of every MPI test; the errors that corrupt memory (overflows, use after free) are caught.
# allocator_may_return_null: a failed allocation returns null as malloc does, since the code checks for it (and
# tests provoke one); ASan's default would end the process instead.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${SHARDFIT_ASAN_BUILD:-build-asan}
jobs=${SHARDFIT_JOBS:-$(nproc)}
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"

# CMAKE_CXX_COMPILER_LAUNCHER=ccache in the environment is honoured, as in any CMake build.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  >/dev/null
cmake --build "$build" -j "$jobs"

# A rank started by mpirun inside a CLI test may die of a report in a test that expects the job to fail, and such a
# test shows the ranks' stderr only when it fails itself. So ASan writes its reports to files, and every file fails
# the run (printed below); UBSan (GCC's libubsan ignores log_path next to ASan) exits with status 86, which no
# shardfit path uses, and prints to stderr.
reports=$PWD/$build/sanitizer_reports
rm -rf "$reports" && mkdir -p "$reports"
export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:halt_on_error=1:log_path=$reports/asan
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=86

selection=(-E '^slurm_')
if [ $# -gt 0 ]; then selection=(-R "$1" -E '^slurm_'); fi
status=0
ctest --test-dir "$build" --output-on-failure -j "$jobs" "${selection[@]}" || status=$?
# Only errors count: with allocator_may_return_null ASan also logs a WARNING for each refused allocation, which
# tests provoke on purpose (FloatBufferAllocation).
errors=$(grep -l "ERROR: AddressSanitizer" "$reports"/* 2>/dev/null || true)
if [ -n "$errors" ]; then
  echo "sanitize: AddressSanitizer reports in $reports:"
  for report in $errors; do
    echo "== $report"
    cat "$report"
  done
  status=1
fi
[ "$status" -eq 0 ] && echo "sanitize: every test passed, no sanitizer report"
exit "$status"
