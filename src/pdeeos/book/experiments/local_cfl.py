r"""Chapter 8: the paper's proposed remedy, local CFL step sizes (:class:`pdeeos.optim.LocalCFL`), measured
against the methods that already exist.

Each full-batch problem is trained by every method of :data:`METHODS`, each as a pair of :math:`k = 1` /
:math:`k = 3` twins in lockstep (the paper's last-bit perturbation), from the same initial weights. At every
base rate :math:`\eta` of ``lrs`` (:data:`RATE_METHODS`):

* ``sgd``: plain gradient descent (:class:`pdeeos.optim.PerturbedSGD`);
* ``local-cfl``: :class:`~pdeeos.optim.LocalCFL` with the config's ``local_regions`` (tiles of the PDE's
  kernel, a region per tensor of the networks);
* ``global-cfl``: the same with all weights one region, i.e. one global step
  :math:`\min(\eta, s\cdot 2/\rho)` refreshed as often (the classical stable choice, made adaptive);
* ``eigen-cfl``: :class:`~pdeeos.optim.EigenCFL`, the step shortened only along the top ``eigen_rank`` Ritz
  vectors of the full Hessian (``eigen_lanczos_steps`` products a refresh);
* ``secant``: :class:`~pdeeos.optim.SecantSGD`, :math:`\min(\eta, 1/L_n)` from the secant of the gradient, at
  no cost in Hessian-vector products;
* ``warmup``: gradient descent with a linear warm-up to :math:`\eta` over ``warmup_steps`` steps
  (:func:`~pdeeos.optim.warmup_lr`);

and at each rate of ``adam_lrs`` (:data:`ADAPTIVE_METHODS`, run once per problem since they have no base
rate): ``adam`` (:class:`pdeeos.optim.PerturbedAdam`; the paper's App. C rate :math:`10^{-3}` among them) and
``block-adam`` (:class:`~pdeeos.optim.BlockAdam`, Adam-mini's one second moment per tensor);
and plain gradient descent at each stable rate of ``reference_lrs``, whose lowest final loss is the
target every run is timed to (:func:`steps_to_reach`). Every step records the loss of the :math:`k = 1`
copy, the twins' RelL1 distance, each region's step size and curvature estimate, and the Hessian-vector
products spent so far; every ``sharpness_every`` steps the sharpness :math:`\lambda_{\max}` of the
:math:`k = 1` copy (Lanczos) and the *effective* sharpness :math:`\lambda_{\max}(P^{1/2} H P^{1/2})`
with :math:`P` the method's step-size operator (:func:`step_operator`: LocalCFL's diagonal, EigenCFL's
projection), whose value 2 is the stability edge of gradient descent stepping :math:`\theta - Pg`
(:math:`\eta\lambda_{\max}` for plain SGD; not defined for Adam). The
processor time of the training steps (sharpness probes excluded) gives the cost per step, compared
with the mean of the SGD runs' in the same run.

Problems (full batch, float64): ``local-cfl-pde``, the one-layer CNN PDE of chapter 5 at the paper's
restrained step sizes; ``local-cfl-tanh``, the Fig. 8 tanh network of chapter 7 at :math:`\eta = 2/30`.
And with minibatches, ``local-cfl-resnet``: chapter 6's ResNets (Swish and ReLU) on the CIFAR-10 subset
at the paper's optimizer settings and a constant learning rate, six :math:`k`-copies per batch-order
seed in the lockstep trainer of chapter 6, summarised by the prediction churn over :math:`k` against
over seeds (:mod:`pdeeos.spread`); and ``local-cfl-resnet-sharpness``, the sharpness of the minibatch loss
along the SGD trajectory of its first seed, against the stability edge that every cap is derived from.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pdeeos import checkpoints, sharpness, spread
from pdeeos.pde import cnnpde
from pdeeos.book import results
from pdeeos.pde import eos_networks as en
from pdeeos.book.experiments import perturbed_sgd
from pdeeos.book.experiments import Experiment, RunContext, RunOutput
from pdeeos.book.experiments.eos_fc_tanh import ETA, N_CLASSES, load_data
from pdeeos.book.experiments.lr_threshold import minibatch_loss
from pdeeos.metrics import rel_l1
from pdeeos.optim import (BlockAdam, EigenCFL, LocalCFL, PerturbedAdam, PerturbedSGD, SecantSGD, stable_step,
                          warmup_lr)
from pdeeos.training import Split

RATE_METHODS: tuple[str, ...] = ("sgd", "local-cfl", "global-cfl", "eigen-cfl", "secant", "warmup")
"""The methods run at every base rate of a full-batch problem."""
ADAPTIVE_METHODS: tuple[str, ...] = ("adam", "block-adam")
"""The methods run at each rate of ``adam_lrs`` instead (their rate is not a step size)."""
METHODS: tuple[str, ...] = RATE_METHODS + ADAPTIVE_METHODS
RESNET_METHODS: tuple[str, ...] = ("sgd", "local-cfl", "global-cfl", "adam")
"""The methods of the minibatch ResNet comparison."""
TWIN_K = 3
"""The perturbed twin's :math:`k`; the reference copy has :math:`k = 1`."""


def make_optimizer(method: str, params: Any, lr: float, cfg: dict[str, Any], k: int) -> torch.optim.Optimizer:
    """The optimizer of ``method`` at (base) rate ``lr`` with the config's momentum, weight decay and
    LocalCFL settings (``local_regions``, ``tile``), perturbed by ``k``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if method in ADAPTIVE_METHODS:
        return (PerturbedAdam if method == "adam" else BlockAdam)(params, lr, k=k, weight_decay=cfg["weight_decay"])
    if method == "eigen-cfl":
        return EigenCFL(params, lr, rank=cfg["eigen_rank"], lanczos_steps=cfg["eigen_lanczos_steps"],
                        every=cfg["every"], safety=cfg["safety"], weight_decay=cfg["weight_decay"], k=k)
    if method == "secant":
        return SecantSGD(params, lr, k=k, weight_decay=cfg["weight_decay"])
    common = dict(k=k, momentum=cfg["momentum"], nesterov=cfg["nesterov"], weight_decay=cfg["weight_decay"])
    if method in ("sgd", "warmup"):
        return PerturbedSGD(params, lr, **common)
    return LocalCFL(params, lr, safety=cfg["safety"], every=cfg["every"], power_iterations=cfg["power_iterations"],
                    regions=cfg["local_regions"] if method == "local-cfl" else "global", tile=cfg["tile"],
                    **common)


StepOperator = float | Callable[[torch.Tensor], torch.Tensor] | None
r"""The square root of a method's step-size operator :math:`P` (:math:`\theta \leftarrow \theta - Pg`): a
number where :math:`P` is a multiple of the identity, else :math:`v \mapsto P^{1/2}v`; ``None`` where there is
none (Adam, whose edge is its own, and LocalCFL before its first step)."""


def step_operator(opt: torch.optim.Optimizer) -> StepOperator:
    r""":math:`P^{1/2}` of ``opt``'s last step: :math:`D^{1/2}` of LocalCFL's diagonal step sizes;
    :math:`\sqrt\eta\,(I - \sum_i (1 - \sqrt{c_i/\eta})\,u_iu_i^\top)` for EigenCFL (the capped Ritz vectors
    :math:`u_i`); the step size for the scalar methods."""
    if isinstance(opt, LocalCFL):
        if opt.steps == 0:
            return None
        steps = torch.cat([t.reshape(-1) for t in opt.step_size_tensors()])
        return float(steps[0]) if bool((steps == steps[0]).all()) else steps.sqrt().mul
    if isinstance(opt, EigenCFL):
        if opt.steps == 0:
            return None
        lr = opt.param_groups[0]["lr"]
        capped = [(rate, u) for rate, u in zip(opt.step_sizes(), opt.ritz_vectors()) if rate < lr]
        if not capped:
            return lr

        def root(v: torch.Tensor) -> torch.Tensor:
            out = v.clone()
            for rate, u in capped:
                out -= (1 - math.sqrt(rate / lr)) * (u.to(v) @ v) * u.to(v)
            return math.sqrt(lr) * out
        return root
    if isinstance(opt, SecantSGD):
        return opt.step_size() if opt.state else None
    if isinstance(opt, PerturbedSGD):
        return opt.param_groups[0]["lr"]
    return None


def region_rates(opt: torch.optim.Optimizer) -> tuple[list[float], list[float]]:
    r"""The step size :math:`\eta_r` and curvature estimate :math:`\rho_r` of every region in parameter order
    (EigenCFL: along each Ritz vector, and its Ritz value; SGD, warm-up and the secant step: one region at its
    rate, curvature not measured; Adam: neither)."""
    if isinstance(opt, LocalCFL):
        return ([r for rates in opt.step_sizes() for r in rates],
                [lam for lams in opt.sharpness() for lam in lams])
    if isinstance(opt, EigenCFL):
        return opt.step_sizes(), opt.sharpness()
    operator = step_operator(opt)
    return [operator if isinstance(operator, float) else np.nan], [np.nan]


def sharpness_pair(loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor],
                   root: StepOperator, *, tol: float, max_iter: int) -> tuple[float, float]:
    r""":math:`\lambda_{\max}(H)` and the effective sharpness :math:`\lambda_{\max}(P^{1/2}HP^{1/2})` (``nan``
    without a step operator), by Lanczos; when :math:`P = dI`, the second is :math:`d\,\lambda_{\max}(H)`."""
    lam = sharpness.top_eigenvalue(loss_fn, params, tol=tol, max_iter=max_iter)
    if root is None:
        return lam, float("nan")
    if isinstance(root, float):
        return lam, root * lam
    n = sum(p.numel() for p in params)
    matvec = lambda v: root(sharpness.hvp(loss_fn, params, root(v)))  # noqa: E731
    result = sharpness.lanczos(matvec, n, tol=tol, max_iter=max_iter, dtype=params[0].dtype)
    return lam, float(result.values[0])


def _flat(model: nn.Module) -> torch.Tensor:
    return nn.utils.parameters_to_vector(model.parameters()).detach()


def train_twins(make_model: Callable[[], nn.Module], loss_of: Callable[[nn.Module], torch.Tensor], method: str,
                lr: float, cfg: dict[str, Any], *, steps: int, sharpness_every: int,
                tick: Callable[[], None], checkpoint: Path | None = None,
                checkpoint_every: int = 50) -> dict[str, np.ndarray]:
    """Full-batch training of the :math:`k = 1` / :math:`k = 3` twins of ``method``; loss, RelL1, step
    sizes, sharpness and cost per step (``tick`` after every tenth of the steps). With ``checkpoint`` the
    twins, their optimizers and the records so far are saved there every ``checkpoint_every`` steps, and a
    run started again resumes from the file bit-exactly."""
    twins = [make_model() for _ in range(2)]
    opts = [make_optimizer(method, m.parameters(), lr, cfg, k) for m, k in zip(twins, (1, TWIN_K))]
    params = list(twins[0].parameters())
    records = {"loss": [], "rel": [], "rates": [], "hvps": [], "probe_steps": [], "lam": [], "lam_eff": [],
               "busy": 0.0, "t": 0}
    if checkpoint is not None and (state := checkpoints.load_checkpoint(checkpoint)) is not None:
        for model, opt, model_state, opt_state in zip(twins, opts, state["models"], state["optimizers"]):
            model.load_state_dict(model_state)
            opt.load_state_dict(opt_state)
        records = state["records"]
    loss, rel, rates, hvps = records["loss"], records["rel"], records["rates"], records["hvps"]
    probe_steps, lam, lam_eff = records["probe_steps"], records["lam"], records["lam_eff"]
    busy, marks = records["busy"], set(np.linspace(0, steps, 11).astype(int)[1:])
    for t in range(records["t"], steps + 1):
        if checkpoint is not None and t > records["t"] and t % checkpoint_every == 0:
            records.update(busy=busy, t=t)
            checkpoints.save_checkpoint(checkpoint, {"models": [m.state_dict() for m in twins],
                                                 "optimizers": [o.state_dict() for o in opts], "records": records})
        with torch.no_grad():
            loss.append(float(loss_of(twins[0])))
            rel.append(rel_l1(_flat(twins[0]), _flat(twins[1])))
        if sharpness_every and t % sharpness_every == 0 and np.isfinite(loss[-1]):
            probe_steps.append(t)
            pair = sharpness_pair(lambda: loss_of(twins[0]), params, step_operator(opts[0]),
                                  tol=cfg["lanczos_tol"], max_iter=cfg["lanczos_iter"])
            lam.append(pair[0])
            lam_eff.append(pair[1])
        if t == steps or not np.isfinite(loss[-1]):
            break
        start = time.process_time()
        for model, opt in zip(twins, opts):
            if method == "warmup":
                opt.param_groups[0]["lr"] = warmup_lr(lr, t, cfg["warmup_steps"])
            opt.zero_grad(set_to_none=True)
            loss_of(model).backward()
            if isinstance(opt, (LocalCFL, EigenCFL)):
                opt.step(lambda model=model: loss_of(model))
            else:
                opt.step()
        busy += time.process_time() - start
        rates.append(region_rates(opts[0]))
        hvps.append(getattr(opts[0], "hvps", 0))
        if t + 1 in marks:
            tick()
    return {"loss": np.array(loss), "rel_l1": np.array(rel),
            "step_sizes": np.array([r[0] for r in rates]).reshape(len(rates), -1),
            "region_sharpness": np.array([r[1] for r in rates]).reshape(len(rates), -1),
            "probe_steps": np.array(probe_steps, dtype=int), "sharpness": np.array(lam),
            "effective_sharpness": np.array(lam_eff), "process_time_s": np.array(busy),
            "hvps": np.array(hvps, dtype=int)}


class Kernel(nn.Module):
    """The one-layer CNN of chapter 5 as a module: its ``w x w`` kernel, the official initial one or, with
    ``seed``, the official recipe's draw from that seed."""

    def __init__(self, w: int, seed: int | None = None) -> None:
        super().__init__()
        kernel = cnnpde.official_kernel(w) if seed is None else cnnpde.official_kernel(w, seed)
        self.kernel = nn.Parameter(kernel.clone())


@dataclass(frozen=True)
class CFLTask:
    """One method at one base rate on one problem, with where its finished arrays are kept."""

    problem: str
    method: str
    lr: float
    config: dict
    checkpoint: Path

    @property
    def key(self) -> str:
        return f"{self.method}_lr{self.lr:.6g}"


def problem(task: CFLTask) -> tuple[Callable[[], nn.Module], Callable[[nn.Module], torch.Tensor]]:
    """The task's model factory and full-batch loss."""
    cfg = task.config
    if task.problem == "pde":
        image = cnnpde.checkerboard(cfg["image"])
        return ((lambda: Kernel(cfg["kernel"], cfg.get("kernel_seed"))),
                (lambda m: cnnpde.loss(m.kernel, image, alpha=cfg["alpha"], beta=cfg["beta"])))
    x, y, _ = load_data(cfg["images"])
    return ((lambda: en.TanhMLP(cfg["depth"], x[0].numel(), N_CLASSES, width=cfg["width"], seed=cfg["seed"])),
            (lambda m: en.task_loss(m, x, y)))


def run_task(task: CFLTask, tick: Callable[[], None]) -> dict[str, np.ndarray]:
    """Train one task's twins (or read them back from its checkpoint)."""
    if (stored := checkpoints.finished_arrays(task.checkpoint)) is not None:
        for _ in range(10):
            tick()
        return stored
    torch.set_num_threads(1)
    make_model, loss_of = problem(task)
    out = train_twins(make_model, loss_of, task.method, task.lr, task.config, steps=task.config["steps"],
                      sharpness_every=task.config["sharpness_every"], tick=tick,
                      checkpoint=task.checkpoint.with_suffix(".pt"))
    np.savez(task.checkpoint, **out)
    return out


def steps_to_reach(loss: np.ndarray, target: float, rtol: float) -> int | None:
    """The first step from which ``loss`` stays at most ``rtol`` (relative) above ``target`` to the end
    (a chaotic run that passes through the target and leaves it has not reached it)."""
    above = np.flatnonzero(~(np.asarray(loss) <= target * (1 + rtol)))
    if not above.size:
        return 0
    return int(above[-1] + 1) if above[-1] + 1 < len(loss) else None


def summarise(out: dict[str, np.ndarray], *, target: float | None, rtol: float, onset: float) -> dict[str, Any]:
    """The numbers chapter 8 and the ledger read for one task."""
    rel, eff = out["rel_l1"], out["effective_sharpness"]
    above = np.flatnonzero(rel >= onset)
    steps = len(out["hvps"])
    reach = None if target is None else steps_to_reach(out["loss"], target, rtol)
    hvps = np.concatenate([[0], out["hvps"]])
    return {"final_loss": float(out["loss"][-1]), "max_rel_l1": float(np.nanmax(rel)), "final_rel_l1": float(rel[-1]),
            "first_step_rel_l1_at_onset": int(above[0]) if above.size else None,
            "steps_to_target": reach, "hvps_to_target": None if reach is None else int(hvps[reach]),
            "max_sharpness": float(np.max(out["sharpness"])) if out["sharpness"].size else None,
            "max_effective_sharpness": float(np.nanmax(eff)) if np.isfinite(eff).any() else None,
            "process_time_per_step_s": float(out["process_time_s"]) / max(steps, 1),
            "hvps_per_step": float(hvps[-1]) / max(steps, 1)}


def tasks_of(cfg: dict[str, Any], checkpoints: Path) -> list[CFLTask]:
    """SGD, LocalCFL and the global step at every base rate, Adam at each of its rates, and constant-step
    SGD at each stable reference rate."""
    runs = [(method, lr) for lr in cfg["lrs"] for method in RATE_METHODS]
    runs += [(method, lr) for lr in cfg["adam_lrs"] for method in ADAPTIVE_METHODS]
    runs += [("sgd", lr) for lr in cfg["reference_lrs"] if ("sgd", lr) not in runs]
    return [CFLTask(cfg["problem"], method, lr, cfg, checkpoints / f"{method}_lr{lr:.6g}.npz") for method, lr in runs]


def summarise_tasks(outs: dict[str, dict[str, np.ndarray]],
                    cfg: dict[str, Any]) -> tuple[float | None, dict[str, dict[str, Any]]]:
    """The target loss (the lowest final loss of the stable references) and every task's numbers, its
    processor time per step compared with the mean of the SGD runs'."""
    references = [outs[f"sgd_lr{lr:.6g}"]["loss"][-1] for lr in cfg["reference_lrs"]]
    target = float(np.min(references)) if references else None
    runs = {key: summarise(out, target=target, rtol=cfg["target_rtol"], onset=cfg["onset_rel_l1"])
            for key, out in outs.items()}
    sgd_step = np.mean([r["process_time_per_step_s"] for key, r in runs.items() if key.startswith("sgd_")])
    for r in runs.values():
        r["time_vs_sgd"] = r["process_time_per_step_s"] / sgd_step
    return target, runs


def run(ctx: RunContext) -> RunOutput:
    """Every task in worker processes; the target loss is the lowest final loss of the stable references,
    and every run's processor time per step is compared with the mean of the SGD runs'."""
    cfg = ctx.config
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tasks = tasks_of(cfg, ctx.checkpoint_dir)
    outs = dict(zip((t.key for t in tasks), ctx.map(run_task, tasks, units=10, desc=ctx.experiment)))
    target, runs = summarise_tasks(outs, cfg)
    arrays = {f"{key}_{name}": value for key, out in outs.items() for name, value in out.items()}
    summary = {"methods": list(METHODS), "lrs": cfg["lrs"], "adam_lrs": cfg["adam_lrs"],
               "reference_lrs": cfg["reference_lrs"], "twin_k": TWIN_K, "target_loss": target,
               "regions": region_names(tasks[0]), "target_rtol": cfg["target_rtol"],
               "onset_rel_l1": cfg["onset_rel_l1"], "runs": runs}
    return RunOutput(arrays=arrays, summary=summary)


def run_kernels(ctx: RunContext) -> RunOutput:
    """The PDE comparison repeated from other initial kernels (``kernel_seeds``), each with its own target:
    per kernel the summary of :func:`summarise_tasks`, and the loss and twin RelL1 curves."""
    cfg = ctx.config
    tasks = {}
    for seed in cfg["kernel_seeds"]:
        folder = ctx.checkpoint_dir / f"kernel{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        tasks[seed] = tasks_of(cfg | {"kernel_seed": seed}, folder)
    flat = [task for seed_tasks in tasks.values() for task in seed_tasks]
    outs = iter(ctx.map(run_task, flat, units=10, desc=ctx.experiment))
    arrays, by_kernel = {}, {}
    for seed, seed_tasks in tasks.items():
        mine = {task.key: next(outs) for task in seed_tasks}
        target, runs = summarise_tasks(mine, cfg)
        by_kernel[str(seed)] = {"target_loss": target, "runs": runs}
        arrays |= {f"kernel{seed}_{key}_{name}": out[name] for key, out in mine.items() for name in ("loss", "rel_l1")}
    summary = {"kernel_seeds": cfg["kernel_seeds"], "lrs": cfg["lrs"], "reference_lrs": cfg["reference_lrs"],
               "twin_k": TWIN_K, "target_rtol": cfg["target_rtol"], "by_kernel": by_kernel}
    return RunOutput(arrays=arrays, summary=summary)


def region_names(task: CFLTask) -> list[str]:
    """The names of the local-cfl method's regions, in parameter order (tiles as ``name[rows, cols]``)."""
    model = problem(task)[0]()
    return regions_of(model, make_optimizer("local-cfl", model.parameters(), 1.0, task.config, 1))


def regions_of(model: nn.Module, opt: LocalCFL) -> list[str]:
    """The names of ``opt``'s regions of ``model``, in parameter order (tiles as ``name[rows, cols]``)."""
    names = []
    for name, p in model.named_parameters():
        for _, index in opt._regions_of(p):
            names.append(name if index is None else f"{name}{_describe(index)}")
    return names


def _describe(index: Any) -> str:
    if isinstance(index, int):
        return f"[{index}]"
    return "[" + ", ".join(f"{s.start}:{s.stop}" for s in index if isinstance(s, slice)) + "]"


@dataclass(frozen=True)
class ResNetTask:
    """One method, activation and batch-order seed of the ResNet comparison."""

    method: str
    activation: str
    seed: int
    config: dict
    device: str
    checkpoint: Path


def resnet_config(cfg: dict[str, Any], method: str, activation: str) -> dict[str, Any]:
    """The chapter-6 protocol config of one method and activation (Adam at its own rate)."""
    return dict(cfg, optimizer=method, activation=activation,
                lr=cfg["adam_lr"] if method == "adam" else cfg["lr"])


def run_resnet_task(task: ResNetTask, tick: Callable[[], None]) -> dict[str, np.ndarray]:
    """Train one seed's k-copies (resuming from the checkpoint), with the processor time of the training,
    earlier attempts included (kept beside the checkpoint at every epoch)."""
    clock = task.checkpoint.with_suffix(".time.json")
    spent = json.loads(clock.read_text())["process_time_s"] if clock.exists() else 0.0
    start = time.process_time()

    def timed_tick() -> None:
        clock.write_text(json.dumps({"process_time_s": spent + time.process_time() - start}))
        tick()

    cfg = resnet_config(task.config, task.method, task.activation)
    out = perturbed_sgd.train_seed(perturbed_sgd.SeedTask(cfg, task.seed, False, task.device, task.checkpoint),
                                   timed_tick)
    kept = ("test_acc", "rel_l1", "predictions", "hvps", "region_steps", "region_sharpness")
    return {key: out[key] for key in kept if key in out} | {
        "process_time_s": np.array(spent + time.process_time() - start)}


def resummarize_resnet(run: results.StoredRun) -> dict[str, Any]:
    """A stored ``local-cfl-resnet`` run's summary with every method's spread statistics recomputed from
    its stored predictions by the current :func:`pdeeos.spread.summarize` (the labels read from the
    data set; no re-training), the rest kept."""
    _, test, _ = perturbed_sgd.load_splits(run.config, torch.device("cpu"))
    labels = test.y.numpy()
    runs = {key: spread.resummarized(r, run.arrays[f"{key}_predictions"], labels)
            for key, r in run.summary["runs"].items()}
    return run.summary | {"runs": runs}


def run_resnet(ctx: RunContext) -> RunOutput:
    """Every method × activation × seed in worker processes; per method and activation the spreads of
    chapter 6 (churn over k and over seeds with intervals), the twins' RelL1 and the cost."""
    cfg = ctx.config
    train, test, described = perturbed_sgd.load_splits(cfg, torch.device("cpu"))
    local = [resnet_config(cfg, "local-cfl", a) for a in cfg["activations"]]
    nets = [perturbed_sgd.build_model(c, train) for c in local]   # a bad config fails here, before any training
    regions = regions_of(nets[0], perturbed_sgd.train_config(local[0], 0).make_optimizer(nets[0].parameters()))
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tasks = [ResNetTask(m, a, seed, cfg, str(ctx.device), ctx.checkpoint_dir / f"{a}-{m}-seed{seed}.pt")
             for a in cfg["activations"] for m in RESNET_METHODS for seed in cfg["seeds"]]
    outs = ctx.map(run_resnet_task, tasks, units=cfg["epochs"], desc=ctx.experiment)
    steps = perturbed_sgd.steps_per_epoch(cfg, len(train.y)) * cfg["epochs"]
    twin = list(cfg["ks"]).index(TWIN_K)
    arrays, summary = {}, {"data": described, "methods": list(RESNET_METHODS), "activations": cfg["activations"],
                           "steps": steps, "twin_k": TWIN_K, "regions": regions, "runs": {}}
    for a in cfg["activations"]:
        for m in RESNET_METHODS:
            mine = [o for t, o in zip(tasks, outs) if (t.activation, t.method) == (a, m)]
            acc = np.stack([o["test_acc"] for o in mine])
            final = perturbed_sgd.final_accuracy(acc, cfg["last"])
            predictions = np.stack([o["predictions"] for o in mine])
            rel = np.stack([o["rel_l1"][:, twin] for o in mine])
            key = f"{a}_{m}"
            arrays |= {f"{key}_test_acc": acc, f"{key}_rel_l1": rel, f"{key}_final_acc": final,
                       f"{key}_predictions": predictions.astype(np.int8),
                       f"{key}_process_time_s": np.array([float(o["process_time_s"]) for o in mine])}
            time_s = float(sum(o["process_time_s"] for o in mine))
            summary["runs"][key] = spread.summarize(predictions, test.y.numpy()) | {
                "final_rel_l1": float(np.median(rel[:, -1])), "process_time_s": time_s,
                "hvps_per_step": float(np.mean([o["hvps"] for o in mine])) / steps}
            if m == "local-cfl":
                step_ratio = np.stack([o["region_steps"] for o in mine]) / cfg["lr"]
                arrays |= {f"{key}_step_ratio": step_ratio,
                           f"{key}_region_sharpness": np.stack([o["region_sharpness"] for o in mine])}
                summary["runs"][key] |= {"capped_at_end": [n for n, r in zip(regions, step_ratio.min(axis=0)) if r < 1],
                                         "min_step_ratio": float(step_ratio.min())}
        sgd_time = summary["runs"][f"{a}_sgd"]["process_time_s"]
        for m in RESNET_METHODS:
            per_seed = arrays[f"{a}_{m}_process_time_s"] / arrays[f"{a}_sgd_process_time_s"]   # same seed
            summary["runs"][f"{a}_{m}"] |= {
                "time_vs_sgd": summary["runs"][f"{a}_{m}"]["process_time_s"] / sgd_time,
                "time_vs_sgd_range": [float(per_seed.min()), float(per_seed.max())]}
    return RunOutput(arrays=arrays, summary=summary)


def first_refresh(cfg: dict[str, Any], method: str, activation: str, seed: int) -> dict[str, float]:
    r"""What the first refresh of ``method`` (``"local-cfl"`` or ``"global-cfl"``) in ``local-cfl-resnet``
    measures on the first batch of batch-order ``seed`` at the initial weights every seed shares:
    ``sharpness``, the largest estimate :math:`\rho_r` over the regions (a fresh one: Lanczos from a random
    start, :math:`|\theta| + \|(H_{rr} + \text{wd}\,I)y - \theta y\|` for its Ritz pair of largest
    :math:`|\theta|`); ``curvature``, the signed Rayleigh quotient :math:`y^\top (H_{rr} + \text{wd}\,I) y` at
    that region's Ritz vector, close to :math:`-\rho_r` where the eigenvalue found is negative; and
    ``step_ratio``, the smallest step it sets,
    :math:`\min_r \eta_r/\eta` with :math:`\eta_r = \min(\eta,\ s \cdot 2(1+\beta)/((1+2\beta)\rho_r))`.
    Below 1, a cap binds for the first ``every`` steps."""
    if method not in ("local-cfl", "global-cfl"):
        raise ValueError(f"method must be 'local-cfl' or 'global-cfl'; got {method!r}")
    cfg = resnet_config(cfg, method, activation) | {"ks": [1, 1]}   # lockstep copies come in twos
    threads = torch.get_num_threads()
    try:
        trainer = perturbed_sgd.make_trainer(cfg, seed, "cpu", fluctuation=False)
        model, opt = trainer.models[0], trainer.optimizers[0]
        start = copy.deepcopy(model)   # the weights the refresh sees, before its step moves them
        images, labels = trainer.batches()[0]
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward(retain_graph=True)   # as the lockstep trainer does at a refresh
        opt.step(lambda: loss)
        params, rhos = list(model.parameters()), [max(r) for r in opt.sharpness()]
        top = max(range(len(params)), key=rhos.__getitem__)
        region = params if method == "global-cfl" else [params[top]]
        vector = torch.cat([opt.state[q]["eigvec"].flatten() if any(q is r for r in region)
                            else torch.zeros(q.numel()) for q in params])
        curvature = sharpness.rayleigh_quotient(lambda: nn.functional.cross_entropy(start(images), labels),
                                                list(start.parameters()), vector)
    finally:
        torch.set_num_threads(threads)   # make_trainer uses one thread, for the workers
    return {"sharpness": rhos[top], "curvature": curvature + cfg["weight_decay"],
            "step_ratio": min(min(rates) for rates in opt.step_sizes()) / cfg["lr"]}


@dataclass(frozen=True)
class SharpnessTask:
    """The SGD trajectory of one activation's first batch-order seed, probed for its sharpness."""

    activation: str
    config: dict
    device: str
    checkpoint: Path


def probe_epochs(cfg: dict[str, Any]) -> list[int]:
    """The epochs after which the sharpness is probed: 0 (the initial weights), every ``probe_every``, the last."""
    every, epochs = cfg["probe_every"], cfg["epochs"]
    if not (isinstance(every, int) and 0 < every and epochs % every == 0):
        raise ValueError(f"probe_every must be a positive divisor of epochs = {epochs}; got {every!r}")
    return list(range(0, epochs + 1, every))


def spectrum(model: nn.Module, twin: nn.Module, split: Split, cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    r"""The curvature a step cap can see at ``model``'s weights, on the first ``sharpness_images`` training
    images (no augmentation), batch-norm in training mode and weight decay included
    (:func:`~pdeeos.book.experiments.lr_threshold.minibatch_loss`): :math:`\lambda_{\max}` of their minibatch
    loss, as chapter 6 measures it; :math:`\lambda_{\max}` of each batch's own loss, the loss one step (and
    one refresh of a cap) sees; and :math:`\lambda_{\min}` of the minibatch loss, since a cap bounds the
    largest *magnitude*. Lanczos with at most 80 products, to a relative residual of :math:`10^{-3}`
    (:math:`10^{-2}` for :math:`\lambda_{\min}`), each with its convergence flag. And where the twins
    differ: the curvature of the minibatch loss along their difference :math:`\delta = \theta_3 - \theta_1`,
    :math:`\delta^\top H \delta / \delta^\top\delta`, against its mean over ``random_directions`` Gaussian
    directions (drawn from ``seed``), an estimate of the mean eigenvalue :math:`\operatorname{tr}(H)/n`."""
    probe = copy.deepcopy(model).train()
    params, size = list(probe.parameters()), cfg["batch_size"]
    x, y = split.x[:cfg["sharpness_images"]], split.y[:cfg["sharpness_images"]]

    def loss(xs: torch.Tensor, ys: torch.Tensor) -> list[Callable[[], torch.Tensor]]:
        return minibatch_loss(probe, xs, ys, batch_size=size, weight_decay=cfg["weight_decay"])

    whole = loss(x, y)
    top = sharpness.top_eigenvalues(whole, params, tol=1e-3, max_iter=80)
    batches = [sharpness.top_eigenvalues(loss(x[i:i + size], y[i:i + size]), params, tol=1e-3, max_iter=80)
               for i in range(0, len(y), size)]
    bottom = sharpness.bottom_eigenvalue(whole, params, tol=1e-2, max_iter=80)
    delta = torch.cat([(b - a).detach().flatten() for a, b in zip(model.parameters(), twin.parameters())])
    gen = torch.Generator().manual_seed(seed)
    randoms = [sharpness.rayleigh_quotient(whole, params, torch.randn(len(delta), generator=gen, dtype=torch.float64))
               for _ in range(cfg["random_directions"])]
    return {"sharpness": float(top.values[0]), "batch_sharpness": [float(b.values[0]) for b in batches],
            "min_eigenvalue": float(bottom.values[0]),
            "converged": [top.converged, *(b.converged for b in batches), bottom.converged],
            "twin_curvature": sharpness.rayleigh_quotient(whole, params, delta),
            "random_curvature": float(np.mean(randoms))}


def sharpness_along(task: SharpnessTask, tick: Callable[[], None]) -> dict[str, np.ndarray]:
    """Train the twins :math:`k = 1` and 3 of ``local-cfl-resnet``'s SGD run of seed 0 (the same weights,
    batches and augmentation, so the same trajectory) and take the :func:`spectrum` at each of
    :func:`probe_epochs` (the first, at the initial weights, has no difference to probe). Probes and
    training resume from the checkpoint."""
    cfg = resnet_config(task.config, "sgd", task.activation) | {"ks": [1, TWIN_K]}
    trainer = perturbed_sgd.make_trainer(cfg, cfg["seeds"][0], task.device, fluctuation=False)
    store = task.checkpoint.with_suffix(".probes.json")
    probes = {int(e): p for e, p in json.loads(store.read_text()).items()} if store.exists() else {}
    for epoch in probe_epochs(cfg):
        trainer.train(epoch, checkpoint=task.checkpoint)
        if epoch not in probes:
            if trainer.epoch != epoch:
                raise RuntimeError(f"{task.checkpoint} is at epoch {trainer.epoch}, past the missing probe of "
                                   f"epoch {epoch}; delete it and {store.name} to run again")
            probes[epoch] = spectrum(*trainer.models, trainer.train_split, cfg, seed=epoch)
            store.write_text(json.dumps(probes))
        tick()
    done = [probes[e] for e in probe_epochs(cfg)]
    history = trainer.history.arrays()
    return {name: np.array([p[name] for p in done]) for name in done[0]} | {
        "test_acc": history["test_acc"][:, 0], "rel_l1": history["rel_l1"][:, 1]}


def run_resnet_sharpness(ctx: RunContext) -> RunOutput:
    r"""The curvature along each activation's SGD trajectory against the stability edge of Nesterov SGD,
    :math:`\eta\lambda < 2(1+\beta)/(1+2\beta)` (:func:`pdeeos.optim.stable_step`), and against the cap the
    step-size methods apply, :math:`s` times that edge, on the largest magnitude they bound: a cap would
    bind if :math:`\eta\max(\lambda_{\max}^{\text{batch}}, -\lambda_{\min}) > s \times` the edge."""
    cfg = ctx.config
    epochs = probe_epochs(cfg)   # a bad probe_every fails here, before any training
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tasks = [SharpnessTask(a, cfg, str(ctx.device), ctx.checkpoint_dir / f"{a}.pt") for a in cfg["activations"]]
    outs = ctx.map(sharpness_along, tasks, units=len(epochs), desc=ctx.experiment)
    train, _, described = perturbed_sgd.load_splits(cfg, torch.device("cpu"))
    per_epoch = perturbed_sgd.steps_per_epoch(cfg, len(train.y))
    edge = stable_step(1.0, momentum=cfg["momentum"], nesterov=cfg["nesterov"])   # eta * lambda at the edge
    arrays = {"probe_steps": np.array(epochs) * per_epoch} | {
        f"{t.activation}_{name}": values for t, o in zip(tasks, outs) for name, values in o.items()}
    runs = {}
    for t, o in zip(tasks, outs):
        top, batch = float(o["sharpness"].max()), float(o["batch_sharpness"].max())
        lowest = float(o["min_eigenvalue"].min())
        runs[t.activation] = {
            "max_sharpness": top, "max_batch_sharpness": batch, "min_eigenvalue": lowest,
            "max_fraction_of_edge": cfg["lr"] * top / edge, "max_batch_fraction_of_edge": cfg["lr"] * batch / edge,
            "capped": cfg["lr"] * max(batch, -lowest) / edge > cfg["safety"],
            "all_converged": bool(o["converged"].all()),
            "twin_to_random_curvature": float(np.median(o["twin_curvature"][1:] / o["random_curvature"][1:]))}
    summary = {"data": described, "activations": cfg["activations"], "seed": cfg["seeds"][0], "lr": cfg["lr"],
               "safety": cfg["safety"], "edge_lr_times_sharpness": edge, "runs": runs}
    return RunOutput(arrays=arrays, summary=summary)


_RESNET = dict(perturbed_sgd.PROTOCOL, **perturbed_sgd.CIFAR, model="resnet8", width=8,
               activations=["swish", "relu"], ks=list(perturbed_sgd.KS), seeds=[0, 1, 2], milestones=[],
               fluctuation_batches=0, last=1, adam_lr=1e-3, safety=0.9, every=50, power_iterations=1)
"""Chapter 6's ResNet-8 protocol at a constant lr 0.1 (30 epochs of 40 steps: 1,200 steps, after which the
Swish twins are a RelL1 of 3e-3 to 1e-2 apart under SGD in chapter 6's ``perturbed-sgd-constant-lr``);
LocalCFL refreshes every 50 steps with one warm-started iteration per region (29 regions: 0.58
Hessian-vector products a step), to keep its cost within reach of SGD's."""

_COMMON = dict(momentum=0.0, nesterov=False, weight_decay=0.0, safety=0.9, every=10, power_iterations=2,
               eigen_rank=4, eigen_lanczos_steps=24, warmup_steps=100,
               tile=8, lanczos_tol=1e-4, lanczos_iter=100, target_rtol=1e-9, onset_rel_l1=1e-10)
_PDE = _COMMON | dict(problem="pde", alpha=20.0, beta=1.0, lrs=[0.05, 0.07, 0.09], local_regions="tiles",
                      adam_lrs=[1e-3, 1e-2, 1e-1], reference_lrs=[0.01, 0.02, 0.029, 0.03])
"""The one-layer PDE: its one kernel cut into 8 × 8 tiles (16 regions: spatial regions of the weights, the
paper's "local regions"), Adam at three rates, and constant stable steps up to the edge 2/62.0 = 0.0323."""
_PDE_KERNELS = _PDE | dict(adam_lrs=[], reference_lrs=[0.02], kernel_seeds=[0, 1, 2, 3])
"""The PDE from the official recipe's draws with seeds 0-3 (the official kernel is seed 7): the three
methods at the three base rates and the best constant stable step of the official kernel as the target."""
_TANH = _COMMON | dict(problem="tanh", depth=2, width=200, seed=0, lrs=[ETA], local_regions="tensor",
                       adam_lrs=[1e-3], reference_lrs=[], lanczos_tol=1e-3, lanczos_iter=60)
"""The tanh network: a region per weight matrix and bias vector (6 regions)."""

EXPERIMENT = (
    Experiment(
        name="local-cfl-pde",
        summary="LocalCFL vs SGD, global stable step and Adam on the one-layer CNN PDE at dt 0.05, 0.07, 0.09",
        chapter="08-local-cfl",
        configs={"ci": _PDE | dict(image=32, kernel=6, tile=3, lrs=[0.07], adam_lrs=[1e-2], reference_lrs=[0.03],
                                   steps=40, sharpness_every=20, warmup_steps=10),
                 "book": _PDE | dict(image=256, kernel=32, steps=1000, sharpness_every=10)},
        func=run),
    Experiment(
        name="local-cfl-pde-kernels",
        summary="The one-layer PDE comparison (SGD, LocalCFL on tiles, the global stable step) from four more "
                "initial kernels",
        chapter="08-local-cfl",
        configs={"ci": _PDE_KERNELS | dict(image=32, kernel=6, tile=3, lrs=[0.07], reference_lrs=[0.03],
                                           kernel_seeds=[0, 1], steps=40, sharpness_every=0, warmup_steps=10),
                 "book": _PDE_KERNELS | dict(image=256, kernel=32, steps=1000, sharpness_every=0)},
        func=run_kernels),
    Experiment(
        name="local-cfl-tanh",
        summary="LocalCFL vs SGD, global stable step and Adam on the Fig. 8 tanh network at eta = 2/30",
        chapter="08-local-cfl",
        configs={"ci": _TANH | dict(images=64, width=16, steps=20, sharpness_every=10, warmup_steps=5),
                 "book": _TANH | dict(images=None, steps=400, sharpness_every=25)},
        func=run),
    Experiment(
        name="local-cfl-resnet",
        summary="LocalCFL vs SGD, global stable step and Adam on chapter 6's ResNet-8 (Swish, ReLU), constant lr",
        chapter="08-local-cfl",
        configs={"ci": _RESNET | dict(train_limit=128, test_limit=128, width=2, activations=["swish"], ks=[1, 3],
                                      seeds=[0, 1], epochs=2, every=2),
                 "book": _RESNET | dict(epochs=30)},
        func=run_resnet),
    Experiment(
        name="local-cfl-resnet-sharpness",
        summary="The sharpness along local-cfl-resnet's SGD trajectory (seed 0) against Nesterov SGD's stability edge",
        chapter="08-local-cfl",
        configs={"ci": _RESNET | dict(train_limit=128, test_limit=128, width=2, activations=["swish"], seeds=[0],
                                      epochs=2, probe_every=1, sharpness_images=64, random_directions=2),
                 "book": _RESNET | dict(epochs=30, probe_every=3, sharpness_images=512, random_directions=4)},
        func=run_resnet_sharpness),
)
