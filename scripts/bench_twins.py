"""Cost of pdeeos.Twins against a hand-written loop stepping the same copies.

Both train the same copies (one per k, same initial weights, the same optimizers perturbed by
pdeeos.optim.perturb) on the same batches; Twins also records, at every step (record_every=1), each
copy's loss and its RelL1 to the k = 1 copy, whole network and per parameter tensor. Prints the time of
each (CPU time of this process on a CPU, so that other work on a shared machine does not count; wall time
on a GPU) and their ratio, the fastest of interleaved repeats, measured in this run, with batches made
beforehand (the strictest comparison: nothing but the training steps) and read from a shuffling
DataLoader (the loop one writes); a second ratio compares the hand loop with unperturbed optimizers: the
cost of the perturbation itself.

    .venv/bin/python scripts/bench_twins.py [--steps 100] [--repeats 7] [--batch 128] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pdeeos import Twins
from pdeeos.optim import perturb

KS = (1, 3)


def make_model() -> nn.Module:
    """A Fashion-MNIST-sized MLP of one's own (784-256-256-10, ReLU)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def make_optimizer(params: list[torch.Tensor]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def batches(steps: int, size: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` batches of ``size`` random images and labels, made beforehand on the device."""
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 1, 28, 28, generator=gen).to(device), torch.randint(0, 10, (size,), generator=gen).to(device))
            for _ in range(steps)]


def loader(steps: int, size: int) -> DataLoader:
    """The same number of batches from a shuffling DataLoader, as a plain PyTorch loop reads them."""
    gen = torch.Generator().manual_seed(1)
    n = size * steps
    dataset = TensorDataset(torch.randn(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen))
    return DataLoader(dataset, batch_size=size, shuffle=True, generator=torch.Generator().manual_seed(2))


def _stream(data: Iterable, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for x, y in data:
        yield x.to(device), y.to(device)


def hand_loop(data: Iterable, device: torch.device, *, perturbed: bool = True) -> float:
    """Seconds for the copies stepped by hand: zero_grad, loss, backward, step, for each copy and batch."""
    models = [copy.deepcopy(make_model()).to(device) for _ in KS]
    optimizers = [make_optimizer(list(m.parameters())) for m in models]
    if perturbed:
        optimizers = [perturb(o, k) for o, k in zip(optimizers, KS)]
    return _timed(device, lambda: [_hand_step(models, optimizers, x, y) for x, y in _stream(data, device)])


def _hand_step(models: list[nn.Module], optimizers: list, x: torch.Tensor, y: torch.Tensor) -> None:
    for model, optimizer in zip(models, optimizers):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def twins_loop(data: Iterable, device: torch.device) -> float:
    """Seconds for the same copies stepped by Twins, recording at every step."""
    twins = Twins(make_model().to(device), make_optimizer, KS, record_every=1)
    return _timed(device, lambda: [twins.step(lambda m, x=x, y=y: F.cross_entropy(m(x), y))
                                   for x, y in _stream(data, device)])


def _timed(device: torch.device, work: Callable[[], object]) -> float:
    """Seconds of ``work``: CPU time of this process on a CPU, wall time on a GPU."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = clock()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clock() - start


def compare(data: Iterable, device: torch.device, repeats: int) -> tuple[float, float, float, float]:
    """Fastest times of the hand loop, Twins and the unperturbed hand loop over interleaved repeats, and the
    median of the per-repeat ratios Twins / hand loop."""
    runs = [(hand_loop(data, device), twins_loop(data, device), hand_loop(data, device, perturbed=False))
            for _ in range(repeats)]
    hand, twins, plain = (min(column) for column in zip(*runs))
    return hand, twins, plain, statistics.median(t / h for h, t, _ in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, {args.threads} thread(s), {args.steps} steps of batch {args.batch}, copies k = {KS}, "
          f"{args.repeats} interleaved repeats (fastest of each)")
    for name, data in (("batches made beforehand", batches(args.steps, args.batch, device)),
                       ("a DataLoader", loader(args.steps, args.batch))):
        hand_loop(list(data)[:10], device), twins_loop(list(data)[:10], device)          # warm-up
        hand, twins, plain, median = compare(data, device, args.repeats)
        print(f"{name}: hand-written loop {hand:.3f} s, Twins (record_every=1) {twins:.3f} s, "
              f"unperturbed hand loop {plain:.3f} s")
        print(f"  Twins / hand loop: {twins / hand:.3f}x (median of per-repeat ratios {median:.3f}x); "
              f"perturbed / unperturbed hand loop: {hand / plain:.3f}x")


if __name__ == "__main__":
    main()
