"""The tangent-map exponent against the twins' growth rate on chapter 9's MLPs (the caveat of pdeeos.tangent).

Fashion-MNIST (the first 10,000 training images), SGD at lr 0.2 with momentum 0.9, batches of 128 drawn
with replacement from a seeded generator, 300 steps, seeds 0 and 1: for each activation the exponent of
pdeeos.tangent.log_stretches over steps 0-100 and 100-300, and the k = 3 twin's onset, rate (onset to
saturation) and fate from pdeeos.Twins on the same batches. Prints one line per model and seed.

    .venv/bin/python scripts/tangent_vs_twins.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pdeeos import Twins, data, lyapunov, tangent
from pdeeos.book.experiments.own_network import build_model

STEPS, BATCH, LR, MOMENTUM = 300, 128, 0.2, 0.9


def main() -> None:
    torch.set_num_threads(1)
    train = data.load("fashion_mnist", "train")
    x, y = data.to_float(train.images[:10_000]), train.labels[:10_000]
    for name in ("mlp-relu", "mlp-tanh", "mlp-gelu"):
        for seed in (0, 1):
            gen = torch.Generator().manual_seed(seed)
            batches = [torch.randint(0, len(y), (BATCH,), generator=gen) for _ in range(STEPS)]
            losses = [lambda m, i=i: F.cross_entropy(m(x[i]), y[i]) for i in batches]
            torch.manual_seed(seed)
            model = build_model(name)
            stretches = tangent.log_stretches(model, losses, lr=LR, momentum=MOMENTUM)
            twins = Twins(model, lambda p: torch.optim.SGD(p, lr=LR, momentum=MOMENTUM), ks=(1, 3))
            for loss in losses:
                twins.step(loss)
            growth = twins.growth()[1]
            print(f"{name} seed {seed}: tangent exponent {lyapunov.exponent(stretches[:100]):+.3f} (steps 0-100), "
                  f"{lyapunov.exponent(stretches, discard=100):+.3f} (100-300); twins: onset {growth.onset}, "
                  f"rate {growth.rate:.3f} a step, fate {growth.fate}", flush=True)


if __name__ == "__main__":
    main()
