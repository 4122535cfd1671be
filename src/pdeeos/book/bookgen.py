"""Book pages generated from the stored runs at build time (a Sphinx extension).

Listed in ``_config.yml``'s extensions, it writes, before Sphinx reads any page, into ``book/_generated/``:

- ``headline.md`` and ``headline.png``: the introduction's opening, Table 1's churn ratio with its
  interval over seeds and seed imprint, and chapter 6's drift and churn, from the stored
  ``perturbed-sgd`` run;
- ``story.png``: the introduction's one-layer figure, chapter 5's Fig. 5 right and Fig. 6 from the
  stored ``cnnpde-regimes`` run;
- ``ledger-central.md`` and ``ledger.md``: the central claims and the whole claims ledger of
  :mod:`pdeeos.book.ledger`;
- ``runs.md``: every experiment, its stored runs and what they cost.

``book/intro.md``, ``book/ledger.md`` and ``book/reproduce.md`` include them.
"""

from __future__ import annotations

import datetime
import io
from pathlib import Path
from typing import Any

import numpy as np

from pdeeos import checkpoints, spread
from pdeeos.pde import cnnpde
from pdeeos.book import experiments, ledger, results, style
from pdeeos.book.config import SCALES
from pdeeos.book.experiments import perturbed_sgd, registry


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def ledger_page(root: Path | None = None, table: list[ledger.Row] | None = None) -> str:
    """The ledger table and its verdict counts, as MyST markdown."""
    table = ledger.rows(root) if table is None else table
    return f"{len(table)} claims.\n\n" + ledger.markdown(table)


HEADLINE_RUN = "perturbed-sgd"
"""The stored run of the introduction's headline: the book's Table 1 grid (chapter 6)."""


ACTIVATIONS = {"relu": "ReLU", "swish": "Swish"}
DATASETS = {"cifar10": "CIFAR-10", "fashion_mnist": "Fashion-MNIST", "mnist": "MNIST"}


def _interval(ci: list[float] | None) -> str:
    return "undefined" if ci is None else f"{ci[0]:.2f}–{ci[1]:.2f}"


def headline_page(root: Path | None = None) -> str:
    """The introduction's opening paragraph, MyST: Table 1's churn ratio with its 95 % interval over
    seeds, the seed imprint and the verdict, from the stored ``perturbed-sgd`` run (and the VGG16-BN
    variant's, when stored)."""
    if not results.stored_scales(HEADLINE_RUN, root):
        return (f"**On real networks**: not yet run; make the run with "
                f"`python -m pdeeos run {HEADLINE_RUN} --scale book`.\n")
    run = experiments.load_run(HEADLINE_RUN, root=root)
    s, a = run.summary, run.arrays
    ks = ", ".join(str(int(k)) for k in a["ks"])
    model, details = s["model"].split(" (", 1)
    activation, params = details.rstrip(")").split(", ", 1)
    verdict = perturbed_sgd.verdict(s, a["rel_l1"])
    imprint = ("" if s["seed_imprint"] is None else
               f" A **seed imprint** of {100 * s['seed_imprint']:.0f} % remains: the $k$-copies of one seed "
               f"disagree that much less often than copies whose seeds were shuffled would (permutation "
               f"test, $p = {s['exchangeability_p']:.2g}$).")
    text = (f"**Change the last bit of every update, and a trained network's predictions change about as "
            f"much as with a new batch order.** The book's Table 1 run trains a "
            f"{ACTIVATIONS.get(activation, activation)} {model.replace('resnet', 'ResNet-')} ({params}) on "
            f"{s['data'].split(': ', 1)[1]} of {DATASETS.get(run.config['dataset'], run.config['dataset'])} "
            f"with {len(a['seeds'])} batch orders (seeds), "
            f"and for each seed {len(a['ks'])} copies from the same weights on the same batches that differ "
            f"only in how each SGD step rounds: $\\theta - (k\\eta)(d/k)$, $d$ the update direction, for "
            f"$k = {ks}$ ($k = 1$ is the plain step). "
            f"The copies of one seed classify {s['churn_over_k']:.1f} % of the test images differently; "
            f"copies trained on other batch orders, {s['churn_over_seeds']:.1f} %. Their ratio, the **churn ratio**, "
            f"is **{s['churn_ratio']:.2f}**, with a 95 % interval over the seeds of "
            f"**{_interval(s['churn_ratio_seed_ci'])}** (each training run one replicate): "
            f"{ledger.badge(verdict)} for Table 1 by the ledger's rule.{imprint}")
    vgg = "perturbed-sgd-vgg16"
    if results.stored_scales(vgg, root):
        v = experiments.load_run(vgg, root=root).summary
        act = v["model"].split(" (", 1)[1].split(",")[0]
        text += (f" A VGG16-BN with {ACTIVATIONS.get(act, act)} gives a churn ratio of {v['churn_ratio']:.2f} "
                 f"({_interval(v['churn_ratio_seed_ci'])}), with a seed imprint of {100 * v['seed_imprint']:.0f} %.")
    return text + "\n"


def headline_figure(root: Path | None = None) -> bytes:
    """PNG of chapter 6's finding from the stored ``perturbed-sgd`` run: the k = 3 copy's RelL1 to its
    k = 1 copy over training for every seed against the distance between independent runs (Fig. 3
    left), and the churn of each seed's k-copies against that of each k's seed-copies (Table 1)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    style.use()
    fig, (left, right) = style.figure(1, 2, width=7.2, height=3.4, gridspec_kw={"width_ratios": [1.1, 1]})
    if not results.stored_scales(HEADLINE_RUN, root):
        for ax in (left, right):
            ax.text(0.5, 0.5, f"not yet run: python -m pdeeos run {HEADLINE_RUN}", ha="center", transform=ax.transAxes)
    else:
        run = experiments.load_run(HEADLINE_RUN, root=root)
        s, a, cfg = run.summary, run.arrays, run.config
        j3, per_epoch = list(a["ks"]).index(3), s["steps_per_epoch"]
        rel = a["rel_l1"][:, :, j3]                                     # seeds × epochs
        steps = per_epoch * np.arange(1, rel.shape[1] + 1)
        for i, curve in enumerate(rel):
            left.semilogy(steps, curve, color=style.PALETTE[0], linewidth=1.0, alpha=0.8,
                          label=f"$k = 3$ copy to its $k = 1$ copy, each of {len(rel)} seeds" if i == 0 else None)
        style.reference_line(left, s["rel_l1_between_seeds"], "independent runs (two seeds' $k = 1$ copies)")
        for i, m in enumerate(cfg["milestones"]):
            left.axvline(m * per_epoch, color=style.REFERENCE_COLOR, linewidth=0.8, linestyle=":",
                         label="learning rate ÷ 10" if i == 0 else None)
        left.set(xlabel="SGD step", ylabel="RelL1 of the weights", ylim=(0.03, 3),
                 title="the last-bit copies drift nearly\nas far apart as independent runs")
        left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)

        over_k = spread.churn_over_k_per_seed(a["predictions"])                        # per seed
        over_seeds = spread.churn_over_k_per_seed(a["predictions"].transpose(1, 0, 2))  # per k
        rows = [("new batch order\n(seed-copies of a $k$)", over_seeds, style.REFERENCE_COLOR),
                ("last bit\n($k$-copies of a seed)", over_k, style.PALETTE[1])]
        for y, (_, values, color) in enumerate(rows):
            heights = y + np.linspace(-0.22, 0.22, len(values))   # a row of its own for each dot: none hides another
            right.plot(values, heights, "o", color=color, markersize=6)
            right.plot([values.mean()] * 2, [y - 0.32, y + 0.32], color=color, linewidth=2.5)
        top = 1.15 * max(over_k.max(), over_seeds.max())
        right.set(xlim=(0, top), ylim=(-0.6, 1.6), yticks=[0, 1], yticklabels=[r[0] for r in rows],
                  xlabel="test images two copies classify\ndifferently (%): a dot per seed\n(per $k$), a bar at their mean",
                  title=f"churn ratio {s['churn_ratio']:.2f}\n(95 % over seeds: {_interval(s['churn_ratio_seed_ci'])})")
        right.grid(axis="y", visible=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _day(iso: str) -> str:
    """The day of an ISO date as "23 Nov 2026": a table cell breaks it between words, never inside a number."""
    return datetime.date.fromisoformat(iso[:10]).strftime("%-d %b %Y")


def runs_page(root: Path | None = None) -> str:
    """A table of every experiment: chapter, scales, and for each stored run its device, wall time and date."""
    lines = ["| experiment | chapter | scales | stored runs (device, wall time, date) |",
             "| --- | --- | --- | --- |"]
    for name, exp in sorted(registry().items()):
        stored = []
        for scale in results.stored_scales(name, root):
            p = experiments.load_run(name, scale, root).provenance
            stored.append(f"{scale}: {p['device']}, {_duration(p['wall_time_s'])}, {_day(p['date'])}")
        scales = ", ".join(s for s in SCALES if s in exp.configs)
        lines.append(f"| `{name}` | [{int(exp.chapter[:2])}](../chapters/{exp.chapter}.ipynb) | {scales} | "
                     f"{'; '.join(stored) or 'none stored'} |")
    return "\n".join(lines) + "\n"


def story_figure(root: Path | None = None) -> bytes:
    """PNG of the book in one figure: the one-layer CNN's k = 1 and k = 3 twins drift apart exactly in
    the runs whose normalised sharpness reaches 2 (chapter 5, from the stored ``cnnpde-regimes`` run)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    run = experiments.load_run("cnnpde-regimes", root=root)
    a = run.arrays
    names = [cnnpde.RUN_CLASSES[int(c)] for c in a["paper_class"]]
    colors = {"stable": style.STABLE, "periodic": style.PERIODIC, "chaotic": style.CHAOTIC, "blow-up": style.UNSTABLE}
    style.use()
    fig, (left, right) = style.figure(1, 2, width=10, height=3.6)
    seen: set[str] = set()
    for dt, name, rel, sharp in zip(a["dts"], names, a["rel_l1_k3"], a["normalised_sharpness"]):
        if name == "blow-up":
            continue
        label = None if name in seen else name
        seen.add(name)
        left.semilogy(np.where(rel > 0, rel, np.nan), color=colors[name], linewidth=0.8, label=label)
        right.plot(sharp[:101], color=colors[name], linewidth=0.8 if name in cnnpde.RESTRAINED else 1.8, label=label)
    left.set(xlabel="iteration $n$", ylabel="RelL1 between the $k = 1$ and $k = 3$ runs", ylim=(1e-18, 5),
             title="last-bit differences: damped, or amplified where chaotic")
    style.reference_line(right, 2.0, "edge of stability: 2")
    right.set(xlabel="iteration $n$", ylabel=r"$\Delta t\,\lambda_{\max}(\nabla^2 L)$", ylim=(0, 8),
              title="normalised sharpness, first 100 iterations")
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def write_pages(book_dir: Path, root: Path | None = None) -> None:
    """Write the generated pages under ``book_dir/_generated`` (atomically, only when they change)."""
    out = book_dir / "_generated"
    table = ledger.rows(root)
    pages = {"headline.md": headline_page(root).encode(), "headline.png": headline_figure(root),
             "ledger-central.md": ledger.central_markdown(table).encode(),
             "ledger.md": ledger_page(root, table).encode(), "runs.md": runs_page(root).encode(),
             "story.png": story_figure(root)}
    for name, data in pages.items():
        path = out / name
        if not path.exists() or path.read_bytes() != data:
            checkpoints.atomic_write_bytes(path, data)


def _on_builder_inited(app: Any) -> None:
    write_pages(Path(app.srcdir) / "book")


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point."""
    app.connect("builder-inited", _on_builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


__all__ = ["ACTIVATIONS", "DATASETS", "HEADLINE_RUN", "headline_figure", "headline_page", "ledger_page",
           "runs_page", "setup", "story_figure", "write_pages"]
