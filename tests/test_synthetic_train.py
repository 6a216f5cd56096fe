"""The synthetic models and their Ray-free training loop."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from ctxscale.data.synthetic import bayes_risk, generate, unpack_bits
from ctxscale.models.mlp import MLP, BiMLP, build_model
from ctxscale.spec import parse_spec
from ctxscale.spec.point import Point
from ctxscale.train import synthetic as loop
from ctxscale.train.synthetic import _Split, _evaluate, member_bce_losses, run_synthetic_trial


def _layer_kinds(net: torch.nn.Sequential) -> list:
    return [m.out_features if isinstance(m, torch.nn.Linear) else m.negative_slope for m in net]


def test_model_shapes():
    bits, control = torch.randn(7, 12), torch.eye(5)[torch.arange(7) % 5]
    mlp = MLP(12, 5, hidden=16, negative_slope=0.01)
    assert mlp(bits, control).shape == (7,)
    # an int h is h -> h/2 -> h, with no activation after the h/2 layer
    assert _layer_kinds(mlp.net) == [16, 0.01, 8, 16, 0.01, 1]
    bimlp = BiMLP(12, 5)
    assert bimlp.features(bits).shape == (7, 80) and bimlp(bits, control).shape == (7,)
    # the Bi-MLP's feature sees only the bits: the control vector cannot leak into it
    assert bimlp.bits_net[0].in_features == 12
    with pytest.raises(ValueError, match="unknown synthetic model kind"):
        build_model("cnn", 12, 5)


def test_hidden_widths_and_the_linear_bottleneck():
    study = MLP(12, 5, hidden=[400, 200, 400], negative_slope=0.0015)
    assert _layer_kinds(study.net) == [400, 0.0015, 200, 400, 0.0015, 1]
    assert study.net[0].in_features == 17
    # a layer is linear only when both hidden neighbours are wider; the ends are always activated
    assert _layer_kinds(MLP(12, 5, hidden=[64, 32, 16]).net) == [64, 0.0015, 32, 0.0015, 16, 0.0015, 1]
    assert _layer_kinds(MLP(12, 5, hidden=[64, 16, 48, 8, 32]).net) == [64, 0.0015, 16, 48, 0.0015, 8, 32, 0.0015, 1]
    assert _layer_kinds(MLP(12, 5, hidden=[8]).net) == [8, 0.0015, 1]


def test_bimlp_feature_is_linear_or_activated():
    linear = BiMLP(12, 5, feature_dim=6, negative_slope=0.2)
    assert _layer_kinds(linear.bits_net) == [400, 0.2, 6] and _layer_kinds(linear.head) == [200, 0.2, 1]
    activated = BiMLP(12, 5, feature_dim=6, feature_activation="leaky_relu")
    assert _layer_kinds(activated.bits_net) == [400, 0.0015, 6, 0.0015]
    # a linear feature takes negative values freely; a LeakyReLU one is squashed below zero
    torch.manual_seed(0)
    bits = torch.randint(0, 2, (256, 12)).float()
    assert linear.features(bits).min() < -0.05 and activated.features(bits).min() > -0.01
    with pytest.raises(ValueError, match="feature_activation"):
        BiMLP(12, 5, feature_activation="relu")


@pytest.mark.parametrize("encoding,values", [("binary", {0.0, 1.0}), ("signed", {-1.0, 1.0})])
def test_bits_reach_the_model_as_the_encoding_says(easy_data, encoding, values):
    split = _Split(*easy_data.val(), 8, 2, torch.device("cpu"), encoding)
    bits, control, labels = split.batch(torch.arange(40))
    assert set(bits.unique().tolist()) == values and bits.shape == (40, 8)
    # the same strings either way
    expected = torch.from_numpy(unpack_bits(easy_data.val()[0][:40], 8)).float()
    assert torch.equal(bits if encoding == "binary" else (bits + 1) / 2, expected)


def test_bce_is_safe_for_extreme_logits():
    logits = torch.tensor([1e4, -1e4, 0.0])
    labels = torch.tensor([1.0, 1.0, 1.0])
    loss = member_bce_losses(logits[None], labels)[0]  # one member
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx((0 + 1e4 + math.log(2)) / 3)


def _trial(spec_raw, context_length, data_size, seed=0):
    return Point("t", "", parse_spec(spec_raw), context_length=context_length, data_size=data_size, seed=seed)


EASY = {  # two tasks whose bits lie early: learnable from little data
    "name": "t", "experiment": "synthetic",
    "grid": {"context_length": [4, 8], "data_size": [8000]},
    "data": {"string_length": 16, "val_rows": 2000},
    "model": {"hidden": 64},
    "training": {"batch_size": 250, "max_epochs": 15, "patience": 10, "lr": 3e-3},
}


@pytest.fixture(scope="module")
def easy_data():
    return generate(8000, 2000, [[3, 1], [6, 2]], string_length=16, seed=1)


def test_loop_learns_the_xor_down_to_the_bayes_risk(easy_data):
    reports = []
    result = run_synthetic_trial(_trial(EASY, 8, 8000), lambda m, checkpoint_dir=None: reports.append(m), easy_data)
    assert result["status"] == "ok" and reports[-1] is result
    assert [r["epoch"] for r in reports] == list(range(1, len(reports) + 1))
    assert all(r["status"] == "running" for r in reports[:-1])
    # both tasks visible at context 8: the Bayes risk is 0 and the model gets close to it
    assert bayes_risk(easy_data.tasks, 8, 16) == 0
    assert result["best_val_loss"] < 0.1
    assert result["best_val_loss"] == min(r["val_loss"] for r in reports)
    assert reports[result["best_epoch"] - 1]["val_loss"] == result["best_val_loss"]


def test_hidden_bits_leave_the_bayes_risk(easy_data):
    # at context 4 the second task (bit 6) is invisible: its half of the rows stays a coin flip
    result = run_synthetic_trial(_trial(EASY, 4, 8000), lambda m, checkpoint_dir=None: None, easy_data)
    assert result["bayes_risk"] == pytest.approx(math.log(2) / 2)
    assert result["best_val_loss"] == pytest.approx(math.log(2) / 2, abs=0.03)


def test_early_stopping_stops_after_patience(easy_data):
    # at context 4 half the rows are coins the model can only overfit: the val loss stops falling
    raw = EASY | {"training": EASY["training"] | {"patience": 2}}
    result = run_synthetic_trial(_trial(raw, 4, 8000), lambda m, checkpoint_dir=None: None, easy_data)
    assert result["epoch"] == result["best_epoch"] + 2 and result["epoch"] < EASY["training"]["max_epochs"]


def test_per_task_validation_loss_of_the_best_weights(easy_data):
    # 2,000 validation rows over 2 tasks: each task has 1,000, so the task mean is the val loss
    reports = []
    result = run_synthetic_trial(_trial(EASY, 4, 8000), lambda m, checkpoint_dir=None: reports.append(m), easy_data)
    per_task = result["task_val_loss"]
    assert len(per_task) == 2 and all(isinstance(v, float) for v in per_task)
    assert sum(per_task) / 2 == pytest.approx(result["best_val_loss"], rel=1e-9)
    # task [3, 1] is visible at context 4 and learnt; task [6, 2] is not and stays near ln 2
    assert per_task[0] < 0.05 and per_task[1] == pytest.approx(math.log(2), abs=0.03)
    assert all("task_val_loss" not in r for r in reports[:-1])


def test_bfloat16_products_learn_alike_but_are_not_float32(easy_data):
    # training.precision: bfloat16 runs the products under autocast (on the CPU as on a GPU); the
    # losses and the result stay float32, and the model learns the visible task as it does in float32
    def train(precision):
        raw = EASY | {"training": EASY["training"] | {"precision": precision, "max_epochs": 4}}
        reports = []
        run_synthetic_trial(_trial(raw, 8, 8000), lambda m, checkpoint_dir=None: reports.append(m), easy_data)
        return [r["val_loss"] for r in reports]

    full, half = train("float32"), train("bfloat16")
    assert full != half  # the autocast took effect
    assert half == pytest.approx(full, abs=0.05)
    with pytest.raises(ValueError, match="precision"):
        parse_spec(EASY | {"training": EASY["training"] | {"precision": "float16"}})


@pytest.mark.parametrize("grad_clip", [0.5, None])
def test_gradient_clipping_follows_the_spec(easy_data, monkeypatch, grad_clip):
    calls = []
    real_clip = loop.clip_grad_norm_per_member

    def spy(parameters, max_norm):
        calls.append(max_norm)
        return real_clip(parameters, max_norm)

    monkeypatch.setattr(loop, "clip_grad_norm_per_member", spy)
    raw = EASY | {"training": EASY["training"] | {"grad_clip": grad_clip, "max_epochs": 2}}
    run_synthetic_trial(_trial(raw, 8, 1000), lambda m, checkpoint_dir=None: None, easy_data)
    steps = 2 * 1000 // EASY["training"]["batch_size"]
    assert calls == ([grad_clip] * steps if grad_clip else [])


def _ddp_evaluate(rank: int, world: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world)
    try:
        data = generate(100, 600, [[3, 1], [6, 2], [9, 4]], string_length=16, seed=3)
        torch.manual_seed(0)
        model = MLP(8, 3, hidden=16)
        split = _Split(*data.val(), 8, 3, torch.device("cpu"))
        (result,) = _evaluate(model, split, rank, world, torch.device("cpu"), chunk=64)
        torch.save(result, f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # leaving while the peer still talks to gloo aborts the process
    finally:
        dist.destroy_process_group()


def test_per_task_losses_are_summed_over_ddp_ranks(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_evaluate, args=(2, str(tmp_path)), nprocs=2, join=True)
    data = generate(100, 600, [[3, 1], [6, 2], [9, 4]], string_length=16, seed=3)
    torch.manual_seed(0)
    (alone,) = _evaluate(MLP(8, 3, hidden=16), _Split(*data.val(), 8, 3, torch.device("cpu")), 0, 1, torch.device("cpu"))
    for rank in (0, 1):
        loss, per_task = torch.load(tmp_path / f"rank{rank}.pt")
        assert loss == pytest.approx(alone[0], rel=1e-12) and per_task == pytest.approx(alone[1], rel=1e-12)
    assert len(alone[1]) == 3 and sum(alone[1]) / 3 == pytest.approx(alone[0], rel=1e-12)


def test_divergence_is_reported(easy_data):
    raw = EASY | {"training": EASY["training"] | {"lr": 1e30, "max_epochs": 5}}
    result = run_synthetic_trial(_trial(raw, 8, 8000), lambda m, checkpoint_dir=None: None, easy_data)
    assert result["status"] == "diverged"


def test_same_seed_same_result_and_bimlp_spectrum(easy_data):
    raw = EASY | {"model": {"kind": "bimlp", "feature_dim": 6, "bits_hidden": 32, "head_hidden": 16},
                  "training": EASY["training"] | {"max_epochs": 3}}
    first = run_synthetic_trial(_trial(raw, 8, 4000), lambda m, checkpoint_dir=None: None, easy_data)
    second = run_synthetic_trial(_trial(raw, 8, 4000), lambda m, checkpoint_dir=None: None, easy_data)
    assert first["best_val_loss"] == second["best_val_loss"]
    eigenvalues = first["feature_eigenvalues"]
    assert len(eigenvalues) == 6 and eigenvalues == sorted(eigenvalues, reverse=True)


@pytest.mark.parametrize("context_length", [0, 1, 7, 8, 13, 94, 100])
def test_a_split_unpacks_its_rows_on_the_device_as_numpy_does(context_length):
    # the rows cross to the device packed and are unpacked there: the same 0/1 matrix, big-endian
    data = generate(300, 50, tasks=[[3, 1], [20, 5]], string_length=100, seed=4)
    bits, labels, task_index = data.train()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns once a process on a tensor over read-only rows
        split = _Split(bits, labels, task_index, context_length, 2, torch.device("cpu"))
    assert split.bits.dtype == torch.uint8 and split.bits.is_contiguous()
    assert torch.equal(split.bits, torch.from_numpy(unpack_bits(bits, context_length)))
    with pytest.raises(ValueError, match="context_length 105 outside 0..104"):  # 13 bytes a row
        _Split(bits, labels, task_index, 105, 2, torch.device("cpu"))
