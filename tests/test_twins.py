"""pdeeos.Twins: copies of one's own model, one per k, stepped in one's own loop."""

from __future__ import annotations

import ast
import copy
import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pdeeos
from pdeeos import Twins, lyapunov
from pdeeos.metrics import rel_l1
from pdeeos.optim import LocalCFL, PerturbedSGD, perturb
from pdeeos.twins import edge

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]

SGD = lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9)          # noqa: E731
ADAMW = lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-2)  # noqa: E731


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def _batches(steps: int, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed stream of batches, the same for every copy (what a DataLoader of one's own would give)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(128, 6, generator=g), torch.randint(0, 3, (128,), generator=g)
    return [(x[i], y[i]) for i in (torch.randint(0, 128, (size,), generator=g) for _ in range(steps))]


def _run(twins: Twins, batches: list) -> Twins:
    for xb, yb in batches:
        twins.step(lambda m, xb=xb, yb=yb: F.cross_entropy(m(xb), yb))
    return twins


def _same(a: nn.Module, b: nn.Module) -> bool:
    """Bit-identical parameters and buffers (byte by byte, so -0 and +0 differ)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[n].reshape(-1).view(torch.uint8),
                                                      sb[n].reshape(-1).view(torch.uint8)) for n in sa)


@pytest.mark.parametrize("make", [SGD, ADAMW], ids=["sgd", "adamw"])
def test_k2_is_k1_bit_for_bit_and_k3_is_not(make: Callable) -> None:
    twins = _run(Twins(_mlp(), make, ks=(1, 2, 3)), _batches(30))
    assert _same(twins.models[0], twins.models[1]) and not _same(twins.models[0], twins.models[2])
    d = twins.history["rel_l1"]
    assert d.shape == (30, 3) and not d[:, :2].any() and d[-1, 2] > 0


def _hand(model: nn.Module, make: Callable, batches: list) -> tuple[nn.Module, list[float]]:
    """A copy of ``model`` trained by a hand-written loop with ``make(params)``; its losses."""
    hand = copy.deepcopy(model)
    opt = make(list(hand.parameters()))
    losses = []
    for xb, yb in batches:
        opt.zero_grad()
        loss = F.cross_entropy(hand(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return hand, losses


def test_the_copies_are_what_a_hand_written_loop_makes() -> None:
    model, batches = _mlp(), _batches(20)
    twins = _run(Twins(model, SGD, ks=(1, 3)), batches)
    hand, losses = _hand(model, lambda p: perturb(SGD(p), 3), batches)
    assert _same(twins.models[1], hand)
    assert np.array_equal(twins.history["loss"][:, 1], np.array(losses, dtype=np.float32).astype(float))
    assert _same(model, _mlp())                                      # the model given is not trained


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_records_are_rel_l1_of_the_whole_network_and_of_each_tensor(dtype: torch.dtype) -> None:
    """The records are RelL1 of the weights after the step, in every precision (a bfloat16 copy is
    widened after the reference has stepped, not before)."""
    twins = Twins(_mlp().to(dtype), SGD, ks=(3, 1), record_every=3)
    for xb, yb in _batches(30):
        twins.step(lambda m, xb=xb, yb=yb: F.cross_entropy(m(xb.to(dtype)).float(), yb))
    h = twins.history
    assert twins.reference == 1 and h["steps"].tolist() == list(range(3, 31, 3))
    assert twins.names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    mine, ref = (list(m.parameters()) for m in twins.models)
    flat = [torch.cat([p.detach().reshape(-1) for p in ps]) for ps in (mine, ref)]
    assert h["rel_l1"][-1, 0] == pytest.approx(rel_l1(*flat), rel=1e-5) and h["rel_l1"][-1, 0] > 0
    assert h["rel_l1_params"][-1, 0] == pytest.approx([rel_l1(p, r) for p, r in zip(mine, ref)], rel=1e-5)
    assert h["rel_l1_params"].shape == (10, 2, 4) and not h["rel_l1"][:, 1].any()


def test_step_returns_the_losses_and_records_them() -> None:
    twins, (xb, yb) = Twins(_mlp(), ADAMW, ks=(1, 3)), _batches(1)[0]
    losses = twins.step(lambda m: F.cross_entropy(m(xb), yb))
    assert losses.shape == (2,) and torch.equal(losses[0], losses[1])
    assert twins.history["loss"][0].tolist() == losses.double().tolist()


@pytest.mark.parametrize("make", [SGD, ADAMW], ids=["sgd", "adamw"])
def test_resume_is_bit_exact(make: Callable) -> None:
    batches = _batches(12)
    whole = _run(Twins(_mlp(), make, ks=(1, 3), sharpness_every=4), batches)
    first = _run(Twins(_mlp(), make, ks=(1, 3), sharpness_every=4), batches[:6])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    resumed = Twins(_mlp(seed=5), make, ks=(1, 3), sharpness_every=4)    # other initial weights
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    _run(resumed, batches[6:])
    assert resumed.steps == 12 and all(_same(a, b) for a, b in zip(whole.models, resumed.models))
    for name, values in whole.history.items():
        assert np.array_equal(values, resumed.history[name], equal_nan=True), name
    for a, b in zip(whole.optimizers, resumed.optimizers):
        assert str(a.state_dict()["param_groups"]) == str(b.state_dict()["param_groups"])


def test_load_state_dict_refuses_other_settings() -> None:
    state = Twins(_mlp(), SGD, ks=(1, 3)).state_dict()
    for other in (Twins(_mlp(), SGD, ks=(1, 5)), Twins(_mlp(), SGD, ks=(1, 3), record_every=2),
                  Twins(nn.Linear(6, 3), SGD, ks=(1, 3))):
        with pytest.raises(ValueError, match="other settings"):
            other.load_state_dict(state)


def test_predict_and_outputs_per_copy() -> None:
    twins = _run(Twins(_mlp(), SGD, ks=(1, 2, 3)), _batches(5))
    x = torch.randn(7, 6)
    assert twins.outputs(x).shape == (3, 7, 3)
    predicted = twins.predict(x)
    assert predicted.shape == (3, 7) and torch.equal(predicted[0], twins.models[0](x).argmax(1))
    assert all(m.training for m in twins.models)


def _bn_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 3))


def test_sharpness_is_recorded_and_leaves_the_twins_bit_identical() -> None:
    make = lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)  # noqa: E731
    twins = _run(Twins(_bn_mlp(), make, ks=(1, 2, 3), sharpness_every=2), _batches(6))
    h = twins.history
    assert h["sharpness_steps"].tolist() == [2, 4, 6] and h["sharpness"].shape == (3, 3)
    assert np.array_equal(h["sharpness"][:, 0], h["sharpness"][:, 1]) and (h["sharpness"] > 0).all()
    assert h["eta_sharpness"] == pytest.approx(0.1 * h["sharpness"])
    assert h["edge"] == pytest.approx(np.full((3, 3), 2 * 1.9 / 2.8 - 0.1 * 1e-3))
    assert _same(twins.models[0], twins.models[1])
    assert int(twins.models[0][1].num_batches_tracked) == 6           # training's batches, not the measurement's


def test_edge_of_each_optimizer() -> None:
    params = list(_mlp().parameters())
    assert edge(torch.optim.SGD(params, lr=0.1)) == 2
    assert edge(torch.optim.SGD(params, lr=0.1, momentum=0.9, dampening=0.5)) == pytest.approx(2 * 1.9 / 0.5)
    assert edge(PerturbedSGD(params, 0.1, momentum=0.5, weight_decay=0.1)) == pytest.approx(3 - 0.01)
    assert np.isnan(edge(torch.optim.AdamW(params))) and np.isnan(edge(torch.optim.RMSprop(params, momentum=0.9)))


def test_fate_and_growth_of_every_copy() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))
    twins = Twins(model, lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9), ks=(1, 2, 3))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 20, generator=g), torch.randint(0, 4, (256,), generator=g)
    with pytest.raises(ValueError, match="at least 4 finite records"):
        twins.fate()
    for _ in range(300):
        i = torch.randint(0, 256, (32,), generator=g)
        twins.step(lambda m: F.cross_entropy(m(x[i]), y[i]))
    d, steps = twins.history["rel_l1"][:, 2], twins.history["steps"]
    assert twins.fate() == ["rounding", "rounding", lyapunov.fate(d, dtype=torch.float32, steps=steps)]
    growth = twins.growth()
    assert growth[1].onset is None and growth[2] == lyapunov.growth(d, dtype="float32", steps=steps)
    assert growth[2].onset is not None and growth[2].rate > 0


def test_the_paper_optimizers_and_local_cfl_run_as_twins() -> None:
    batches = _batches(6)
    paper = _run(Twins(_mlp(), lambda p: PerturbedSGD(p, 0.1, momentum=0.9), ks=(1, 3)), batches)
    hand, _ = _hand(_mlp(), lambda p: PerturbedSGD(p, 0.1, k=3, momentum=0.9), batches)
    assert _same(paper.models[1], hand) and not _same(paper.models[0], hand)
    cfl = _run(Twins(_mlp(), lambda p: LocalCFL(p, 0.5, every=2), ks=(1, 2, 3)), batches)
    assert _same(cfl.models[0], cfl.models[1]) and not _same(cfl.models[0], cfl.models[2])
    assert cfl.optimizers[0].hvps > 0


def test_the_floor_follows_the_model_dtype() -> None:
    assert Twins(_mlp().double(), SGD).dtype == torch.float64
    assert Twins(_mlp(), SGD).dtype == torch.float32


class _Recorder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, params: list) -> torch.optim.Optimizer:
        self.calls += 1
        return SGD(params)


@pytest.mark.parametrize("kwargs, message", [
    (dict(ks=(3, 5)), "must contain k = 1"),
    (dict(ks=(1,)), "at least two"),
    (dict(ks="13"), "at least two"),
    (dict(ks=(1, 0)), "k must be an integer"),
    (dict(ks=(1, 2.0)), "k must be an integer"),
    (dict(record_every=0), "record_every must be"),
    (dict(record_every=True), "record_every must be"),
    (dict(sharpness_every=0), "sharpness_every must be"),
])
def test_bad_settings_are_refused_before_any_work(kwargs: dict, message: str) -> None:
    recorder = _Recorder()
    with pytest.raises(ValueError, match=message):
        Twins(_mlp(), recorder, **kwargs)
    assert recorder.calls == 0


def test_bad_models_optimizers_and_losses_are_refused() -> None:
    with pytest.raises(ValueError, match="torch.nn.Module"):
        Twins("model", SGD)
    with pytest.raises(ValueError, match="requires grad"):
        Twins(nn.ReLU(), SGD)
    with pytest.raises(ValueError, match="make_optimizer must be a callable"):
        Twins(_mlp(), 0.1)
    with pytest.raises(ValueError, match="must return a torch.optim.Optimizer"):
        Twins(_mlp(), lambda p: p)
    other = _mlp()
    with pytest.raises(ValueError, match="over the parameters it is given"):
        Twins(_mlp(), lambda p: SGD(other.parameters()))
    twins, (xb, yb) = Twins(_mlp(), SGD), _batches(1)[0]
    with pytest.raises(ValueError, match="loss_fn must be a callable"):
        twins.step(3.0)
    with pytest.raises(ValueError, match="scalar tensor"):
        twins.step(lambda m: m(xb))
    with pytest.raises(ValueError, match="scalar tensor"):
        twins.step(lambda m: 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_twins_on_cuda() -> None:
    batches = [(x.cuda(), y.cuda()) for x, y in _batches(10)]
    twins = _run(Twins(_mlp().cuda(), ADAMW, ks=(1, 2, 3), sharpness_every=5), batches)
    assert _same(twins.models[0], twins.models[1]) and not _same(twins.models[0], twins.models[2])
    assert np.isfinite(twins.history["rel_l1"]).all() and twins.predict(batches[0][0]).is_cuda


def test_package_exports_twins_and_names_every_public_module() -> None:
    assert pdeeos.Twins is Twins
    for package, folder in ((pdeeos, ROOT / "src" / "pdeeos"), (pdeeos.pde, ROOT / "src" / "pdeeos" / "pde"),
                            (pdeeos.book, ROOT / "src" / "pdeeos" / "book")):
        files = {p.stem for p in folder.glob("*.py")} - {"__init__", "__main__"}
        subpackages = {p.parent.name for p in folder.glob("*/__init__.py")}
        assert files | subpackages == set(package.MODULES), package.__name__
        for name in package.MODULES:
            module = getattr(package, name)
            assert all(hasattr(module, item) for item in module.__all__), module.__name__


def _imports(path: Path) -> set[str]:
    """Every pdeeos module a source file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pdeeos"):
            found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pdeeos")}
    return found


def test_the_layout_separates_the_readers_tools_the_pde_models_and_the_book() -> None:
    """The reader's tools import neither pdeeos.pde nor pdeeos.book; the PDE models do not import the book;
    the stored-run files (results) do not import the experiment registry that loads them (no circle)."""
    src = ROOT / "src" / "pdeeos"
    for path in src.glob("*.py"):
        if path.stem not in ("__init__", "__main__"):
            assert not {m for m in _imports(path) if m.startswith(("pdeeos.pde", "pdeeos.book"))}, path.name
    for path in (src / "pde").glob("*.py"):
        assert not {m for m in _imports(path) if m.startswith("pdeeos.book")}, path.name
    for name in ("results", "config"):
        assert not {m for m in _imports(src / "book" / f"{name}.py") if "experiments" in m}, name


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Test your own network", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(capsys: pytest.CaptureFixture) -> None:
    code = _readme_example()
    assert len(code.splitlines()) <= 40
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "SGD" in printed and "AdamW" in printed and "fate" in printed


def test_record_every_none_steps_without_records() -> None:
    twins = _run(Twins(_mlp(), SGD, ks=(1, 3), record_every=None), _batches(6))
    recorded = _run(Twins(_mlp(), SGD, ks=(1, 3)), _batches(6))
    assert twins.steps == 6 and twins.history["steps"].size == 0
    assert all(torch.equal(a, b) for m, n in zip(twins.models, recorded.models)
               for a, b in zip(m.state_dict().values(), n.state_dict().values()))
    with pytest.raises(ValueError, match="at least 4 finite records"):
        twins.fate()
