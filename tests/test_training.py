"""Lockstep trainer: App. B bit-identities, bit-exact resume, schedule, Table 1 statistics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import torch.nn.functional as F

from pdeeos import Twins, models
from pdeeos.book.experiments.perturbed_sgd import final_accuracy, schedule
from pdeeos.training import LockstepTrainer, Split, TrainConfig, gradient_fluctuation, identical


def _splits() -> tuple[Split, Split]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, 8, 8, generator=gen)
    y = torch.randint(0, 10, (48,), generator=gen)
    return Split(x[:32], y[:32]), Split(x[32:], y[32:])


def _trainer(ks: tuple[int, ...], **kwargs) -> LockstepTrainer:
    torch.manual_seed(0)
    train, test = _splits()
    cfg = TrainConfig(ks=ks, batch_size=8, epochs=2, milestones=(1,), **kwargs)
    return LockstepTrainer(models.resnet(8, width=2), train, test, cfg)


def test_app_b_bit_identities() -> None:
    trainer = _trainer((1, 1, 2, 4, 8, 3))
    trainer.train()
    first = trainer.models[0]
    assert all(identical(first, m) for m in trainer.models[1:5])  # k = 1 twice, k = 2, 4, 8
    assert not identical(first, trainer.models[5])  # k = 3
    assert trainer.history.rel_l1[-1][:5] == [0.0] * 5 and trainer.history.rel_l1[-1][5] > 0


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "local-cfl"])
def test_the_trainer_is_twins_stepped_on_its_batches(optimizer: str) -> None:
    """One stepping mechanism: the trainer's copies are a Twins, and a Twins stepped by hand on the trainer's
    batches (the same generator state) ends bit for bit where the trainer's copies end."""
    trainer = _trainer((1, 3), optimizer=optimizer, lr=2.0 if optimizer == "local-cfl" else 0.1, every=2)
    assert isinstance(trainer.twins, Twins) and trainer.twins.record_every is None
    by_hand = _trainer((1, 3), optimizer=optimizer, lr=2.0 if optimizer == "local-cfl" else 0.1, every=2)
    hand = Twins(by_hand.models[0], by_hand.config.make_optimizer, (1, 3))
    for xb, yb in by_hand.batches():
        hand.step(lambda m, xb=xb, yb=yb: F.cross_entropy(m.train()(xb), yb))
    trainer.run_epoch()
    assert all(identical(a, b) for a, b in zip(trainer.models, hand.models))
    assert trainer.history.rel_l1[0][1] > 0 and hand.history["rel_l1"][-1, 1] > 0


def test_the_protocol_needs_the_unperturbed_copy_and_a_twin() -> None:
    with pytest.raises(ValueError, match="k = 1"):
        TrainConfig(ks=(3, 5))
    with pytest.raises(ValueError, match="at least two"):
        TrainConfig(ks=(1,))


@pytest.mark.parametrize("optimizer", ["sgd", "local-cfl"])
def test_resume_is_bit_exact(tmp_path: Path, optimizer: str) -> None:
    settings = dict(fluctuation_batches=1, optimizer=optimizer, every=3, predict_every=1)
    whole = _trainer((1, 3), **settings)
    whole.train()
    ckpt = tmp_path / "ckpt.pt"
    _trainer((1, 3), **settings).train(1, checkpoint=ckpt)  # stopped after epoch 1
    resumed = _trainer((1, 3), **settings)
    resumed.train(checkpoint=ckpt)
    assert resumed.epoch == 2
    assert all(identical(a, b) for a, b in zip(whole.models, resumed.models))
    assert resumed.history == whole.history


def test_predictions_along_training_are_recorded_every_predict_every_epochs() -> None:
    trainer = _trainer((1, 3), predict_every=2)
    trainer.train(4)
    along = trainer.history.arrays()
    assert along["prediction_epochs"].tolist() == [2, 4]
    assert along["predictions_along"].shape == (2, 2, 16) and along["predictions_along"].dtype == np.int8
    np.testing.assert_array_equal(along["predictions_along"][-1], trainer.predictions().numpy())
    assert _trainer((1, 3)).train(1).arrays()["predictions_along"].shape == (0, 0, 0)
    with pytest.raises(ValueError, match="predict_every"):
        TrainConfig(predict_every=-1)


def test_checkpoint_from_before_a_config_field_existed_resumes_with_its_default(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    _trainer((1, 3)).train(1, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=False)
    del state["config"]["power_iterations"]   # as written by a trainer that did not have the field
    torch.save(state, ckpt)
    resumed = _trainer((1, 3))
    resumed.train(checkpoint=ckpt)
    whole = _trainer((1, 3))
    whole.train()
    assert all(identical(a, b) for a, b in zip(whole.models, resumed.models))
    with pytest.raises(ValueError, match="different config"):
        _trainer((1, 3), power_iterations=3).train(checkpoint=ckpt)


def test_checkpoint_of_another_config_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    _trainer((1, 3)).train(1, checkpoint=ckpt)
    with pytest.raises(ValueError, match="different config"):
        _trainer((1, 5)).train(checkpoint=ckpt)


def test_float64_copies_train_in_float64() -> None:
    trainer = _trainer((1, 3), dtype="float64")
    trainer.run_epoch()
    assert all(p.dtype == torch.float64 for p in trainer.models[1].parameters())


def test_step_schedule() -> None:
    cfg = TrainConfig(lr=0.1, milestones=(40, 80), gamma=0.1)
    assert [cfg.lr_at(e) for e in (0, 39, 40, 80, 199)] == pytest.approx([0.1, 0.1, 0.01, 1e-3, 1e-3])


@pytest.mark.parametrize(("field", "value", "message"), [
    ("ks", (1, 0), "k must be an integer"), ("optimizer", "rmsprop", "optimizer must be"),
    ("dtype", "float16", "dtype must be"), ("lr", -1.0, "lr must be"),
    ("epochs", 0, "epochs must be"),
])
def test_bad_config_raises(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_gradient_fluctuation_leaves_model_untouched() -> None:
    torch.manual_seed(0)
    net = models.resnet(8, width=2)
    before = {n: t.clone() for n, t in net.state_dict().items()}
    value = gradient_fluctuation(net, _splits()[0], batch_size=8, n_batches=3,
                                 generator=torch.Generator().manual_seed(0))
    assert value > 0 and all(torch.equal(before[n], t) for n, t in net.state_dict().items())


def test_final_accuracy_is_the_mean_of_the_last_epochs() -> None:
    acc = np.zeros((2, 3, 2))  # seeds × epochs × ks
    acc[:, -2:, :] = [[[90, 92], [90, 92]], [[94, 92], [94, 92]]]
    assert np.array_equal(final_accuracy(acc, last=2), [[90, 94], [92, 92]])  # ks × seeds


def test_predictions_and_movement_are_recorded() -> None:
    trainer = _trainer((1, 3))
    trainer.train()
    pred = trainer.predictions()
    assert pred.shape == (2, 16) and pred.dtype == torch.int64
    assert len(trainer.history.movement) == 2 and all(m > 0 for m in trainer.history.movement[0])


def test_book_protocol_keeps_the_large_learning_rate_phase() -> None:
    from pdeeos.book.experiments import registry

    for name, exp in registry().items():
        if not name.startswith("perturbed-sgd") or name.endswith("constant-lr"):
            continue
        cfg = exp.config("book")
        n_train = 60_000 if cfg["dataset"] == "fashion_mnist" else 5_085
        stages = schedule(cfg, n_train)
        assert stages[0] == (0.1 if cfg["optimizer"] == "sgd" else 1e-3, stages[0][1])
        assert stages[0][1] >= 2_500 and len(stages) >= 3, name   # two decays or more
        assert cfg["train_limit"] is None and cfg["test_limit"] is None, name


def test_every_experiment_config_makes_a_valid_protocol() -> None:
    from pdeeos.book.experiments import registry
    from pdeeos.book.experiments.perturbed_sgd import TRAIN_IMAGES, resolve, train_config

    variants = [e for name, e in registry().items()
                if name.startswith("perturbed-sgd") and not name.endswith(("constant-lr", "-long"))]
    assert len(variants) == 6
    for exp in variants:
        for scale in ("ci", "book", "gpu", "paper"):
            cfg = exp.config(scale)
            n_train = cfg["train_limit"] or TRAIN_IMAGES[cfg["dataset"]]
            assert train_config(resolve(cfg, n_train), seed=1).ks == tuple(cfg["ks"])
            if scale != "ci":
                assert cfg["ks"] == [1, 3, 5, 7, 9, 11] and len(cfg["seeds"]) >= 3
            if scale != "ci" and exp.name in ("perturbed-sgd", "perturbed-sgd-swish"):
                assert len(cfg["seeds"]) == 6   # the paper's full 6 × 6 grid


@pytest.mark.parametrize("scale", ["gpu", "paper"])
def test_scales_named_after_the_paper_keep_its_steps_at_the_large_lr(scale: str) -> None:
    """Whatever the data set's size (the offline CIFAR-10 subset, the full one), a gpu or paper run trains
    the paper's 40 epochs of its full data set at the large lr: 15,640 steps on CIFAR-10, 18,760 on
    Fashion-MNIST; the epochs follow."""
    from pdeeos.book.experiments import registry
    from pdeeos.book.experiments.perturbed_sgd import TRAIN_IMAGES, schedule

    paper_steps = {"cifar10": 15_640, "fashion_mnist": 18_760}
    named = [e for name, e in registry().items() if name.startswith("perturbed-sgd") and scale in e.configs]
    assert len(named) == {"gpu": 7, "paper": 6}[scale]   # the constant-lr control has no paper scale
    for exp in named:
        cfg = exp.config(scale)
        for n_train in (TRAIN_IMAGES[cfg["dataset"]], 50_000, 60_000, 1_000):
            stages = schedule(cfg, n_train)
            assert stages[0][1] >= paper_steps[cfg["dataset"]], (exp.name, n_train, stages)
            assert stages[0][1] < paper_steps[cfg["dataset"]] + math.ceil(n_train / cfg["batch_size"])
            assert stages[0][0] == cfg["lr"]
            # the paper's two decays follow, except in the constant-lr control, which has none by design
            if exp.name == "perturbed-sgd-constant-lr":
                assert len(stages) == 1, stages
            else:
                assert len(stages) >= 3, (exp.name, stages)


def test_the_long_swish_run_keeps_the_paper_steps_and_records_predictions_along() -> None:
    from pdeeos.book.experiments import get
    from pdeeos.book.experiments.perturbed_sgd import TRAIN_IMAGES, resolve, schedule

    cfg = get("perturbed-sgd-swish-long").config("book")
    assert schedule(cfg, TRAIN_IMAGES["cifar10"])[0] == (0.1, 15_640)
    assert len(cfg["seeds"]) >= 6 and len(cfg["ks"]) >= 3 and cfg["train_limit"] is None
    assert cfg["predict_every"] * 40 <= 1_000 and cfg["last"] == 1
    assert resolve(cfg, TRAIN_IMAGES["cifar10"])["milestones"] == [391, 393]


def test_lr_threshold_outcome_says_whether_the_runs_bracket_the_threshold() -> None:
    from pdeeos.book.experiments import lr_threshold

    lrs = [0.05, 0.025, 0.0125]
    def summary(amplified, threshold):
        return {"lrs": lrs, "amplified": amplified, "threshold_lr": threshold}
    bracketed = summary([True, False, False], 0.025)
    assert lr_threshold.measured(bracketed)
    assert lr_threshold.outcome(bracketed).endswith("0.025")
    assert not lr_threshold.measured(summary([True] * 3, float("nan")))
    assert "every tested learning rate amplifies, down to 0.0125" in lr_threshold.outcome(summary([True] * 3, float("nan")))
    assert not lr_threshold.measured(summary([False] * 3, 0.05))
    assert "at least 0.05" in lr_threshold.outcome(summary([False] * 3, 0.05))


def test_lr_threshold_keeps_lr_times_steps_and_probes_sharpness_on_a_copy() -> None:
    from pdeeos.book.experiments import lr_threshold
    from pdeeos.training import Split

    cfg = lr_threshold.CONFIGS["book"]
    assert [lr_threshold.epochs_for(lr, cfg, 2560) for lr in cfg["lrs"]] == [10, 20, 40, 79, 157, 313, 626]
    torch.manual_seed(0)
    model = lr_threshold.models.build("resnet8", activation="swish", width=2, in_channels=3)
    split = Split(torch.randn(8, 3, 32, 32), torch.arange(8) % 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    value = lr_threshold.network_sharpness(model, split, images=8, batch_size=4, weight_decay=5e-4)
    assert np.isfinite(value) and value > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # BN statistics untouched


def test_uncapped_local_cfl_trains_like_sgd_and_global_cfl_caps_a_large_rate() -> None:
    """At a small rate no region is capped (the copies equal SGD's bit for bit); at lr = 50 the
    global region's step is the stable one, far below the base rate."""
    sgd, local = _trainer((1, 3), lr=1e-3), _trainer((1, 3), lr=1e-3, optimizer="local-cfl", every=2)
    sgd.train()
    local.train()
    assert all(identical(a, b) for a, b in zip(sgd.models, local.models))
    capped = _trainer((1, 1), lr=50.0, optimizer="global-cfl", every=2)
    capped.run_epoch()
    (rate,), = {tuple(r) for r in capped.optimizers[0].step_sizes()}
    assert 0 < rate < 50.0


def test_lr_threshold_persistent_rel_l1_ignores_a_one_epoch_spike() -> None:
    from pdeeos.book.experiments import lr_threshold

    quiet = np.full(40, 1e-6)
    quiet[20] = 5e-5   # one weight passing near zero for an epoch
    assert lr_threshold.persistent(quiet) == 1e-6 < lr_threshold.AMPLIFIED < quiet.max()
    grown = np.geomspace(1e-7, 1e-2, 40)
    assert lr_threshold.persistent(grown) == pytest.approx(np.median(grown[-4:]))
    assert lr_threshold.persistent(np.array([3e-6, np.nan])) == 3e-6
    with pytest.raises(ValueError, match="no finite RelL1"):
        lr_threshold.persistent(np.array([np.nan]))
