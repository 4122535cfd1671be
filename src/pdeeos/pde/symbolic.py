r"""The theory of the one-layer CNN (paper §5.1–5.3, NeurIPS App. C–D) derived once with SymPy.

Every formula the book evaluates is derived here symbolically and turned into a NumPy function with
``sympy.lambdify``: the Swish activation :math:`r(x) = x/(1+e^{-\beta x})` and its derivatives, the
gradient of the one-layer loss (Thm 5.1), the amplifier of the linearised forward-Euler scheme
(Thm 5.3), the bounds on the weight decay (Thm 5.4) and the exact Nesterov bound (Thm D.3, from the
Schur–Cohn conditions). Other modules call the lambdified functions, never re-typed formulas.

Notation: :math:`\star` is the valid cross-correlation :math:`(K\star I)(m) = \sum_i K(i) I(m+i)`;
for a map ``E`` of the output size, :math:`(E\star I)(i) = \sum_m E(m) I(m+i)` is its adjoint.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import sympy as sp
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "POOLINGS",
    "alpha_bound_exprs",
    "alpha_max",
    "alpha_min",
    "amplifier",
    "amplifier_expr",
    "checkerboard_map",
    "checkerboard_map_exprs",
    "checkerboard_pooled_expr",
    "correlate",
    "correlate_adjoint",
    "cross_entropy_identity",
    "discrete_loss",
    "forward",
    "gradient",
    "jury_conditions",
    "linearised_swish_derivative",
    "loss",
    "multilayer_gradients",
    "nesterov_characteristic",
    "nesterov_step",
    "nesterov_step_size",
    "nesterov_step_size_expr",
    "nesterov_z_max",
    "nesterov_z_max_expr",
    "swish",
    "swish_derivative",
    "swish_derivative_expr",
    "swish_expr",
    "swish_second_derivative",
    "swish_sigmoid_form",
    "swish_sigmoid_funcs",
    "symbols",
]

POOLINGS: tuple[str, ...] = ("sum", "mean")
"""Global pooling of the activation map: the paper's integral (``sum``) or the code's average (``mean``)."""

x, beta, y, yhat, z, a, alpha, dt, lam, mu, q, u, z1, z2 = sp.symbols(
    "x beta y \\hat{y} z a alpha \\Delta{t} lambda mu q u z' z''", real=True)
d = sp.Symbol("d", positive=True)
sigma = sp.Symbol("sigma", positive=True)
n_plus, n_minus, p = sp.symbols("n_+ n_- p", positive=True)


def symbols() -> dict[str, sp.Symbol]:
    """The SymPy symbols the derivations use, by name."""
    return {"x": x, "beta": beta, "y": y, "yhat": yhat, "z": z, "a": a, "alpha": alpha, "dt": dt,
            "lam": lam, "mu": mu, "q": q, "d": d, "sigma": sigma, "u": u, "z1": z1, "z2": z2,
            "n_plus": n_plus, "n_minus": n_minus, "p": p}


# ----------------------------------------------------------------------------- Swish


@cache
def swish_expr() -> sp.Expr:
    r"""Swish :math:`r(x) = x / (1 + e^{-\beta x})`."""
    return x / (1 + sp.exp(-beta * x))


@cache
def swish_derivative_expr(order: int = 1) -> sp.Expr:
    r""":math:`r^{(k)}(x)`, simplified (``order`` = 1 is paper eq. 29, 2 is eq. 30)."""
    if order < 1:
        raise ValueError(f"order must be >= 1; got {order}")
    return sp.simplify(sp.diff(swish_expr(), x, order))


@cache
def swish_sigmoid_form(order: int = 0) -> sp.Expr:
    r""":math:`r^{(k)}(x)` rewritten in :math:`\sigma = s(\beta x) = 1/(1 + e^{-\beta x})`: a polynomial in
    :math:`x, \beta, \sigma` (:math:`r = x\sigma`, :math:`r' = \sigma[1 + \beta x(1 - \sigma)]`,
    :math:`r'' = \beta\sigma(1 - \sigma)[2 + \beta x(1 - 2\sigma)]`) that tensors evaluate without overflow."""
    expr = swish_expr() if order == 0 else swish_derivative_expr(order)
    expr = expr.rewrite(sp.exp).subs({sp.exp(-beta * x): (1 - sigma) / sigma,
                                      sp.exp(beta * x): sigma / (1 - sigma)})
    form = sp.factor(sp.simplify(expr))
    if form.has(sp.exp):
        raise RuntimeError(f"r^({order}) did not reduce to a polynomial in the sigmoid: {form}")
    return form


@cache
def swish_sigmoid_funcs(order: int = 0) -> Callable[..., object]:
    """:func:`swish_sigmoid_form` as a function ``f(x, sigma, beta)`` of arrays or tensors (only
    arithmetic operators, so NumPy arrays and torch tensors both work)."""
    return _lambdify(swish_sigmoid_form(order), (x, sigma, beta))


@cache
def linearised_swish_derivative() -> sp.Expr:
    r"""First-order Taylor polynomial of :math:`r'` at 0: :math:`r'(0) + r''(0)x = \tfrac12 + \tfrac\beta2 x` (eq. 31–32)."""
    return sp.series(swish_derivative_expr(1), x, 0, 2).removeO()


def _lambdify(expr: sp.Expr, args: tuple[sp.Symbol, ...]) -> Callable[..., np.ndarray]:
    return sp.lambdify(args, expr, modules="numpy")


@cache
def _swish_funcs() -> tuple[Callable[..., np.ndarray], ...]:
    return (_lambdify(swish_expr(), (x, beta)), _lambdify(swish_derivative_expr(1), (x, beta)),
            _lambdify(swish_derivative_expr(2), (x, beta)))


def _clipped(f: Callable[..., np.ndarray], values: np.ndarray, b: float) -> np.ndarray:
    r"""Evaluate a derivative ``f(x, beta)`` with :math:`|\beta x|` clipped at 200, beyond which its
    exponentials would overflow; there :math:`r'` is 0 or 1 and :math:`r''` is 0 to within 1e-80."""
    values = np.asarray(values, dtype=np.float64)
    return f(np.clip(values, -200.0 / b, 200.0 / b), b)


def swish(values: np.ndarray, beta_value: float = 1.0) -> np.ndarray:
    """Swish evaluated from :func:`swish_expr` (:math:`e^{-\\beta x} = \\infty` gives the limit 0)."""
    with np.errstate(over="ignore"):
        return _swish_funcs()[0](np.asarray(values, dtype=np.float64), beta_value)


def swish_derivative(values: np.ndarray, beta_value: float = 1.0) -> np.ndarray:
    """:math:`r'` evaluated from :func:`swish_derivative_expr`."""
    return _clipped(_swish_funcs()[1], values, beta_value)


def swish_second_derivative(values: np.ndarray, beta_value: float = 1.0) -> np.ndarray:
    """:math:`r''` evaluated from :func:`swish_derivative_expr` (order 2)."""
    return _clipped(_swish_funcs()[2], values, beta_value)


# ----------------------------------------------------------------------------- cross-entropy


@cache
def cross_entropy_identity() -> sp.Expr:
    r""":math:`\hat y(1-\hat y)\,\partial_{\hat y}\ell` for :math:`\ell = -y\log\hat y - (1-y)\log(1-\hat y)`.

    Since the sigmoid obeys :math:`s' = s(1-s)`, this is :math:`a = s'\partial_{\hat y}\ell`, and it
    simplifies to :math:`\hat y - y`.
    """
    ell = -y * sp.log(yhat) - (1 - y) * sp.log(1 - yhat)
    return sp.simplify(yhat * (1 - yhat) * sp.diff(ell, yhat))


# ----------------------------------------------------------------------------- the one-layer loss


def discrete_loss(image_shape: tuple[int, int], kernel_size: int, pooling: str = "sum"
                  ) -> tuple[sp.Expr, sp.Matrix, sp.Matrix]:
    r"""The loss (6) on a small grid as a SymPy expression of symbolic kernel and image entries.

    :math:`L = \ell(y, s(P[r(K\star I)])) + \tfrac\alpha2\|K\|^2` with ``P`` the sum or mean over
    output positions. Returns ``(L, K, I)`` so that SymPy can differentiate ``L`` entry by entry.
    """
    check_pooling(pooling)
    n0, n1 = image_shape
    w = kernel_size
    K = sp.Matrix(w, w, lambda i, j: sp.Symbol(f"K_{i}{j}", real=True))
    I = sp.Matrix(n0, n1, lambda i, j: sp.Symbol(f"I_{i}{j}", real=True))
    m0, m1 = n0 - w + 1, n1 - w + 1
    pre = [sum(K[i, j] * I[p + i, r + j] for i in range(w) for j in range(w))
           for p in range(m0) for r in range(m1)]
    pooled = sum(swish_expr().subs(x, c) for c in pre)
    if pooling == "mean":
        pooled = pooled / (m0 * m1)
    yh = 1 / (1 + sp.exp(-pooled))
    ell = -y * sp.log(yh) - (1 - y) * sp.log(1 - yh)
    return ell + alpha / 2 * sum(k**2 for k in K), K, I


def check_pooling(pooling: str) -> None:
    """``ValueError`` naming the allowed choices unless ``pooling`` is one of :data:`POOLINGS`."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")


def _check_2d(**arrays: np.ndarray) -> None:
    for name, arr in arrays.items():
        if np.ndim(arr) != 2:
            raise ValueError(f"{name} must be a 2-D array; got shape {np.shape(arr)}")


def correlate(kernel: np.ndarray, image: np.ndarray) -> np.ndarray:
    r"""Valid cross-correlation :math:`(K\star I)(m) = \sum_i K(i)\,I(m+i)` (NumPy, any 2-D shapes)."""
    _check_2d(kernel=kernel, image=image)
    if kernel.shape[0] > image.shape[0] or kernel.shape[1] > image.shape[1]:
        raise ValueError(f"kernel {kernel.shape} is larger than image {image.shape}")
    return np.einsum("mnij,ij->mn", sliding_window_view(image, kernel.shape), kernel)


def forward(kernel: np.ndarray, image: np.ndarray, beta_value: float = 1.0, pooling: str = "sum"
            ) -> tuple[np.ndarray, float]:
    r"""Pre-activation :math:`K\star I` and pooled activation :math:`z = P[r(K\star I)]`."""
    check_pooling(pooling)
    pre = correlate(kernel, image)
    act = swish(pre, beta_value)
    return pre, float(act.sum() if pooling == "sum" else act.mean())


def loss(kernel: np.ndarray, image: np.ndarray, *, y_value: float, alpha_value: float,
         beta_value: float = 1.0, pooling: str = "sum") -> float:
    r"""Loss (6): :math:`\mathrm{softplus}(z) - yz + \tfrac\alpha2\|K\|^2`, the cross-entropy of :math:`s(z)`."""
    _, pooled = forward(kernel, image, beta_value, pooling)
    return float(np.logaddexp(0.0, pooled) - y_value * pooled + 0.5 * alpha_value * np.sum(kernel**2))


def gradient(kernel: np.ndarray, image: np.ndarray, *, y_value: float, alpha_value: float,
             beta_value: float = 1.0, pooling: str = "sum") -> np.ndarray:
    r"""Thm 5.1 on a grid: :math:`\nabla_K L = (\hat y - y)\,c\,[r'(K\star I)\star I] + \alpha K`.

    :math:`c = 1` for the paper's sum pooling and :math:`c = 1/M^2` (``M x M`` output) for mean
    pooling; :math:`\hat y - y` is :func:`cross_entropy_identity`, :math:`r'` is
    :func:`swish_derivative`. Tested against torch autograd.
    """
    pre, pooled = forward(kernel, image, beta_value, pooling)
    error = 1.0 / (1.0 + np.exp(-pooled)) - y_value
    if pooling == "mean":
        error /= pre.size
    return correlate(error * swish_derivative(pre, beta_value), image) + alpha_value * kernel


def correlate_adjoint(maps: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    r"""Gradient of :math:`\sum_m E(m)(K\star X)(m)` with respect to ``X``: the full convolution
    :math:`(E * K)(j) = \sum_m E(m)\,K(j-m)`, of the size of ``X``."""
    _check_2d(maps=maps, kernel=kernel)
    w0, w1 = kernel.shape
    return correlate(np.flip(kernel), np.pad(maps, ((w0 - 1, w0 - 1), (w1 - 1, w1 - 1))))


def multilayer_gradients(kernels: list[np.ndarray], image: np.ndarray, *, y_value: float, alpha_value: float,
                         beta_value: float = 1.0, pooling: str = "sum") -> list[np.ndarray]:
    r"""Thm 5.7 (arXiv App. F): kernel gradients of :math:`I_l = r(K_l\star I_{l-1})`, :math:`I_0 = I`,
    :math:`\hat y = s(P[I_L])`, loss :math:`\ell(y,\hat y) + \tfrac\alpha2\sum_l\|K_l\|^2`:

    .. math:: \nabla_{K_l} L = [r'(K_l\star I_{l-1})\,G_l]\star I_{l-1} + \alpha K_l,
              \qquad G_L = (\hat y - y)\,c, \quad G_{l-1} = [r'(K_l\star I_{l-1})\,G_l] * K_l,

    with :math:`G_l` the gradient of the loss with respect to the output of layer ``l``, ``*`` the full
    convolution (:func:`correlate_adjoint`) and ``c`` as in :func:`gradient`. One layer gives Thm 5.1.
    """
    check_pooling(pooling)
    inputs, pres = [np.asarray(image, dtype=np.float64)], []
    for kernel in kernels:
        pres.append(correlate(kernel, inputs[-1]))
        inputs.append(swish(pres[-1], beta_value))
    pooled = inputs[-1].sum() if pooling == "sum" else inputs[-1].mean()
    error = 1.0 / (1.0 + np.exp(-pooled)) - y_value
    upstream = np.full(inputs[-1].shape, error / (1 if pooling == "sum" else inputs[-1].size))
    grads = []
    for kernel, pre, below in zip(kernels[::-1], pres[::-1], inputs[-2::-1]):
        local = swish_derivative(pre, beta_value) * upstream
        grads.append(correlate(local, below) + alpha_value * kernel)
        upstream = correlate_adjoint(local, kernel)
    return grads[::-1]


# ----------------------------------------------------------------------------- gradient descent


@cache
def amplifier_expr() -> sp.Expr:
    r"""Thm 5.3: forward Euler on :math:`\partial_t\hat K = -(\alpha + \tfrac12 a\beta\lambda)\hat K`,
    :math:`\lambda = |\hat I(\omega)|^2` (or an eigenvalue of the windowed operator), multiplies a mode by
    :math:`A = 1 - \Delta t(\alpha + \tfrac12 a\beta\lambda)`."""
    k = sp.Symbol("K", real=True)
    rhs = -(alpha * k + a / 2 * beta * lam * k)
    return sp.expand((k + dt * rhs) / k)


@cache
def alpha_bound_exprs() -> tuple[sp.Expr, sp.Expr]:
    r"""Thm 5.4: :math:`-1 < A < 1` solved for :math:`\alpha` at one eigenvalue :math:`\lambda`.

    ``A < 1`` gives :math:`\alpha > -\tfrac12 a\beta\lambda` and ``A > -1`` gives
    :math:`\alpha < 2/\Delta t - \tfrac12 a\beta\lambda`.
    """
    lower = sp.solve(sp.Eq(amplifier_expr(), 1), alpha)[0]
    upper = sp.solve(sp.Eq(amplifier_expr(), -1), alpha)[0]
    return sp.simplify(lower), sp.simplify(upper)


@cache
def _bound_funcs() -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray], Callable[..., np.ndarray]]:
    lower, upper = alpha_bound_exprs()
    return (_lambdify(amplifier_expr(), (lam, dt, alpha, a, beta)),
            _lambdify(lower, (lam, a, beta)), _lambdify(upper, (lam, dt, a, beta)))


def amplifier(eigenvalue: np.ndarray, dt_value: float, alpha_value: float, a_value: float = -0.5,
              beta_value: float = 1.0) -> np.ndarray:
    r""":math:`A = 1 - \Delta t(\alpha + \tfrac12 a\beta\lambda)` evaluated from :func:`amplifier_expr`."""
    return _bound_funcs()[0](np.asarray(eigenvalue, dtype=np.float64), dt_value, alpha_value, a_value, beta_value)


def alpha_min(eigenvalues: np.ndarray, a_value: float = -0.5, beta_value: float = 1.0) -> float:
    r"""Smallest stable weight decay: the largest :math:`-\tfrac12 a\beta\lambda` over the eigenvalues.

    For :math:`a\beta < 0` this is the paper's :math:`-\tfrac12 a\beta\max\lambda`.
    """
    return float(np.max(_bound_funcs()[1](np.asarray(eigenvalues, dtype=np.float64), a_value, beta_value)))


def alpha_max(eigenvalues: np.ndarray, dt_value: float, a_value: float = -0.5, beta_value: float = 1.0) -> float:
    r"""Largest stable weight decay: the smallest :math:`2/\Delta t - \tfrac12 a\beta\lambda` over the eigenvalues."""
    return float(np.min(_bound_funcs()[2](np.asarray(eigenvalues, dtype=np.float64), dt_value, a_value, beta_value)))


# ----------------------------------------------------------------------------- Nesterov


@cache
def nesterov_step() -> tuple[sp.Expr, sp.Expr]:
    r"""Central differences for :math:`K_{tt} + dK_t = -\nabla L` (eq. 53) solved for :math:`K^{n+1}`.

    Returns the coefficients ``(mu, h)`` of :math:`K^{n+1} = K^n + \mu(K^n - K^{n-1}) - h\nabla L`:
    :math:`\mu = (2 - d\Delta t)/(2 + d\Delta t)` and :math:`h = 2\Delta t^2/(2 + d\Delta t)` (eq. 54).
    The semi-implicit (Nesterov) form evaluates :math:`\nabla L` at :math:`V^n = K^n + \mu(K^n - K^{n-1})`.
    """
    kp, k0, km, g = sp.symbols("K^{n+1} K^n K^{n-1} g", real=True)
    scheme = sp.Eq((kp - 2 * k0 + km) / dt**2 + d * (kp - km) / (2 * dt), -g)
    k_next = sp.expand(sp.solve(scheme, kp)[0])
    mu_expr = sp.simplify(-k_next.coeff(km))
    h_expr = sp.simplify(-k_next.coeff(g))
    return mu_expr, h_expr


@cache
def nesterov_characteristic() -> sp.Expr:
    r"""Characteristic polynomial of the linearised Nesterov scheme on one mode.

    With :math:`\nabla L = zV` and :math:`q = 1 - hz`:
    :math:`K^{n+1} = q[(1+\mu)K^n - \mu K^{n-1}]`, so :math:`p(\lambda) = \lambda^2 - q(1+\mu)\lambda + q\mu`.
    """
    return lam**2 - q * (1 + mu) * lam + q * mu


@cache
def jury_conditions() -> tuple[sp.Expr, ...]:
    r"""Schur–Cohn (Jury) conditions for :math:`\lambda^2 + b\lambda + c`, both roots inside the unit
    circle: :math:`p(1) > 0`, :math:`p(-1) > 0`, :math:`|c| < 1`; returned as expressions that must be > 0."""
    p = nesterov_characteristic()
    c = p.subs(lam, 0)
    return sp.factor(p.subs(lam, 1)), sp.factor(p.subs(lam, -1)), 1 - c, 1 + c


@cache
def nesterov_step_size_expr() -> sp.Expr:
    r"""The gradient step :math:`h = 2\Delta t^2/(2 + d\Delta t)` with the damping ``d`` that makes the
    momentum coefficient :math:`\mu`: :math:`h = \Delta t^2(1+\mu)/2`."""
    mu_expr, h_expr = nesterov_step()
    return sp.simplify(h_expr.subs(d, sp.solve(sp.Eq(mu_expr, mu), d)[0]))


@cache
def nesterov_z_max_expr() -> sp.Expr:
    r"""The exact bound :math:`z < z_{\max}` in terms of :math:`\Delta t` and the momentum :math:`\mu`.

    ``p(-1) > 0`` gives :math:`q > -1/(1+2\mu)`, i.e. :math:`hz < (2+2\mu)/(1+2\mu)`; with
    :math:`h` from :func:`nesterov_step_size_expr`, :math:`z_{\max} = 4/((1+2\mu)\Delta t^2)`.
    (``p(1) > 0`` gives :math:`z > 0`; :math:`|q\mu| < 1` is then implied.)
    """
    q_crit = sp.solve(jury_conditions()[1], q)[0]
    return sp.simplify((1 - q_crit) / nesterov_step_size_expr())


@cache
def _nesterov_funcs() -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]:
    return _lambdify(nesterov_z_max_expr(), (dt, mu)), _lambdify(nesterov_step_size_expr(), (dt, mu))


def nesterov_z_max(dt_value: float, momentum: float) -> float:
    r""":math:`z_{\max} = 4/((1+2\mu)\Delta t^2)` evaluated from :func:`nesterov_z_max_expr`."""
    return float(_nesterov_funcs()[0](dt_value, momentum))


def nesterov_step_size(dt_value: float, momentum: float) -> float:
    r""":math:`h = \Delta t^2(1+\mu)/2` evaluated from :func:`nesterov_step_size_expr`."""
    return float(_nesterov_funcs()[1](dt_value, momentum))


# ----------------------------------------------------------------------------- the checkerboard reduction


@cache
def checkerboard_pooled_expr() -> sp.Expr:
    r"""Pooled activation on the checkerboard as a function of :math:`u = \langle K, P_0\rangle`.

    Every patch of the checkerboard is :math:`\pm P_0`, so :math:`K\star I = +u` on :math:`n_+` output
    positions and :math:`-u` on :math:`n_-`; mean pooling gives
    :math:`z(u) = \bigl(n_+ r(u) + n_- r(-u)\bigr)/(n_+ + n_-)`.
    """
    return (n_plus * swish_expr().subs(x, u) + n_minus * swish_expr().subs(x, -u)) / (n_plus + n_minus)


@cache
def checkerboard_map_exprs() -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    r"""The scalar gradient-descent map of the checkerboard, its derivative and the curvature along :math:`P_0`.

    With :math:`K = \tfrac{u}{p}P_0 + K_\perp` (:math:`p = \|P_0\|^2 = w^2`) the loss is
    :math:`\ell(y, s(z(u))) + \tfrac\alpha2\|K\|^2` and its gradient :math:`\partial_u\ell\;P_0 + \alpha K`,
    so :math:`\langle\nabla L, P_0\rangle = p\,\partial_u\ell + \alpha u` and one step maps :math:`u` by

    .. math:: F(u) = u - \Delta t\,\bigl(p\,(s(z) - y)\,z'(u) + \alpha u\bigr), \qquad
              F'(u) = 1 - \Delta t\,\lambda(u),

    .. math:: \lambda(u) = p\,\bigl[s(z)(1 - s(z))\,z'(u)^2 + (s(z) - y)\,z''(u)\bigr] + \alpha,

    the Hessian's eigenvalue along :math:`P_0` (its other eigenvalues are all :math:`\alpha`). Derived from
    the cross-entropy of :math:`s(z)` with :math:`z` an unspecified function of :math:`u`; returned in the
    symbols ``u, Δt, α, p, y`` and ``σ = s(z)``, ``z' = z'(u)``, ``z'' = z''(u)``. A fixed point
    :math:`u^*` is stable iff :math:`|1 - \Delta t\lambda(u^*)| < 1`: it flips at :math:`\Delta t = 2/\lambda(u^*)`.
    """
    zu = sp.Function("z")(u)
    yh = 1 / (1 + sp.exp(-zu))
    ell = -y * sp.log(yh) - (1 - y) * sp.log(1 - yh)
    step = u - dt * (p * sp.diff(ell, u) + alpha * u)
    slope = sp.diff(step, u)

    def in_sigma(expr: sp.Expr) -> sp.Expr:
        expr = expr.subs({sp.Derivative(zu, (u, 2)): z2}).subs({sp.Derivative(zu, u): z1})
        expr = sp.simplify(expr).subs({sp.exp(-zu): (1 - sigma) / sigma, sp.exp(zu): sigma / (1 - sigma)})
        form = sp.factor(sp.simplify(expr))
        if form.has(sp.exp) or form.has(zu):
            raise RuntimeError(f"the checkerboard map did not reduce to sigma, z', z'': {form}")
        return form

    map_expr, slope_expr = in_sigma(step), in_sigma(slope)
    curvature = sp.factor(sp.simplify((1 - slope_expr) / dt))
    return map_expr, slope_expr, curvature


@cache
def _checkerboard_funcs() -> tuple[Callable[..., np.ndarray], ...]:
    pooled = checkerboard_pooled_expr()
    map_expr, slope_expr, _ = checkerboard_map_exprs()
    args = (u, beta, n_plus, n_minus)
    return (_lambdify(sp.diff(pooled, u), args), _lambdify(sp.diff(pooled, u, 2), args),
            _lambdify(map_expr, (u, dt, alpha, p, y, sigma, z1)),
            _lambdify(slope_expr, (dt, alpha, p, y, sigma, z1, z2)))


def checkerboard_map(values: np.ndarray, dt_value: np.ndarray, *, alpha_value: float, beta_value: float,
                     y_value: float, counts: tuple[int, int], p_value: float) -> tuple[np.ndarray, np.ndarray]:
    r""":math:`F(u)` and :math:`F'(u)` of :func:`checkerboard_map_exprs`, elementwise (broadcasting ``u``
    and ``Δt``). ``counts`` is :math:`(n_+, n_-)`; :math:`z` comes from :func:`swish` (no overflow),
    :math:`z', z''` from :func:`checkerboard_pooled_expr` with :math:`|\beta u|` clipped at 200, beyond
    which they are constant to 1e-80.
    """
    d1, d2, step, slope = _checkerboard_funcs()
    values = np.asarray(values, dtype=np.float64)
    n_p, n_m = counts
    pooled = (n_p * swish(values, beta_value) + n_m * swish(-values, beta_value)) / (n_p + n_m)
    s_z = 1.0 / (1.0 + np.exp(-np.clip(pooled, -700.0, 700.0)))
    clipped = np.clip(values, -200.0 / beta_value, 200.0 / beta_value)
    dz, ddz = d1(clipped, beta_value, n_p, n_m), d2(clipped, beta_value, n_p, n_m)
    return (step(values, dt_value, alpha_value, p_value, y_value, s_z, dz),
            slope(dt_value, alpha_value, p_value, y_value, s_z, dz, ddz))
