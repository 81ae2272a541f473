#!/usr/bin/python3
"""The PyTorch peer for bench/compare_torch.sh: trains the same MLP as shardfit on the same .npy files and prints
training samples/s the way shardfit's history does (training samples / training time of an epoch, median of the
epochs after the first). Not a general trainer.

    /usr/bin/python3 bench/peer_torch.py --data bench/results/data --batch 512 --threads 2            # 1 x 2
    /usr/bin/python3 bench/peer_torch.py --data bench/results/data --batch 512 --ranks 2 --threads 1  # DDP, gloo
    add --precision bf16 for bf16 autocast (oneDNN / AMX), torch's strong mode on this machine.

Prints one line `peer_torch key=value ...` (rank 0) for the comparison script.

Notes (docs BASELINES.md, "The peer: PyTorch"):
 1. Debian's torch 1.13.1 has no MKL and no OpenBLAS: fp32 nn.Linear runs the single-threaded reference BLAS
    (~6.5 GFLOP/s, ~1.5% of this machine's fp32 ceiling). Every fp32 ratio against it says so.
 2. torch.distributed.run crashes with this torch on Python 3.11, so DDP starts with torch.multiprocessing.spawn and
    init_process_group("gloo", init_method="tcp://127.0.0.1:PORT").
 3. Same model and step as shardfit: 784-512-512-10, relu, relu, softmax + sparse cross-entropy (CrossEntropyLoss on
    logits, mean over the global batch), plain SGD; a fresh permutation every epoch; each DDP rank takes its
    contiguous half of every global batch, so 2 x B/2 == 1 x B as in shardfit.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="directory holding x.npy (N, 784) float32 and y.npy (N,) int64")
    parser.add_argument("--batch", type=int, default=512, help="GLOBAL batch (summed over ranks)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs; the first is warm-up and not counted")
    parser.add_argument("--rows", type=int, default=0, help="train on the first ROWS samples only (0: all)")
    parser.add_argument("--ranks", type=int, default=1, help="1: one process; >1: DDP over gloo")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads per process")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: torch.autocast('cpu', dtype=torch.bfloat16) around the forward pass")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--port", type=int, default=29517, help="gloo rendezvous port on 127.0.0.1")
    parser.add_argument("--bind", action=argparse.BooleanOptionalAction, default=True,
                        help="DDP: pin rank r to core r (as mpirun --bind-to core does for shardfit)")
    return parser.parse_args()


def make_model(features, classes):
    return nn.Sequential(nn.Linear(features, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                         nn.Linear(512, classes))


def train(rank, args):
    world = args.ranks
    torch.set_num_threads(args.threads)
    if world > 1:
        if args.bind and hasattr(os, "sched_setaffinity"):
            cores = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {cores[rank % len(cores)]})
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=rank, world_size=world)

    x = torch.from_numpy(np.load(os.path.join(args.data, "x.npy")))
    y = torch.from_numpy(np.load(os.path.join(args.data, "y.npy")).astype(np.int64))
    if args.rows:
        x, y = x[:args.rows], y[:args.rows]
    n = x.shape[0]
    assert args.batch % world == 0, "the global batch must split evenly over the ranks"
    local = args.batch // world

    torch.manual_seed(args.seed)  # same initial weights everywhere (DDP broadcasts rank 0's anyway)
    model = make_model(x.shape[1], int(y.max()) + 1)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    use_bf16 = args.precision == "bf16"
    generator = torch.Generator()

    rates, losses = [], []
    for epoch in range(args.epochs):
        generator.manual_seed(args.seed * 1000003 + epoch)  # the same permutation on every rank
        permutation = torch.randperm(n, generator=generator)
        if world > 1:
            dist.barrier()
        loss_sum, count = 0.0, 0
        start = time.perf_counter()
        for first in range(0, n, args.batch):
            batch = min(args.batch, n - first)
            lo = first + min(rank * local, batch)
            hi = first + min((rank + 1) * local, batch)
            rows = permutation[lo:hi]
            xb, yb = x.index_select(0, rows), y.index_select(0, rows)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(xb)
            loss = loss_fn(logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * (hi - lo)
            count += hi - lo
        seconds = time.perf_counter() - start
        rates.append(n / seconds)
        losses.append(loss_sum / max(count, 1))

    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        counted = rates[1:] if len(rates) > 1 else rates
        print(f"peer_torch ranks={world} threads={args.threads} precision={args.precision} batch={args.batch} "
              f"rows={n} epochs={args.epochs} samples_per_second={statistics.median(counted):.1f} "
              f"epoch_rates={','.join(f'{r:.0f}' for r in rates)} last_loss={losses[-1]:.4f} "
              f"torch={torch.__version__}", flush=True)


def main():
    args = parse_args()
    if args.ranks == 1:
        train(0, args)
    else:
        mp.spawn(train, args=(args,), nprocs=args.ranks, join=True)


if __name__ == "__main__":
    sys.exit(main())
