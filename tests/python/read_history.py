#!/usr/bin/env python3
# Reads a shardfit history folder as a Python user would (json, csv, and history.pb when google.protobuf is
# importable) and checks that the three files agree exactly. Standard library only; not part of the trainer.
"""Usage: read_history.py DIR [--proto PATH] [--require-pb]

Checks history.json against history.csv (and history.pb through classes generated from the project's .proto with
protoc), then prints one canonical line per list, values as repr() (shortest round-trip text), for the C++ test:

    epoch 0 1 2
    key loss 0.5 0.3333333333333333 nan
    seconds ...
    samples_per_second ...
    param epochs 3
    pb checked            (or: pb skipped: <reason>)

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

FIXED_KEYS = {"epoch", "params", "seconds", "samples_per_second", "diagnosis"}


def fail(message):
    print("read_history.py: " + message, file=sys.stderr)
    sys.exit(1)


def same(a, b):
    # Exact equality, with NaN equal to NaN: the files must round-trip every double bit for bit.
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def same_list(a, b):
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))


def load_json(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    history = json.loads(text)  # accepts NaN / Infinity, as shardfit writes them
    if not isinstance(history, dict):
        fail(f"{path}: not an object")
    if list(history) != sorted(history):
        fail(f"{path}: keys not sorted: {list(history)}")
    for name in ("epoch", "params", "seconds", "samples_per_second"):
        if name not in history:
            fail(f"{path}: no '{name}'")
    epochs = history["epoch"]
    if not all(isinstance(e, int) for e in epochs):
        fail(f"{path}: epoch holds non-integers")
    for name in ("seconds", "samples_per_second"):
        if len(history[name]) != len(epochs):
            fail(f"{path}: {name} has {len(history[name])} entries for {len(epochs)} epochs")
    for key, values in history.items():
        if key in FIXED_KEYS:
            continue
        if not isinstance(values, list) or not all(isinstance(v, float) for v in values):
            fail(f"{path}: '{key}' is not a list of floats")
        if len(values) > len(epochs):
            fail(f"{path}: '{key}' has more entries than epochs")
    return history


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
            if field != "":
                columns[key].append(float(field))
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


def check_pb(history_pb, history, path):
    epochs = [record.epoch for record in history_pb.epochs]
    if epochs != history["epoch"]:
        fail(f"{path}: epochs {epochs} != history.json's {history['epoch']}")
    lists = {}
    for record in history_pb.epochs:
        for key, value in record.values.items():
            lists.setdefault(key, []).append(value)
    json_lists = {key: value for key, value in history.items() if key not in FIXED_KEYS}
    if sorted(lists) != sorted(json_lists):
        fail(f"{path}: keys {sorted(lists)} != history.json's {sorted(json_lists)}")
    for key, values in lists.items():
        if not same_list(values, json_lists[key]):
            fail(f"{path}: '{key}' {values} != history.json's {json_lists[key]}")
    for name in ("seconds", "samples_per_second"):
        values = [getattr(record, name) for record in history_pb.epochs]
        if not same_list(values, history[name]):
            fail(f"{path}: {name} differs from history.json")
    for name, value in history["params"].items():
        if getattr(history_pb.params, name) != value:
            fail(f"{path}: params.{name} differs from history.json")
    if history_pb.HasField("diagnosis") != ("diagnosis" in history):
        fail(f"{path}: diagnosis present in one file only")
    if "diagnosis" in history:
        diagnosis = history["diagnosis"]
        for name in ("verdict", "summary", "best_epoch", "overfitting_from_epoch", "best_val_loss"):
            if not same(getattr(history_pb.diagnosis, name), diagnosis[name]):
                fail(f"{path}: diagnosis.{name} differs from history.json")
        if dict(history_pb.diagnosis.numbers) != diagnosis["numbers"]:
            fail(f"{path}: diagnosis.numbers differs from history.json")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir")
    default_proto = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto", "shardfit.proto")
    parser.add_argument("--proto", default=default_proto)
    parser.add_argument("--require-pb", action="store_true", help="fail instead of skipping history.pb")
    args = parser.parse_args()

    json_path = os.path.join(args.dir, "history.json")
    csv_path = os.path.join(args.dir, "history.csv")
    pb_path = os.path.join(args.dir, "history.pb")
    history = load_json(json_path)

    csv_epochs, csv_columns = load_csv(csv_path)
    if csv_epochs != history["epoch"]:
        fail(f"{csv_path}: epochs {csv_epochs} != history.json's {history['epoch']}")
    json_lists = {key: value for key, value in history.items() if key not in FIXED_KEYS}
    if sorted(csv_columns) != sorted(json_lists):
        fail(f"{csv_path}: keys {sorted(csv_columns)} != history.json's {sorted(json_lists)}")
    for key, values in csv_columns.items():
        if not same_list(values, json_lists[key]):
            fail(f"{csv_path}: '{key}' {values} != history.json's {json_lists[key]}")

    history_pb, skipped = load_pb(pb_path, args.proto)
    if history_pb is not None:
        check_pb(history_pb, history, pb_path)
    elif args.require_pb:
        fail(f"cannot read {pb_path}: {skipped}")

    print("epoch " + " ".join(str(e) for e in history["epoch"]))
    for key in sorted(json_lists):
        print(f"key {key} " + " ".join(repr(v) for v in json_lists[key]))
    for name in ("seconds", "samples_per_second"):
        print(name + " " + " ".join(repr(v) for v in history[name]))
    for name, value in sorted(history["params"].items()):
        print(f"param {name} {value}")
    print("pb checked" if history_pb is not None else f"pb skipped: {skipped}")


if __name__ == "__main__":
    main()
