#!/usr/bin/python3
"""Runs a command and writes how much CPU OTHER processes used while it ran, as a percentage of the machine
(all cores x wall time), so a benchmark on a shared machine can tell a disturbed run from a clean one.
Not a profiler: the command's own output passes through untouched.

    bench/others_cpu.py REPORT_FILE -- COMMAND [ARGS...]

REPORT_FILE gets one line `others_pct=P wall_s=W own_cpu_s=C max_rss_bytes=M`. Others' CPU = the machine's busy
time from /proc/stat minus the command's own CPU time (getrusage of its waited-for process tree: mpirun's ranks and
torch.multiprocessing's workers count as the command's own). max_rss_bytes is the largest peak RSS of any one
process of that tree (RUSAGE_CHILDREN's ru_maxrss): a cross-check of the per-rank figures the trainers report
themselves. Exits with the command's status.
"""
import os
import resource
import subprocess
import sys
import time


def busy_and_total_seconds():
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / ticks, sum(fields[:8]) / ticks


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__)
    report, command = sys.argv[1], sys.argv[3:]
    busy0, total0 = busy_and_total_seconds()
    start = time.monotonic()
    status = subprocess.call(command)
    wall = time.monotonic() - start
    busy1, total1 = busy_and_total_seconds()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = usage.ru_utime + usage.ru_stime
    machine = max(total1 - total0, 1e-9)
    others = max(0.0, (busy1 - busy0) - own)
    with open(report, "w") as out:
        out.write(f"others_pct={100 * others / machine:.0f} wall_s={wall:.1f} own_cpu_s={own:.1f} "
                  f"max_rss_bytes={usage.ru_maxrss * 1024}\n")  # Linux reports KiB
    return status


if __name__ == "__main__":
    sys.exit(main())
