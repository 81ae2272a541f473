#!/usr/bin/env python3
# Checks what launch/scaling.sh leaves in its folder against its own records, the way a user's script would read
# them (json, xml.etree; standard library only): the table's speedup / ideal / efficiency recomputed from the
# records, the oversubscribed runs marked in records, table and chart, and the chart's panels, series and ideal
# lines. Not part of the trainer: tests/launch/test_scaling.sh runs it.
"""Usage: check_scaling.py DIR --modes "strong weak" --ranks "1 2 4" --oversubscribed-from P

Prints "ok: ..." and exits 0, or "FAIL: <why>" and exits 1 on the first problem.
"""
import argparse
import json
import sys
import xml.etree.ElementTree as ElementTree

SVG = "{http://www.w3.org/2000/svg}"


def fail(why):
    print(f"FAIL: {why}")
    sys.exit(1)


def table_rows(path):
    rows = []
    header = None
    with open(path, encoding="utf-8") as file:
        for line in file:
            if not line.startswith("|"):
                continue
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not set(cells[0]) <= set("-:"):
                rows.append(dict(zip(header, cells)))
    if header is None:
        fail(f"{path}: no table")
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--modes", required=True)
    parser.add_argument("--ranks", required=True)
    parser.add_argument("--oversubscribed-from", type=int, required=True)
    args = parser.parse_args()
    modes = args.modes.split()
    ranks = [int(p) for p in args.ranks.split()]

    with open(f"{args.dir}/records.jsonl", encoding="utf-8") as file:
        records = [json.loads(line) for line in file if line.strip()]
    if len(records) != len(modes) * len(ranks):
        fail(f"{len(records)} records for {len(modes)} modes x {len(ranks)} rank counts")
    for record in records:
        expected = record["ranks"] >= args.oversubscribed_from
        if record["oversubscribed"] != expected:
            fail(f"the {record['mode']} record at {record['ranks']} ranks says oversubscribed = "
                 f"{record['oversubscribed']}, expected {expected}")

    # The table: one row per record, its arithmetic against the mode's smallest rank count.
    rows = table_rows(f"{args.dir}/scaling.md")
    if len(rows) != len(records):
        fail(f"{len(rows)} table rows for {len(records)} records")
    for mode in modes:
        runs = sorted((r for r in records if r["mode"] == mode), key=lambda r: r["ranks"])
        base = runs[0]
        for run in runs:
            matching = [row for row in rows if row["mode"] == mode and int(row["ranks"]) == run["ranks"]]
            if len(matching) != 1:
                fail(f"{len(matching)} table rows for {mode} at {run['ranks']} ranks")
            row = matching[0]
            speedup = run["samples_per_second"]["total"] / base["samples_per_second"]["total"]
            ideal = run["ranks"] / base["ranks"]
            efficiency = speedup / ideal
            checks = [
                ("samples/s", f"{run['samples_per_second']['total']:.1f}"),
                ("speedup", f"{speedup:.2f}"),
                ("ideal", f"{ideal:.2f}"),
                ("efficiency", f"{100 * efficiency:.1f}%"),
                ("exposed comm", f"{100 * run['exposed_comm_share']:.1f}%"),
                ("global batch", str(run["batch"]["global"])),
                ("threads", str(run["threads_per_rank"])),
                ("hosts", str(run["hosts"])),
                ("oversubscribed", "yes" if run["oversubscribed"] else "no"),
                ("busbw GB/s",
                 f"{run['allreduce']['busbw_gb_per_s']:.3f}" if run["ranks"] > 1 else "-"),
            ]
            for column, text in checks:
                # The table rounds with C's printf, Python's format rounds the same doubles the same way, except
                # at an exact tie; allow the last digit to differ by one there.
                if row[column] != text and not close_text(row[column], text):
                    fail(f"{mode} at {run['ranks']} ranks: {column} is {row[column]!r}, the records give {text!r}")

    # The chart: two panels, each with one line per mode, the ideal, and hollow markers where oversubscribed.
    svg = ElementTree.parse(f"{args.dir}/scaling.svg").getroot()
    panels = {g.get("data-panel"): g for g in svg.iter(f"{SVG}g") if g.get("class") == "panel"}
    if sorted(panels) != ["efficiency", "speedup"]:
        fail(f"panels {sorted(panels)}, expected speedup and efficiency")
    for name, panel in panels.items():
        series = [p for p in panel.iter(f"{SVG}path") if p.get("class") == "series"]
        if sorted(p.get("data-mode") for p in series) != sorted(modes):
            fail(f"{name} panel: series of modes {[p.get('data-mode') for p in series]}, expected one per {modes}")
        if not [p for p in panel.iter(f"{SVG}path") if p.get("class") == "ideal"]:
            fail(f"{name} panel: no ideal line")
        points = [c for c in panel.iter(f"{SVG}circle") if c.get("class") == "point"]
        if len(points) != len(records):
            fail(f"{name} panel: {len(points)} points for {len(records)} records")
        for point in points:
            over = int(point.get("data-ranks")) >= args.oversubscribed_from
            if (point.get("data-oversubscribed") == "true") != over or (point.get("fill") == "#ffffff") != over:
                fail(f"{name} panel: the point at {point.get('data-ranks')} ranks is marked "
                     f"{point.get('data-oversubscribed')} with fill {point.get('fill')}")
    legend = "".join(svg.find(f"{SVG}g[@class='legend']").itertext())
    any_oversubscribed = any(record["oversubscribed"] for record in records)
    if ("oversubscribed" in legend) != any_oversubscribed:
        fail(f"the legend {'does not explain' if any_oversubscribed else 'explains'} hollow markers")
    print(f"ok: {len(records)} records, table and chart agree")


def close_text(a, b):
    try:
        return abs(float(a.rstrip("%")) - float(b.rstrip("%"))) <= 10 ** -(len(b.rstrip("%").split(".")[-1])) + 1e-12
    except ValueError:
        return False


if __name__ == "__main__":
    main()
