#!/usr/bin/python3
"""The PyTorch peer for bench/compare_torch.sh: trains the same MLP as shardfit on the same .npy files and prints
training samples/s the way shardfit's history does (training samples / training time of an epoch, median of the
epochs after the first). Not a general trainer.

    /usr/bin/python3 bench/peer_torch.py --data bench/results/data --batch 512 --threads 2            # 1 x 2
    /usr/bin/python3 bench/peer_torch.py --data bench/results/data --batch 512 --ranks 2 --threads 1  # DDP, gloo
    add --precision bf16 for bf16 autocast (oneDNN / AMX), torch's strong mode on this machine.
    /usr/bin/python3 bench/peer_torch.py --blas-only --threads 2   # which BLAS fp32 runs on, and its speed

Prints one line `peer_torch key=value ...` (rank 0) for the comparison script.

Notes (docs BASELINES.md, "The peer: PyTorch"):
 1. Debian's torch 1.13.1 has no MKL: fp32 nn.Linear runs whatever the system's libblas.so.3 is. With only the
    reference BLAS installed that is ~6 GFLOP/s single-threaded, not a peer; with libopenblas0-pthread installed,
    update-alternatives points libblas.so.3 at OpenBLAS (~195 GFLOP/s on 2 threads, Zen 4). So the BLAS is checked
    AT RUN TIME, in this process, after a first matmul: the file /proc/self/maps shows behind libblas.so.3 (and any
    libopenblas / libmkl) is reported as blas=openblas|reference|mkl|unknown with its path, and the fp32 matmul
    speed measured here (blas_gflops, 512^3 on the run's threads) backs it with a number. --blas-only prints just
    that. bf16 autocast goes through oneDNN whatever the BLAS.
 2. torch.distributed.run crashes with this torch on Python 3.11, so DDP starts with torch.multiprocessing.spawn and
    init_process_group("gloo", init_method="tcp://127.0.0.1:PORT").
 3. Same model and step as shardfit: 784-512-512-10, relu, relu, softmax + sparse cross-entropy (CrossEntropyLoss on
    logits, mean over the global batch), plain SGD; a fresh permutation every epoch; each DDP rank takes its
    contiguous half of every global batch, so 2 x B/2 == 1 x B as in shardfit.
 4. peak_rss_bytes: each training process's own peak resident memory (getrusage RUSAGE_SELF ru_maxrss), rank order,
    gathered over gloo; the spawning parent is a launcher, as mpirun is for shardfit, and is not counted.
 5. A DDP rank ends with os._exit(0) once rank 0 has printed: tearing DDP down over gloo can hang (note in train()).
 6. --model convnet: Conv2D(32, 3x3, relu), MaxPooling2D(2), Conv2D(64, 3x3, relu), MaxPooling2D(2), Flatten,
    Dense(128, relu), Dense(10) on 28x28x1 images (the Fashion-MNIST convnet of examples/fashion_mnist), valid
    padding; tensors channels_last by default, the layout torch's oneDNN (mkldnn) convolutions run fastest on CPU.
"""
import argparse
import ctypes
import os
import resource
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
    parser.add_argument("--data", help="directory holding x.npy (N, 784) float32 and y.npy (N,) int64"
                        " (required but with --blas-only); for --model convnet x.npy is (N, 28, 28) or (N, 784)")
    parser.add_argument("--model", choices=["mlp", "convnet"], default="mlp",
                        help="mlp: 784-512-512-10; convnet: the Fashion-MNIST convnet (note 6)")
    parser.add_argument("--memory-format", choices=["channels_last", "contiguous"], default="channels_last",
                        help="convnet: the tensors' memory format (channels_last is what oneDNN's convolutions and "
                             "shardfit use)")
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
    parser.add_argument("--blas-threads", type=int, default=-1,
                        help="OpenBLAS threads per process: -1 (default) the --threads value, 0 OpenBLAS's own default "
                             "(a thread per core: oversubscribes DDP ranks; for comparison only)")
    parser.add_argument("--blas-only", action="store_true",
                        help="only report the BLAS this process loaded and its fp32 matmul speed, then exit")
    args = parser.parse_args()
    if not args.blas_only and not args.data:
        parser.error("--data is required")
    return args


def loaded_blas():
    """(kind, path): the BLAS this process has mapped, from /proc/self/maps. Call after a first fp32 matmul, so the
    library torch calls has been loaded. libblas.so.3 is what torch links; its real path says whose it is."""
    mapped = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5].startswith("/"):
                mapped.add(fields[5])
    names = {path: os.path.basename(path) for path in mapped}
    for path, name in names.items():
        if name.startswith("libmkl_"):
            return "mkl", path
    for path, name in names.items():
        if name.startswith("libblas.so"):
            real = os.path.realpath(path)
            if "openblas" in real:
                return "openblas", real
            if "/blas/" in real or os.path.basename(real).startswith("libblas.so.3"):
                return "reference", real
            return "unknown", real
    for path, name in names.items():  # a torch linked to OpenBLAS directly
        if name.startswith("libopenblas"):
            return "openblas", os.path.realpath(path)
    return "unknown", "-"


def pin_blas_threads(threads):
    """OpenBLAS starts one thread per core whatever torch.set_num_threads says (measured: 2 with set_num_threads(1)),
    so a 2-rank DDP run would put 4 BLAS threads on 2 cores. Sets it to `threads` (0: leaves OpenBLAS's own);
    returns the count it reports, or 0 when no OpenBLAS is loaded. Call after a first matmul."""
    with open("/proc/self/maps") as maps:
        paths = {line.split()[5] for line in maps if len(line.split()) >= 6 and "libopenblas" in line.split()[5]}
    for path in sorted(paths):
        library = ctypes.CDLL(path)
        if threads > 0:
            library.openblas_set_num_threads(threads)
        return library.openblas_get_num_threads()
    return 0


def matmul_gflops(size=512, seconds=0.3):
    """fp32 torch.mm speed on this process's threads: the BLAS's speed, measured, to go with its name."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    torch.mm(a, b)  # loads the library and warms it up
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        torch.mm(a, b)
        calls += 1
    return 2.0 * size ** 3 * calls / (time.perf_counter() - start) * 1e-9


def blas_report(threads):
    torch.mm(torch.rand(8, 8), torch.rand(8, 8))  # loads the BLAS
    blas_threads = pin_blas_threads(threads)
    gflops = matmul_gflops()
    kind, path = loaded_blas()
    if kind != "openblas":
        blas_threads = "-"  # an OpenBLAS may be mapped (liblapack.so.3's) without being the BLAS torch calls
    return f"blas={kind} blas_lib={path} blas_threads={blas_threads} blas_gflops={gflops:.1f}"


def make_model(kind, features, classes):
    if kind == "convnet":
        # 28x28x1 -> conv 3x3 32 (26x26) -> pool 2 (13x13) -> conv 3x3 64 (11x11) -> pool 2 (5x5) -> 1600 -> 128 -> 10
        return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(),
                             nn.Linear(128, classes))
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
    convnet = args.model == "convnet"
    memory_format = torch.channels_last if args.memory_format == "channels_last" else torch.contiguous_format
    if convnet:
        side = int(round(np.sqrt(x[0].numel())))
        assert side * side == x[0].numel(), "the convnet takes square one-channel images"
        x = x.reshape(-1, 1, side, side).contiguous(memory_format=memory_format)
    y = torch.from_numpy(np.load(os.path.join(args.data, "y.npy")).astype(np.int64))
    if args.rows:
        x, y = x[:args.rows], y[:args.rows]
    n = x.shape[0]
    assert args.batch % world == 0, "the global batch must split evenly over the ranks"
    local = args.batch // world

    torch.manual_seed(args.seed)  # same initial weights everywhere (DDP broadcasts rank 0's anyway)
    model = make_model(args.model, x[0].numel(), int(y.max()) + 1)
    if convnet:
        model = model.to(memory_format=memory_format)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    use_bf16 = args.precision == "bf16"
    generator = torch.Generator()

    # Every rank pins OpenBLAS's threads; rank 0 reports (its matmuls are not timed).
    blas = blas_report(args.threads if args.blas_threads < 0 else args.blas_threads)
    if rank != 0:
        blas = ""
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
            if convnet:
                xb = xb.contiguous(memory_format=memory_format)
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

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    peaks = [peak]
    if world > 1:
        gathered = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
        dist.all_gather(gathered, torch.tensor([peak], dtype=torch.int64))
        peaks = [int(t.item()) for t in gathered]
        dist.barrier()
    if rank == 0:
        counted = rates[1:] if len(rates) > 1 else rates
        print(f"peer_torch model={args.model} ranks={world} threads={args.threads} precision={args.precision} "
              f"batch={args.batch} "
              f"rows={n} epochs={args.epochs} samples_per_second={statistics.median(counted):.1f} "
              f"epoch_rates={','.join(f'{r:.0f}' for r in rates)} last_loss={losses[-1]:.4f} "
              f"peak_rss_bytes={','.join(str(p) for p in peaks)} {blas} torch={torch.__version__}", flush=True)
    if world > 1:
        # Measured and reported: leave without tearing DDP down. Its Reducer's destructor joins a gloo thread that
        # waits on the other rank, which may have gone already: rank 0 hung there for 15 minutes once (gdb:
        # ~Reducer -> ~ProcessGroupGloo -> std::thread::join) with rank 1 exited.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def main():
    args = parse_args()
    if args.blas_only:
        torch.set_num_threads(args.threads)
        report = blas_report(args.threads if args.blas_threads < 0 else args.blas_threads)
        print(f"peer_torch threads={args.threads} {report} torch={torch.__version__}", flush=True)
        return 0
    if args.ranks == 1:
        train(0, args)
    else:
        mp.spawn(train, args=(args,), nprocs=args.ranks, join=True)


if __name__ == "__main__":
    sys.exit(main())
