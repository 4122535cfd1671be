"""Benchmark: one epoch of the lockstep perturbed-SGD copies against an official-style loop.

The reference is built like the official code: a CPU ``DataLoader`` whose dataset crops (4-pixel
padding) and flips every sample in Python, and the copies (one per k) trained one after another,
each through its own pass over the loader. The lockstep trainer keeps the data on the device,
augments whole batches there from one seeded generator, and steps all copies on each batch. Both
are timed in this run, on the same device, data and model; the script prints the ratio and the
fraction of the device's float32 peak (a large matrix product, measured here) that each achieves.

    python scripts/bench_perturbed_sgd.py [--model resnet56] [--width 16] [--images 2048]
        [--device cuda] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from pdeeos import data, models
from pdeeos.optim import PerturbedSGD
from pdeeos.training import LockstepTrainer, Split, TrainConfig, set_deterministic

KS = (1, 3, 5, 7, 9, 11)


class PerSampleCifar(Dataset):
    """Official-style dataset: one sample at a time, padded, randomly cropped and flipped."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = F.pad(self.x[i], (4, 4, 4, 4))
        dy, dx = torch.randint(0, 9, (2,)).tolist()
        img = img[:, dy: dy + 32, dx: dx + 32]
        return (img.flip(-1) if torch.rand(()) < 0.5 else img), self.y[i]


def sync(device: torch.device) -> None:
    """Wait for queued device work."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_flops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 FLOP/s of an n×n matrix product on ``device``."""
    a = torch.randn(n, n, device=device)
    a @ a
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    sync(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def epoch_flops(model: torch.nn.Module, split: Split, batch_size: int, copies: int) -> float:
    """FLOPs of one training epoch of ``copies`` copies (forward and backward, counted once)."""
    probe = copy.deepcopy(model)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(probe(split.x[:batch_size]), split.y[:batch_size]).backward()
    return counter.get_total_flops() * len(split.y) / batch_size * copies


def reference_epoch(model: torch.nn.Module, split: Split, batch_size: int,
                    device: torch.device) -> float:
    """Seconds for the official-style loop: each copy in turn through a per-sample DataLoader."""
    loader_data = PerSampleCifar(split.x.cpu(), split.y.cpu())
    start = time.perf_counter()
    for k in KS:
        torch.manual_seed(0)
        net = copy.deepcopy(model).train()
        opt = PerturbedSGD(net.parameters(), 0.1, k=k, momentum=0.9, weight_decay=5e-4,
                           nesterov=True)
        for xb, yb in DataLoader(loader_data, batch_size=batch_size, shuffle=True):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(xb.to(device)), yb.to(device)).backward()
            opt.step()
    sync(device)
    return time.perf_counter() - start


def lockstep_epoch(model: torch.nn.Module, split: Split, batch_size: int,
                   device: torch.device) -> float:
    """Seconds for one training epoch of the lockstep trainer (its per-epoch evaluation, which
    the reference lacks, not included)."""
    config = TrainConfig(ks=KS, batch_size=batch_size, epochs=1)
    trainer = LockstepTrainer(copy.deepcopy(model), split, Split(split.x[:256], split.y[:256]),
                              config, device)
    start = time.perf_counter()
    trainer.train_epoch()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet8")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    set_deterministic()
    device = torch.device(args.device)
    ds = data.load_cifar10("train")
    split = Split.from_dataset(ds, limit=args.images, device=device)
    torch.manual_seed(0)
    model = models.build(args.model, width=args.width).to(device)
    peak = peak_flops(device)
    flops = epoch_flops(model, split, args.batch_size, len(KS))
    lockstep_epoch(model, Split(split.x[:args.batch_size], split.y[:args.batch_size]),
                   args.batch_size, device)  # warm-up
    t_ref = reference_epoch(model, split, args.batch_size, device)
    t_lock = lockstep_epoch(model, split, args.batch_size, device)
    print(f"{args.model} (width {args.width}), {len(KS)} copies, {len(split.y)} {ds.name} "
          f"({ds.variant}) images, batch {args.batch_size}, {device} ({args.threads} threads)")
    print(f"measured float32 peak (matmul): {peak / 1e9:.1f} GFLOP/s; "
          f"one epoch of all copies: {flops / 1e9:.2f} GFLOP")
    for name, t in (("reference (per-sample DataLoader, copies in turn)", t_ref),
                    ("lockstep (on-device batches, copies per batch)", t_lock)):
        print(f"{name:52s} {t:8.2f} s   {flops / t / peak:6.1%} of peak")
    print(f"speed-up of lockstep over reference: {t_ref / t_lock:.2f}x")


if __name__ == "__main__":
    main()
