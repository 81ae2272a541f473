"""Per-epoch loss and val_loss of two history.json files, equal within a relative tolerance.

usage: compare_histories.py A_HISTORY LABEL_A B_HISTORY LABEL_B EPOCHS [LIMIT]
Exits non-zero naming the key and epoch when a value differs by more than LIMIT (default 1e-5, the P-ranks
tolerance) or when either file has another number of epochs than EPOCHS. Used by the multi-host tests, whose runs of
one global batch on several hosts must train as one rank does.
"""
import json
import sys

a_path, a_label, b_path, b_label, epochs = sys.argv[1:6]
limit = float(sys.argv[6]) if len(sys.argv) > 6 else 1e-5
a_history, b_history = (json.load(open(p)) for p in (a_path, b_path))
worst = 0.0
for key in ("loss", "val_loss"):
    a, b = a_history[key], b_history[key]
    if not len(a) == len(b) == int(epochs):
        sys.exit(f"{key}: {len(a)} and {len(b)} epochs, expected {epochs}")
    for epoch, (x, y) in enumerate(zip(a, b), 1):
        relative = abs(x - y) / max(abs(x), abs(y), 1e-30)
        worst = max(worst, relative)
        print(f"epoch {epoch} {key}: {a_label} {x:.9g}, {b_label} {y:.9g}, relative difference {relative:.2e}")
        if relative > limit:
            sys.exit(f"{key} of epoch {epoch} differs by {relative:.2e} > {limit:g}")
print(f"worst relative difference: {worst:.2e} (limit {limit:g})")
