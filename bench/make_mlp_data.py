#!/usr/bin/python3
"""Synthetic MNIST-shaped data for the shardfit-vs-PyTorch benchmark: x (N, 784) float32 in [0, 1), y (N,) int64
class ids 0..9 from a fixed random linear teacher (so the loss does fall), written as .npy files that both trainers
read. Not a data set for accuracy claims: it only has to have the right shapes and types.

    /usr/bin/python3 bench/make_mlp_data.py --rows 16384 --out bench/results/data
"""
import argparse
import os

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16384, help="samples N (default 16384)")
    parser.add_argument("--features", type=int, default=784)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--out", default="bench/results/data", help="directory for x.npy and y.npy")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    x = rng.random((args.rows, args.features), dtype=np.float32)
    teacher = rng.standard_normal((args.features, args.classes)).astype(np.float32)
    y = np.argmax((x - 0.5) @ teacher, axis=1).astype(np.int64)

    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "x.npy"), x)
    np.save(os.path.join(args.out, "y.npy"), y)
    print(f"wrote {args.out}/x.npy {x.shape} {x.dtype} and y.npy {y.shape} {y.dtype} "
          f"(class counts {np.bincount(y, minlength=args.classes).tolist()})")


if __name__ == "__main__":
    main()
