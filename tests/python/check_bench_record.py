#!/usr/bin/env python3
# Reads the records `shardfit bench --json FILE` appends (JSON Lines: one object per line) as a user's script would,
# with the standard library's json module, and checks that every field README.md's "Scaling benchmark" section
# names is there and sane. Not part of the trainer: tests/launch/test_bench.cpp runs it.
"""Usage: check_bench_record.py FILE --records N --ranks P --mode strong|weak --global-batch G

Checks the last record against the run described by the flags (and every record for the fields and their
invariants). Prints "ok: N record(s)" and exits 0, or prints "FAIL: <why>" and exits 1 on the first problem.
"""
import argparse
import json
import math
import sys


def fail(why):
    print(f"FAIL: {why}")
    sys.exit(1)


def need(record, path, kind):
    value = record
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            fail(f"no field {path}")
        value = value[key]
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            fail(f"{path} = {value!r}: expected a finite number")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"{path} = {value!r}: expected an integer")
    elif not isinstance(value, kind):
        fail(f"{path} = {value!r}: expected {kind.__name__}")
    return value


def close(a, b, rel=1e-9):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def check(record):
    if need(record, "kind", str) != "shardfit_bench":
        fail("kind is not shardfit_bench")
    for path in ("time_utc", "command", "model.name", "model.layers", "model.optimizer", "model.loss", "mode",
                 "host_names", "machine.cpu_model", "machine.onednn_isa", "machine.mpi_library",
                 "machine.mpi_transport"):
        if not need(record, path, str):
            fail(f"{path} is empty")
    ranks = need(record, "ranks", int)
    hosts = need(record, "hosts", int)
    if not 1 <= hosts <= ranks:
        fail(f"hosts = {hosts} with {ranks} ranks")
    if len(record["host_names"].split(",")) != hosts:
        fail(f"host_names {record['host_names']!r} does not name {hosts} host(s)")
    if need(record, "threads_per_rank", int) < 1:
        fail("threads_per_rank < 1")
    need(record, "oversubscribed", bool)
    need(record, "overlap", bool)
    if need(record, "model.parameters", int) < 1:
        fail("model.parameters < 1")

    batch = need(record, "batch.global", int)
    lo, hi = need(record, "batch.per_rank_min", int), need(record, "batch.per_rank_max", int)
    if not (1 <= lo <= hi <= lo + 1) or not close(need(record, "batch.per_rank", float), batch / ranks):
        fail(f"batch {record['batch']} does not split {batch} over {ranks} ranks")
    steps = need(record, "steps", int)
    if steps < 1 or need(record, "warmup_steps", int) < 0:
        fail("steps < 1 or warmup_steps < 0")

    # Each rank's peak resident memory: more than nothing, less than a terabyte, the max the largest of them.
    peaks = need(record, "peak_rss_bytes.by_rank", list)
    if len(peaks) != ranks or not all(isinstance(p, int) and 0 < p < 2**40 for p in peaks):
        fail(f"peak_rss_bytes.by_rank {peaks}: expected {ranks} positive byte counts")
    if need(record, "peak_rss_bytes.max", int) != max(peaks):
        fail(f"peak_rss_bytes.max is not the largest of {peaks}")

    total = need(record, "samples_per_second.total", float)
    if total <= 0:
        fail(f"samples_per_second.total = {total}")
    if not close(need(record, "samples_per_second.per_rank", float), total / ranks):
        fail("samples_per_second.per_rank is not total / ranks")
    by_rank = need(record, "samples_per_second.by_rank", list)
    low, high = need(record, "samples_per_second.per_rank_min", float), need(record, "samples_per_second.per_rank_max",
                                                                             float)
    if len(by_rank) != ranks or min(by_rank) != low or max(by_rank) != high or low <= 0:
        fail(f"samples_per_second.by_rank {by_rank} against min {low}, max {high}")

    s = {k: need(record, f"step_seconds.{k}", float) for k in ("min", "p50", "p90", "max", "mean")}
    if not (0 < s["min"] <= s["p50"] <= s["p90"] <= s["max"]) or not (s["min"] <= s["mean"] <= s["max"]):
        fail(f"step_seconds out of order: {s}")

    phases = {k: need(record, f"phase_seconds.{k}", float)
              for k in ("gather", "forward", "backward", "optimizer", "exposed_comm", "allreduce_issued",
                        "allreduce_waited", "sum", "step")}
    if any(v < 0 for v in phases.values()):
        fail(f"a negative phase: {phases}")
    parts = sum(phases[k] for k in ("gather", "forward", "backward", "optimizer", "exposed_comm"))
    if not close(parts, phases["sum"], 1e-6):
        fail(f"phase_seconds.sum {phases['sum']} is not the sum of the phases {parts}")
    if not close(phases["exposed_comm"], phases["allreduce_issued"] + phases["allreduce_waited"], 1e-6):
        fail("exposed_comm is not allreduce issued + waited")
    # The phases cover the step but for a few clock reads: within 5% (or 50 us for tiny steps).
    if abs(phases["sum"] - phases["step"]) > 0.05 * phases["step"] + 50e-6:
        fail(f"phases sum to {phases['sum']} s but a step takes {phases['step']} s")
    if not close(phases["step"], s["mean"], 1e-6):
        fail(f"phase_seconds.step {phases['step']} is not step_seconds.mean {s['mean']}")
    share = need(record, "exposed_comm_share", float)
    if not close(share, phases["exposed_comm"] / phases["step"], 1e-6):
        fail("exposed_comm_share is not exposed_comm / step")

    bytes_per_step = need(record, "allreduce.bytes_per_step", int)
    seconds = need(record, "allreduce.seconds_per_step", float)
    algbw = need(record, "allreduce.algbw_gb_per_s", float)
    busbw = need(record, "allreduce.busbw_gb_per_s", float)
    raw_bytes = need(record, "raw_allreduce.bytes", int)
    raw_seconds = need(record, "raw_allreduce.seconds", float)
    raw_algbw = need(record, "raw_allreduce.algbw_gb_per_s", float)
    raw_busbw = need(record, "raw_allreduce.busbw_gb_per_s", float)
    need(record, "raw_allreduce.repetitions", int)
    buckets = need(record, "allreduce.buckets", int)
    bucket_bytes = need(record, "allreduce.bucket_bytes", int)
    if bucket_bytes < 4 or bucket_bytes % 4 != 0:
        fail(f"allreduce.bucket_bytes = {bucket_bytes}: expected a multiple of 4, at least 4")
    if ranks == 1:
        if bytes_per_step != 0 or raw_bytes != 0 or seconds != 0 or algbw != 0 or busbw != 0 or raw_busbw != 0:
            fail(f"one rank exchanges nothing, yet allreduce {record['allreduce']}, raw {record['raw_allreduce']}")
        return
    # float32: 4 bytes a gradient, in buckets of bucket_bytes. bfloat16 (dist/gradient_reducer.h, note 12): bucket 0,
    # at most 4096 gradients, stays f32 and the rest travels as bf16, 2 bytes each, in buckets of as many gradients
    # as an f32 bucket holds.
    dtype = need(record, "allreduce.dtype", str)
    parameters = record["model"]["parameters"]
    per_bucket = bucket_bytes // 4
    if dtype == "float32":
        expected_bytes = 4 * parameters
        expected_buckets = -(-bytes_per_step // bucket_bytes)
    elif dtype == "bfloat16":
        first = min(parameters, 4096, per_bucket)
        expected_bytes = 4 * first + 2 * (parameters - first)
        expected_buckets = 1 + -(-(parameters - first) // per_bucket)
    else:
        fail(f"allreduce.dtype {dtype!r}: expected float32 or bfloat16")
    if bytes_per_step != expected_bytes or raw_bytes != bytes_per_step or buckets < 1:
        fail(f"allreduce bytes {bytes_per_step} (raw {raw_bytes}) for {record['model']['parameters']} parameters")
    if seconds <= 0 or raw_seconds <= 0:
        fail(f"allreduce seconds {seconds}, raw {raw_seconds}")
    if not close(algbw, bytes_per_step / seconds / 1e9, 1e-6) or not close(raw_algbw, raw_bytes / raw_seconds / 1e9,
                                                                            1e-6):
        fail("algbw is not bytes / allreduce seconds (GB/s)")
    factor = 2 * (ranks - 1) / ranks
    if not close(busbw, algbw * factor, 1e-9) or not close(raw_busbw, raw_algbw * factor, 1e-9):
        fail(f"busbw {busbw} is not algbw {algbw} x 2(P-1)/P")
    if buckets != expected_buckets:
        fail(f"{buckets} bucket(s) of up to {bucket_bytes} bytes for {bytes_per_step} bytes")
    # The fastest rank's allreduce time is at most the ranks' mean exposed communication; with overlap the exchange
    # runs partly during backward, so it may be longer than what is left exposed.
    if not record["overlap"] and seconds > phases["exposed_comm"] * (1 + 1e-9):
        fail(f"allreduce {seconds} s a step against exposed communication {phases['exposed_comm']} s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--ranks", type=int, required=True)
    parser.add_argument("--mode", required=True)
    parser.add_argument("--global-batch", type=int, required=True)
    parser.add_argument("--overlap", choices=["on", "off"], default="off")
    parser.add_argument("--bucket-bytes", type=int, default=4 << 20)
    args = parser.parse_args()
    with open(args.file, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if len(lines) != args.records:
        fail(f"{len(lines)} line(s) in {args.file}: expected {args.records} record(s)")
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            fail(f"line {number} is no JSON: {error}")
    for record in records:
        check(record)
    last = records[-1]
    expected = {"ranks": args.ranks, "mode": args.mode, "overlap": args.overlap == "on"}
    for key, value in expected.items():
        if last[key] != value:
            fail(f"{key} = {last[key]!r}: expected {value!r}")
    if last["allreduce"]["bucket_bytes"] != args.bucket_bytes:
        fail(f"allreduce.bucket_bytes = {last['allreduce']['bucket_bytes']}: expected {args.bucket_bytes}")
    if last["batch"]["global"] != args.global_batch:
        fail(f"batch.global = {last['batch']['global']}: expected {args.global_batch}")
    print(f"ok: {len(records)} record(s)")


if __name__ == "__main__":
    main()
