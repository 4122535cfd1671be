r"""Gradient descent on the Beltrami (total-variation-type) energy: restrained instability in a non-linear PDE.

The energy of a signal or image :math:`u` (grid spacing 1) with data :math:`f` is (paper §3.2, eq. 4)

.. math:: E(u) = \sum_x \sqrt{\varepsilon^2 + |\nabla u(x)|^2} + \frac{\lambda}{2}\sum_x (u(x) - f(x))^2 ,

and its gradient descent is the Beltrami reaction-diffusion PDE

.. math:: \partial_t u = \operatorname{div}\!\Big(\frac{\nabla u}{w}\Big) - \lambda (u - f),
          \qquad w = \sqrt{\varepsilon^2 + |\nabla u|^2},

stepped by forward Euler, :math:`u^{n+1} = u^n + \Delta t\, R(u^n)`.

**Discretisation and boundary.** :math:`\nabla` is the forward difference along each axis, set to 0
across the last sample (homogeneous Neumann: the signal is mirrored, nothing flows out), and
:math:`\operatorname{div}` is minus its adjoint (backward differences). So :math:`R(u) = -\partial E/\partial u`
exactly: the scheme is gradient descent on the discrete energy with learning rate :math:`\Delta t`.

**Local CFL bound.** Freezing :math:`c = 1/w` at a point turns the PDE into
:math:`u_t = c\,\Delta u - \lambda(u - f)`, whose explicit scheme multiplies a Fourier mode by
:math:`A(\theta) = 1 - \Delta t\,(4c\sum_{i=1}^{d}\sin^2(\theta_i/2) + \lambda)` in ``d`` dimensions.
:math:`|A| \le 1` for every mode iff

.. math:: \Delta t \le \Delta t_{\mathrm{loc}}(x) = \frac{2\,w(x)}{4d + \lambda\, w(x)} .

It grows with the local gradient: the strict bound is its value on flat ground (:math:`w = \varepsilon`),
:math:`2\varepsilon/(4d + \lambda\varepsilon) \approx \varepsilon/(2d)`, and its supremum
(:math:`|\nabla u| \to \infty`) is :math:`2/\lambda`, the bound of the fidelity term alone: beyond it
no point is stable.

Everything is batched: a 1-D array of step sizes runs as one batch, optionally with a twin run per
step size whose update is written :math:`(\Delta t/k)\,(k R)` (the paper's perturbation, here for a PDE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pdeeos.metrics import rel_l1

__all__ = [
    "Sweep",
    "classify",
    "divergence",
    "energy",
    "forward_gradient",
    "local_bound",
    "noisy_camera",
    "piecewise_constant",
    "regime_boundaries",
    "rhs",
    "simulate",
    "strict_bound",
    "unstable_bound",
]

# ----------------------------------------------------------------------------- bounds


def _check_params(eps: float, lam: float) -> None:
    if not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be finite and > 0; got {eps!r}")
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be finite and >= 0; got {lam!r}")


def _check_ndim(ndim: int) -> int:
    if ndim not in (1, 2):
        raise ValueError(f"ndim must be 1 or 2; got {ndim!r}")
    return ndim


def strict_bound(eps: float, lam: float, ndim: int) -> float:
    r"""Strict stable step :math:`2\varepsilon/(4d + \lambda\varepsilon)`: the local bound where :math:`\nabla u = 0`."""
    _check_params(eps, lam)
    return 2.0 * eps / (4.0 * _check_ndim(ndim) + lam * eps)


def unstable_bound(lam: float) -> float:
    r"""Supremum :math:`2/\lambda` of the local bounds: above it every point violates its bound (``inf`` if λ = 0)."""
    _check_params(1.0, lam)
    return 2.0 / lam if lam > 0 else float("inf")


# ----------------------------------------------------------------------------- the discrete operator


def forward_gradient(u: torch.Tensor, ndim: int) -> list[torch.Tensor]:
    r"""Forward differences :math:`u_{i+1} - u_i` along the last ``ndim`` axes, 0 across the last sample (Neumann)."""
    return [torch.diff(u, dim=axis, append=u.narrow(axis, u.shape[axis] - 1, 1))
            for axis in range(-_check_ndim(ndim), 0)]


def divergence(p: Sequence[torch.Tensor]) -> torch.Tensor:
    r"""Backward-difference divergence :math:`\sum_i p^i_j - p^i_{j-1}` (:math:`p_{-1} = 0`), minus the adjoint of :func:`forward_gradient`.

    Each component must vanish on its last sample, as :func:`forward_gradient`'s output does.
    """
    ndim = len(p)
    return sum(torch.diff(q, dim=axis, prepend=torch.zeros_like(q.narrow(axis, 0, 1)))
               for q, axis in zip(p, range(-ndim, 0)))


def _weight(grad: Sequence[torch.Tensor], eps: float) -> torch.Tensor:
    r""":math:`w = \sqrt{\varepsilon^2 + |\nabla u|^2}`."""
    return torch.sqrt(eps * eps + sum(g * g for g in grad))


def rhs(u: torch.Tensor, f: torch.Tensor, eps: float, lam: float, ndim: int) -> torch.Tensor:
    r"""Right-hand side :math:`R(u) = \operatorname{div}(\nabla u/w) - \lambda(u - f) = -\partial E/\partial u`."""
    grad = forward_gradient(u, ndim)
    w = _weight(grad, eps)
    return divergence([g / w for g in grad]) - lam * (u - f)


def energy(u: torch.Tensor, f: torch.Tensor, eps: float, lam: float, ndim: int) -> torch.Tensor:
    r""":math:`E(u) = \sum\sqrt{\varepsilon^2 + |\nabla u|^2} + \frac{\lambda}{2}\sum (u-f)^2`, summed over the last ``ndim`` axes."""
    axes = tuple(range(-ndim, 0))
    return _weight(forward_gradient(u, ndim), eps).sum(axes) + 0.5 * lam * ((u - f) ** 2).sum(axes)


def local_bound(u: torch.Tensor | np.ndarray, eps: float, lam: float, ndim: int) -> torch.Tensor:
    r"""Local CFL bound :math:`\Delta t_{\mathrm{loc}} = 2w/(4d + \lambda w)` at every point of ``u``."""
    _check_params(eps, lam)
    w = _weight(forward_gradient(torch.as_tensor(u), ndim), eps)
    return 2.0 * w / (4.0 * ndim + lam * w)


# ----------------------------------------------------------------------------- data


def noisy_camera(size: int = 256, sigma: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's bundled ``camera`` photograph (512x512, no download), resized to ``size``, in [0, 1],
    and a copy with seeded Gaussian noise of standard deviation ``sigma``; returns ``(clean, noisy)`` in float64."""
    from skimage import data, transform

    if size < 2:
        raise ValueError(f"size must be at least 2; got {size}")
    clean = transform.resize(data.camera() / 255.0, (size, size), anti_aliasing=True)
    return clean, clean + sigma * np.random.default_rng(seed).standard_normal(clean.shape)


def piecewise_constant(n: int = 256, sigma: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 1-D step signal (levels 0.2, 0.8, 0.5, 0.9, 0.1 on five equal pieces) and a noisy copy; ``(clean, noisy)``."""
    if n < 5:
        raise ValueError(f"n must be at least 5; got {n}")
    levels = np.array([0.2, 0.8, 0.5, 0.9, 0.1])
    clean = levels[np.arange(n) * levels.size // n]
    return clean, clean + sigma * np.random.default_rng(seed).standard_normal(n)


# ----------------------------------------------------------------------------- the batched scheme


@dataclass
class Sweep:
    """What :func:`simulate` records, with step sizes along the first axis of every array.

    ``iterations`` are the recorded iteration numbers ``n`` (the state *before* step ``n+1``);
    at each: ``energy`` :math:`E(u^n)`, ``violated`` the fraction of points with
    :math:`\\Delta t > \\Delta t_{\\mathrm{loc}}(u^n)`, ``oscillation`` the period-2 amplitude
    :math:`\\mathrm{mean}\\,|u^{n+1} - 2u^n + u^{n-1}|/4` and ``twin_rel_l1`` RelL1 between the run and its
    :math:`(\\Delta t/k)(kR)` twin (``None`` without a twin). ``snapshots`` and ``violation_maps`` hold
    :math:`u^n` and the boolean map :math:`\\Delta t > \\Delta t_{\\mathrm{loc}}` at ``snapshot_at``
    (axis 1); ``final`` is the last state.
    """

    dt: np.ndarray
    iterations: np.ndarray
    energy: np.ndarray
    violated: np.ndarray
    oscillation: np.ndarray
    twin_rel_l1: np.ndarray | None
    snapshot_at: np.ndarray
    snapshots: np.ndarray
    violation_maps: np.ndarray
    final: np.ndarray


def _increment(u: torch.Tensor, f: torch.Tensor, dt_over_k: torch.Tensor, k: torch.Tensor,
               eps: torch.Tensor, lam: torch.Tensor, ndim: int) -> torch.Tensor:
    r"""The update :math:`(\Delta t/k)\,(k\,R(u))` of every run of the batch."""
    return dt_over_k * (k * rhs(u, f, eps, lam, ndim))


_increment_compiled = torch.compile(_increment, dynamic=False)


def _violated(u: torch.Tensor, dts: np.ndarray, eps: float, lam: float) -> torch.Tensor:
    r"""Boolean map :math:`\Delta t > \Delta t_{\mathrm{loc}}(u)` for a batch ``u`` with one step size per row."""
    dt = torch.as_tensor(dts, dtype=u.dtype).reshape(-1, *(1,) * (u.ndim - 1))
    return dt > local_bound(u, eps, lam, u.ndim - 1)


def _as_field(name: str, value: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    t = torch.as_tensor(value)
    if not (t.is_floating_point() and t.ndim in (1, 2)):
        raise ValueError(f"{name} must be a 1-D signal or 2-D image of floats; got {t.dtype} of shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite everywhere")
    return t.to(dtype)


def _check_count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _check_dt(dt: float | Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(dt, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"dt must be a positive finite number or 1-D array of them; got {dt!r}")
    return arr


def simulate(f: np.ndarray | torch.Tensor, *, dt: float | Sequence[float] | np.ndarray, eps: float,
             lam: float, steps: int, u0: np.ndarray | torch.Tensor | None = None,
             dtype: torch.dtype = torch.float32, twin_k: int | None = None, record_every: int = 1,
             snapshot_at: Sequence[int] = (), compiled: bool = False) -> Sweep:
    r"""Run :math:`u^{n+1} = u^n + \Delta t\,R(u^n)` for every step size of ``dt`` at once.

    ``f`` is the data (1-D or 2-D), ``u0`` the start (default ``f``), ``dtype`` torch.float32 or float64.
    With ``twin_k`` every step size also runs a twin updated by :math:`(\Delta t/k)(k R)`; RelL1 between
    twins is recorded. Records every ``record_every`` iterations from 0, and keeps states and violation
    maps at ``snapshot_at`` (iterations in ``[0, steps]``). A run that blows up becomes ``inf``/``nan``.
    ``compiled`` fuses the step into one kernel with ``torch.compile`` (several times faster on large
    batches; the first call of a shape compiles for some seconds; rounding may differ from eager).
    """
    _check_params(eps, lam)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype}")
    f_t = _as_field("f", f, dtype)
    u_t = f_t.clone() if u0 is None else _as_field("u0", u0, dtype)
    if u_t.shape != f_t.shape:
        raise ValueError(f"u0 and f must have one shape; got {tuple(u_t.shape)} and {tuple(f_t.shape)}")
    dts, steps = _check_dt(dt), _check_count("steps", steps, 0)
    record_every = _check_count("record_every", record_every, 1)
    ks = (1,) if twin_k is None else (1, _check_count("twin_k", twin_k, 1))
    snaps = sorted({_check_count("snapshot_at", s, 0) for s in snapshot_at})
    if snaps and snaps[-1] > steps:
        raise ValueError(f"snapshot_at must lie in [0, steps={steps}]; got {snaps[-1]}")

    ndim = f_t.ndim
    shape = (len(ks), dts.size) + (1,) * ndim
    k = torch.tensor(ks, dtype=dtype).reshape(len(ks), *(1,) * (ndim + 1))
    dt_over_k = (torch.tensor(dts, dtype=dtype).reshape(1, -1, *(1,) * ndim) / k).reshape(shape)
    params = torch.tensor(eps, dtype=dtype), torch.tensor(lam, dtype=dtype)
    increment = _increment_compiled if compiled else _increment
    u = u_t.expand(*shape[:2], *f_t.shape).clone()
    du_prev = torch.zeros_like(u[0])
    recorded: dict[str, list] = {"iterations": [], "energy": [], "violated": [], "oscillation": [], "twin": []}
    snapshots, maps = [], []
    axes = tuple(range(-ndim, 0))
    for n in range(steps + 1):
        du = increment(u, f_t, dt_over_k, k, *params, ndim)
        if n % record_every == 0:
            recorded["iterations"].append(n)
            recorded["energy"].append(energy(u[0], f_t, eps, lam, ndim).double())
            recorded["violated"].append(_violated(u[0], dts, eps, lam).double().mean(axes))
            recorded["oscillation"].append(((du[0] - du_prev).abs().mean(axes) / 4).double())
            if twin_k is not None:
                recorded["twin"].append([rel_l1(u[0, b], u[1, b]) for b in range(dts.size)])
        if n in snaps:
            snapshots.append(u[0].clone())
            maps.append(_violated(u[0], dts, eps, lam))
        if n == steps:
            break
        du_prev = du[0]
        u += du
    return Sweep(
        dt=dts,
        iterations=np.array(recorded["iterations"]),
        energy=torch.stack(recorded["energy"], -1).numpy(),
        violated=torch.stack(recorded["violated"], -1).numpy(),
        oscillation=torch.stack(recorded["oscillation"], -1).numpy(),
        twin_rel_l1=np.array(recorded["twin"]).T if twin_k is not None else None,
        snapshot_at=np.array(snaps, dtype=int),
        snapshots=torch.stack(snapshots, 1).numpy() if snaps else np.empty((dts.size, 0) + tuple(f_t.shape)),
        violation_maps=torch.stack(maps, 1).numpy() if snaps else np.empty((dts.size, 0) + tuple(f_t.shape), bool),
        final=u[0].numpy(),
    )


def classify(final: np.ndarray, violated: np.ndarray, *, blowup: float = 1e3, tail: float = 0.25) -> np.ndarray:
    r"""Regime of each run from its ``final`` state and its recorded ``violated`` fractions (a :class:`Sweep`'s):
    ``'unstable'`` if the final state is non-finite or exceeds ``blowup`` in magnitude; ``'restrained'`` if
    points still violate their local bound over the last ``tail`` of the records (the run keeps crossing
    between unstable and stable); else ``'stable'``."""
    if not 0 < tail <= 1:
        raise ValueError(f"tail must lie in (0, 1]; got {tail!r}")
    final, violated = np.asarray(final), np.asarray(violated)
    if violated.ndim != 2 or final.shape[0] != violated.shape[0]:
        raise ValueError(f"violated must be (runs, records) with one row per final state; got {violated.shape}")
    with np.errstate(invalid="ignore"):
        blown = ~(np.abs(final).reshape(final.shape[0], -1).max(axis=1) <= blowup)
    last = violated[:, -max(1, int(round(tail * violated.shape[1]))):]
    return np.where(blown, "unstable", np.where(last.mean(axis=1) > 0, "restrained", "stable"))


def regime_boundaries(multiples: np.ndarray, regimes: np.ndarray) -> dict[str, float]:
    """Measured boundaries from a sweep: for each change of regime, the last multiple of one regime and the
    first of the next (``nan`` where the sweep never reaches a regime). ``multiples`` must increase."""
    multiples, regimes = np.asarray(multiples, dtype=float), np.asarray(regimes)
    if multiples.shape != regimes.shape or np.any(np.diff(multiples) <= 0):
        raise ValueError("multiples must increase and match regimes in shape")
    def first(name: str) -> float:
        hits = multiples[regimes == name]
        return float(hits[0]) if hits.size else float("nan")
    def last_below(name: str, limit: float) -> float:
        hits = multiples[(regimes == name) & ~(multiples >= limit)]
        return float(hits[-1]) if hits.size else float("nan")
    restrained, unstable = first("restrained"), first("unstable")
    return {"last_stable": last_below("stable", restrained), "first_restrained": restrained,
            "last_restrained": last_below("restrained", unstable), "first_unstable": unstable}
