#!/usr/bin/env python3
# Reads the file `shardfit fit|bench --timeline FILE` writes as Perfetto or chrome://tracing would, with the standard
# library's json module, and checks it against the run that made it: the tracks, the phases of every step on every
# rank in order, the bucket spans against the gradient bytes, the epochs' spans on rank 0, that no span overlaps
# another of its own track partially, the clocks, and the times against the run's wall time. Not part of the trainer:
# tests/launch/test_timeline.cpp runs it.
"""Usage: check_timeline.py FILE --ranks P --steps A:B [--epoch-spans validation,checkpoint,...]
                          [--wall-seconds W]

--steps A:B: the global steps the file must hold, every one of them and no other ("0:0": none at all).
--epoch-spans: the epoch-level spans rank 0 must have at least one of each.
--wall-seconds: the wall time of the whole run, measured outside it; the spans must fit in it.
Prints "ok: R rank(s), S step(s), E span(s)" and exits 0, or prints "FAIL: <why>" and exits 1 on the first problem.
"""
import argparse
import json
import math
import sys
from collections import defaultdict

PHASES = ["load", "forward", "backward", "allreduce", "allreduce wait", "optimizer"]
TOLERANCE_US = 1.0  # clock reads are nanoseconds, written as microseconds with three decimals


def fail(why):
    print(f"FAIL: {why}")
    sys.exit(1)


def number(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        fail(f"{what} = {value!r}: expected a finite number")
    return value


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--ranks", type=int, required=True)
    parser.add_argument("--steps", required=True)
    parser.add_argument("--epoch-spans", default="")
    parser.add_argument("--wall-seconds", type=float, default=0.0)
    args = parser.parse_args()
    first, last = (int(v) for v in args.steps.split(":"))
    expected_steps = set(range(first, last + 1)) if last > 0 else set()

    with open(args.file, encoding="utf-8") as f:
        trace = json.load(f)
    if not isinstance(trace, dict) or not isinstance(trace.get("traceEvents"), list):
        fail("expected an object with a traceEvents list")
    if trace.get("displayTimeUnit") != "ms":
        fail(f"displayTimeUnit = {trace.get('displayTimeUnit')!r}: expected 'ms'")
    other = trace.get("otherData")
    if not isinstance(other, dict):
        fail("no otherData object")
    for key in ("command", "hosts", "first_step", "last_step", "steps_recorded", "events_dropped", "clock_offset_us",
                "clock_offset_end_us", "clock_uncertainty_us", "gradient_bytes", "buckets", "max_events_per_rank"):
        if key not in other:
            fail(f"otherData has no {key}")
    ranks = args.ranks
    if other.get("ranks") != ranks:
        fail(f"otherData.ranks = {other.get('ranks')!r}: expected {ranks}")
    hosts = other["hosts"].split(",")
    if len(hosts) != ranks:
        fail(f"otherData.hosts = {other['hosts']!r}: expected {ranks} host names")
    for key in ("steps_recorded", "events_dropped", "clock_offset_us", "clock_offset_end_us", "clock_uncertainty_us"):
        if not isinstance(other[key], list) or len(other[key]) != ranks:
            fail(f"otherData.{key} = {other[key]!r}: expected one value per rank")
    if any(d != 0 for d in other["events_dropped"]):
        fail(f"events were dropped: {other['events_dropped']}")
    if other["steps_recorded"] != [len(expected_steps)] * ranks:
        fail(f"otherData.steps_recorded = {other['steps_recorded']}: expected {len(expected_steps)} on every rank")
    offsets = other["clock_offset_us"]
    uncertainty = other["clock_uncertainty_us"]
    if offsets[0] != 0 or uncertainty[0] != 0:
        fail(f"rank 0's clock offset is {offsets[0]} +- {uncertainty[0]}: expected 0 (its clock is the reference)")
    for r in range(ranks):
        number(offsets[r], f"clock_offset_us[{r}]")
        if number(uncertainty[r], f"clock_uncertainty_us[{r}]") < 0:
            fail(f"clock_uncertainty_us[{r}] = {uncertainty[r]}: expected >= 0")
        # One host, one CLOCK_MONOTONIC: the true offset is 0, so the measured one is within its bound of it.
        if hosts[r] == hosts[0]:
            for key in ("clock_offset_us", "clock_offset_end_us"):
                if abs(other[key][r]) > uncertainty[r] + TOLERANCE_US:
                    fail(f"rank {r} shares rank 0's host but {key} = {other[key][r]} exceeds its uncertainty "
                         f"{uncertainty[r]}")

    # Tracks: each rank a process named "rank R (host)", sorted by rank, with threads main (0) and allreduce (1).
    names = {}
    threads = defaultdict(dict)
    spans = []
    for e in trace["traceEvents"]:
        if not isinstance(e, dict) or e.get("ph") not in ("M", "X"):
            fail(f"unexpected event {e!r}: expected metadata (M) and complete (X) events only")
        pid, tid = e.get("pid"), e.get("tid")
        if not isinstance(pid, int) or not 0 <= pid < ranks or tid not in (0, 1):
            fail(f"event {e!r}: expected pid a rank in [0, {ranks}) and tid 0 or 1")
        if e["ph"] == "M":
            if e["name"] == "process_name":
                names[pid] = e["args"]["name"]
            elif e["name"] == "thread_name":
                threads[pid][tid] = e["args"]["name"]
            continue
        number(e.get("ts"), "ts")
        if number(e.get("dur"), "dur") < 0:
            fail(f"negative duration: {e!r}")
        spans.append(e)
    for r in range(ranks):
        if names.get(r) != f"rank {r} ({hosts[r]})":
            fail(f"process {r} is named {names.get(r)!r}: expected 'rank {r} ({hosts[r]})'")
        if threads[r] != {0: "main", 1: "allreduce"}:
            fail(f"rank {r}'s threads are {threads[r]}: expected 0 main, 1 allreduce")

    # No span overlaps another of its own track partially: each is disjoint from or nested in the other.
    by_track = defaultdict(list)
    for e in spans:
        by_track[(e["pid"], e["tid"])].append(e)
    for (pid, tid), track in by_track.items():
        track.sort(key=lambda e: (e["ts"], -e["dur"]))
        open_ends = []  # ends of the spans enclosing the current one
        for e in track:
            start, end = e["ts"], e["ts"] + e["dur"]
            while open_ends and open_ends[-1][0] <= start + TOLERANCE_US:
                open_ends.pop()
            if open_ends and end > open_ends[-1][0] + TOLERANCE_US:
                fail(f"rank {pid} track {tid}: {e['name']} [{start}, {end}] overlaps {open_ends[-1][1]} ending at "
                     f"{open_ends[-1][0]} partially")
            open_ends.append((end, e["name"]))

    # Every step of the range on every rank: a step span holding the phases, once each, in order; the buckets.
    steps = defaultdict(lambda: defaultdict(list))  # (rank, step) -> name -> spans
    for e in spans:
        step = e.get("args", {}).get("step")
        if step is not None:
            steps[(e["pid"], step)][e["name"]].append(e)
    found_steps = {step for (_, step) in steps}
    if found_steps != expected_steps:
        fail(f"steps {sorted(found_steps)[:5]}... ({len(found_steps)}) in the file: expected {first}:{last}")
    gradient_bytes = other["gradient_bytes"]
    buckets = other["buckets"]
    wall_us = args.wall_seconds * 1e6
    for r in range(ranks):
        step_total = 0.0
        for s in sorted(expected_steps):
            named = steps[(r, s)]
            if len(named.get("step", [])) != 1:
                fail(f"rank {r} step {s}: {len(named.get('step', []))} step spans: expected 1")
            whole = named["step"][0]
            step_total += whole["dur"]
            previous_end = whole["ts"] - TOLERANCE_US
            phase_sum = 0.0
            for phase in PHASES:
                if len(named.get(phase, [])) != 1:
                    fail(f"rank {r} step {s}: {len(named.get(phase, []))} '{phase}' spans: expected 1")
                p = named[phase][0]
                if p["ts"] < previous_end - TOLERANCE_US:
                    fail(f"rank {r} step {s}: '{phase}' starts at {p['ts']}, before the phase before it ends "
                         f"({previous_end})")
                previous_end = p["ts"] + p["dur"]
                phase_sum += p["dur"]
                if p["ts"] < whole["ts"] - TOLERANCE_US or previous_end > whole["ts"] + whole["dur"] + TOLERANCE_US:
                    fail(f"rank {r} step {s}: '{phase}' lies outside the step's span")
            # The step's span is made of the same clock reads as its phases: the load's first, the optimizer's last.
            load, optimizer = named["load"][0], named["optimizer"][0]
            if abs(whole["ts"] - load["ts"]) > TOLERANCE_US or abs(
                    whole["ts"] + whole["dur"] - optimizer["ts"] - optimizer["dur"]) > TOLERANCE_US:
                fail(f"rank {r} step {s}: the step's span [{whole['ts']}, +{whole['dur']}] is not from the load's "
                     f"start to the optimizer's end")
            if phase_sum > whole["dur"] + TOLERANCE_US:
                fail(f"rank {r} step {s}: the phases add up to {phase_sum} us, more than the step's {whole['dur']} us")
            bucket_spans = [e for name, found in named.items() if name.startswith("allreduce bucket ") for e in found]
            if ranks > 1:
                if sorted(e["args"]["bucket"] for e in bucket_spans) != list(range(buckets)):
                    fail(f"rank {r} step {s}: buckets {[e['args']['bucket'] for e in bucket_spans]}: expected "
                         f"0..{buckets - 1}")
                if sum(e["args"]["bytes"] for e in bucket_spans) != gradient_bytes:
                    fail(f"rank {r} step {s}: the buckets' bytes sum to "
                         f"{sum(e['args']['bytes'] for e in bucket_spans)}: expected the gradient's {gradient_bytes}")
            elif bucket_spans:
                fail(f"rank {r} step {s}: bucket spans at one rank, where nothing is exchanged")
            # Nothing else belongs to a step: the per-step control values ride with bucket 0, no span of their own.
            others = sorted(name for name in named if name not in PHASES and name != "step"
                            and not name.startswith("allreduce bucket "))
            if others:
                fail(f"rank {r} step {s}: spans {others} besides the step, its phases and its buckets")
        if wall_us > 0 and step_total > wall_us:
            fail(f"rank {r}'s steps add up to {step_total} us, more than the run's wall time {wall_us} us")

    # Aligned clocks: a blocking allreduce cannot end on one rank before every rank has begun it.
    for s in sorted(expected_steps) if ranks > 1 else []:
        for k in range(buckets):
            name = f"allreduce bucket {k}"
            spans_k = [(r, steps[(r, s)][name][0]) for r in range(ranks)]
            for r, a in spans_k:
                for q, b in spans_k:
                    slack = uncertainty[r] + uncertainty[q] + 2 * TOLERANCE_US
                    if a["ts"] + a["dur"] < b["ts"] - slack:
                        fail(f"step {s} {name}: rank {r} ends at {a['ts'] + a['dur']} before rank {q} begins at "
                             f"{b['ts']} (clocks misaligned beyond {slack} us)")

    if spans and wall_us > 0:
        extent = max(e["ts"] + e["dur"] for e in spans) - min(e["ts"] for e in spans)
        if extent > wall_us:
            fail(f"the spans cover {extent} us, more than the run's wall time {wall_us} us")

    # The epochs' spans rank 0 writes or computes.
    for kind in filter(None, args.epoch_spans.split(",")):
        found = [e for e in spans if e["pid"] == 0 and e["name"] == kind]
        if not found:
            fail(f"no '{kind}' span on rank 0")
        for e in found:
            if e.get("cat") != "epoch" or not isinstance(e.get("args", {}).get("epoch"), int):
                fail(f"'{kind}' span {e!r}: expected category epoch and its epoch number")

    print(f"ok: {ranks} rank(s), {len(expected_steps)} step(s), {len(spans)} span(s)")


if __name__ == "__main__":
    main()
