#!/usr/bin/env python3
# Reads a shardfit history folder as a Python user would (history.json, run.json, csv, and history.pb when
# google.protobuf is importable) and checks that the files agree exactly. Standard library only (pandas is used when
# it is installed); not part of the trainer.
"""Usage: read_history.py DIR [--proto PATH] [--require-pb]

Checks that history.json is Keras's history.history (every value a list of floats, one entry per epoch, so that
pandas.DataFrame takes it as it is), checks it and run.json against history.csv (and history.pb through classes
generated from the project's .proto with protoc), then prints one canonical line per list, values as repr()
(shortest round-trip text), for the C++ test:

    epoch 0 1 2
    key loss 0.5 0.3333333333333333 nan
    seconds ...
    samples_per_second ...
    param epochs 3
    pb checked            (or: pb skipped: <reason>)
    pandas 3 rows         (or: pandas skipped: <reason>)

Exits 1 with a message on the first disagreement.
"""

import argparse
import csv
import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

RUN_KEYS = {"epoch", "params", "seconds", "samples_per_second", "diagnosis", "peak_rss_bytes"}


def fail(message):
    print("read_history.py: " + message, file=sys.stderr)
    sys.exit(1)


def same(a, b):
    # Exact equality, with NaN equal to NaN: the files must round-trip every double bit for bit. A value an epoch
    # lacks is an empty csv field (None here) and NaN in history.json.
    if a is None or b is None:
        a, b = (float("nan") if a is None else a), (float("nan") if b is None else b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def same_list(a, b):
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))


def load_object(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)  # accepts NaN / Infinity, as shardfit writes them
    if not isinstance(data, dict):
        fail(f"{path}: not an object")
    if list(data) != sorted(data):
        fail(f"{path}: keys not sorted: {list(data)}")
    return data


def load_run(path):
    run = load_object(path)
    for name in ("epoch", "params", "seconds", "samples_per_second"):
        if name not in run:
            fail(f"{path}: no '{name}'")
    if set(run) - RUN_KEYS:
        fail(f"{path}: unexpected keys {sorted(set(run) - RUN_KEYS)}")
    epochs = run["epoch"]
    if not all(isinstance(e, int) for e in epochs):
        fail(f"{path}: epoch holds non-integers")
    for name in ("seconds", "samples_per_second"):
        if len(run[name]) != len(epochs):
            fail(f"{path}: {name} has {len(run[name])} entries for {len(epochs)} epochs")
    # One per rank (the params' world_size), each a process's peak resident bytes: more than nothing.
    peaks = run.get("peak_rss_bytes")
    if peaks is not None:
        if not all(isinstance(p, int) and p > 0 for p in peaks):
            fail(f"{path}: peak_rss_bytes holds a value that is not a positive integer: {peaks}")
        ranks = run["params"].get("world_size")
        if ranks is not None and len(peaks) != ranks:
            fail(f"{path}: peak_rss_bytes has {len(peaks)} entries for {ranks} ranks")
    return run


def load_history(path, epoch_count):
    """history.json: {key: [one float per epoch]} and nothing else (Keras's history.history)."""
    history = load_object(path)
    for key, values in history.items():
        if not isinstance(values, list) or not all(isinstance(v, float) for v in values):
            fail(f"{path}: '{key}' is not a list of floats")
        if len(values) != epoch_count:
            fail(f"{path}: '{key}' has {len(values)} entries for {epoch_count} epochs")
    return history


def check_pandas(path, epoch_count):
    """The line a user types: pd.DataFrame(json.load(open("history.json")))."""
    try:
        pandas = importlib.import_module("pandas")
    except ImportError as error:
        return f"pandas skipped: {error}"
    with open(path, encoding="utf-8") as f:
        frame = pandas.DataFrame(json.load(f))
    if len(frame) != epoch_count and len(frame.columns) > 0:
        fail(f"{path}: pandas made {len(frame)} rows for {epoch_count} epochs")
    return f"pandas {len(frame)} rows"


def load_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][0] != "epoch":
        fail(f"{path}: header does not start with 'epoch'")
    header = rows[0]
    keys = header[1:]
    if keys != sorted(keys):
        fail(f"{path}: header keys not sorted: {keys}")
    epochs, columns = [], {key: [] for key in keys}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            fail(f"{path}:{number}: {len(row)} fields for {len(header)} columns")
        epochs.append(int(row[0]))
        for key, field in zip(keys, row[1:]):
            columns[key].append(float(field) if field != "" else None)  # None: the epoch lacks the key
    return epochs, columns


def load_pb(path, proto):
    """Returns (History message, None) or (None, reason it was not read)."""
    try:
        importlib.import_module("google.protobuf")
    except ImportError as error:
        return None, f"google.protobuf not importable ({error})"
    protoc = os.environ.get("PROTOC") or shutil.which("protoc")
    if not protoc:
        return None, "protoc not found"
    with tempfile.TemporaryDirectory() as out:
        folder = os.path.dirname(os.path.abspath(proto))
        result = subprocess.run([protoc, f"--python_out={out}", f"-I{folder}", os.path.abspath(proto)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            fail(f"protoc failed on {proto}: {result.stderr.strip()}")
        sys.path.insert(0, out)
        try:
            module = importlib.import_module("shardfit_pb2")
        finally:
            sys.path.pop(0)
    history = module.History()
    with open(path, "rb") as f:
        history.ParseFromString(f.read())
    return history, None


def check_pb(history_pb, history, run, path):
    epochs = [record.epoch for record in history_pb.epochs]
    if epochs != run["epoch"]:
        fail(f"{path}: epochs {epochs} != run.json's {run['epoch']}")
    keys = sorted({key for record in history_pb.epochs for key in record.values})
    if keys != sorted(history):
        fail(f"{path}: keys {keys} != history.json's {sorted(history)}")
    for key in keys:
        values = [record.values[key] if key in record.values else None for record in history_pb.epochs]
        if not same_list(values, history[key]):
            fail(f"{path}: '{key}' {values} != history.json's {history[key]}")
    for name in ("seconds", "samples_per_second"):
        values = [getattr(record, name) for record in history_pb.epochs]
        if not same_list(values, run[name]):
            fail(f"{path}: {name} differs from run.json")
    if list(history_pb.peak_rss_bytes) != run.get("peak_rss_bytes", []):
        fail(f"{path}: peak_rss_bytes differs from run.json")
    for name, value in run["params"].items():
        if getattr(history_pb.params, name) != value:
            fail(f"{path}: params.{name} differs from run.json")
    if history_pb.HasField("diagnosis") != ("diagnosis" in run):
        fail(f"{path}: diagnosis present in one file only")
    if "diagnosis" in run:
        diagnosis = run["diagnosis"]
        for name in ("verdict", "summary", "best_epoch", "overfitting_from_epoch", "best_val_loss"):
            if not same(getattr(history_pb.diagnosis, name), diagnosis[name]):
                fail(f"{path}: diagnosis.{name} differs from run.json")
        if dict(history_pb.diagnosis.numbers) != diagnosis["numbers"]:
            fail(f"{path}: diagnosis.numbers differs from run.json")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir")
    default_proto = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto", "shardfit.proto")
    parser.add_argument("--proto", default=default_proto)
    parser.add_argument("--require-pb", action="store_true", help="fail instead of skipping history.pb")
    args = parser.parse_args()

    json_path = os.path.join(args.dir, "history.json")
    run_path = os.path.join(args.dir, "run.json")
    csv_path = os.path.join(args.dir, "history.csv")
    pb_path = os.path.join(args.dir, "history.pb")
    run = load_run(run_path)
    history = load_history(json_path, len(run["epoch"]))

    csv_epochs, csv_columns = load_csv(csv_path)
    if csv_epochs != run["epoch"]:
        fail(f"{csv_path}: epochs {csv_epochs} != run.json's {run['epoch']}")
    if sorted(csv_columns) != sorted(history):
        fail(f"{csv_path}: keys {sorted(csv_columns)} != history.json's {sorted(history)}")
    for key, values in csv_columns.items():
        if not same_list(values, history[key]):
            fail(f"{csv_path}: '{key}' {values} != history.json's {history[key]}")

    history_pb, skipped = load_pb(pb_path, args.proto)
    if history_pb is not None:
        check_pb(history_pb, history, run, pb_path)
    elif args.require_pb:
        fail(f"cannot read {pb_path}: {skipped}")
    pandas_line = check_pandas(json_path, len(run["epoch"]))

    print("epoch " + " ".join(str(e) for e in run["epoch"]))
    for key in sorted(history):
        print(f"key {key} " + " ".join(repr(v) for v in history[key]))
    for name in ("seconds", "samples_per_second"):
        print(name + " " + " ".join(repr(v) for v in run[name]))
    for name, value in sorted(run["params"].items()):
        print(f"param {name} {value}")
    print("pb checked" if history_pb is not None else f"pb skipped: {skipped}")
    print(pandas_line)


if __name__ == "__main__":
    main()
