"""Packing: several synthetic grid points trained as one stacked model give the numbers each
gives alone (the stacked model against the unpacked one, and a sweep with pack 1 against pack auto)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ctxscale import store
from ctxscale.experiments.synthetic import pack_synthetic, synthetic_group_name
from ctxscale.models.mlp import build_model
from ctxscale.spec import SpecError, parse_spec
from ctxscale.experiments.grid import expand_grid
from ctxscale.sweep.prepare import prepare_data
from ctxscale.sweep.runner import run_sweep
from ctxscale.train.packed import StackedModel, _fused_bias_leaky_relu, clip_grad_norm_per_member, keep_members

from conftest import TINY_SPEC

NUM_TASKS = 5


def _member(kind: str, context_length: int) -> torch.nn.Module:
    torch.manual_seed(3)
    return build_model(kind, context_length, NUM_TASKS, hidden=16, bits_hidden=12, feature_dim=4, head_hidden=8)


@pytest.mark.parametrize("kind", ["mlp", "bimlp"])
def test_a_member_computes_what_its_unpacked_model_computes(kind):
    lengths = [4, 7, 10]
    stacked = StackedModel([_member(kind, length) for length in lengths], lengths)
    alone = [_member(kind, length) for length in lengths]
    # signed bits: the padded bits a shorter member must not see are +-1 in the shared batch
    bits = torch.randint(0, 2, (32, 10)).float() * 2 - 1
    control = torch.eye(NUM_TASKS)[torch.arange(32) % NUM_TASKS]
    labels = torch.randint(0, 2, (32,)).float()

    logits = stacked(bits, control)  # (M, B)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    bce(logits, labels.expand_as(logits), reduction="none").mean(dim=1).sum().backward()
    for row, (length, model) in enumerate(zip(lengths, alone)):
        own = model(bits[:, :length], control)
        torch.testing.assert_close(logits[row], own)
        bce(own, labels).backward()
        grads = stacked.unstacked([param.grad[row] for param in stacked.stacked], length)
        for name, param in model.named_parameters():
            torch.testing.assert_close(grads[name], param.grad, msg=f"{kind} l={length} {name}")
    # the padding receives no gradient, so it stays zero: columns beyond a member's bits, and the
    # output layer's unused second row
    bits_weight = dict(zip(stacked.names, stacked.stacked))[stacked.bits_weight_name].grad
    assert bits_weight[0, :, 4:10].abs().max() == 0 and bits_weight[1, :, 7:10].abs().max() == 0
    for name in stacked.output_names:
        assert dict(zip(stacked.names, stacked.stacked))[name].grad[:, 1:].abs().max() == 0


def test_gradients_are_clipped_per_member():
    models = [_member("mlp", 6) for _ in range(2)]
    stacked = StackedModel(models, [6, 6])
    for param in stacked.parameters():
        param.grad = torch.ones_like(param)
    stacked.stacked[0].grad[1].mul_(1e-4)  # member 1's norm is dominated by the other parameters
    norms = clip_grad_norm_per_member(stacked.parameters(), max_norm=1.0)
    for row in range(2):
        member_grads = torch.cat([param.grad[row].flatten() for param in stacked.parameters()])
        expected = min(1.0, 1.0 / (norms[row].item() + 1e-6)) * norms[row].item()
        assert torch.linalg.vector_norm(member_grads).item() == pytest.approx(expected, rel=1e-5)
    assert norms[0] > norms[1]


def test_groups_share_data_size_and_seed_and_respect_pack():
    spec = parse_spec(TINY_SPEC)
    groups = pack_synthetic(expand_grid(spec))
    assert len(groups) == 4 and all(len(group) == 3 for group in groups)
    assert all(len({(p.data_size, p.seed) for p in group}) == 1 for group in groups)
    # the largest groups first, so that Tune starts the longest trials first
    assert [group[0].data_size for group in groups] == [4000, 4000, 2000, 2000]
    assert synthetic_group_name(groups[-1]).startswith("d2000_s")
    assert [p.context_length for p in groups[0]] == [8, 16, 24]
    two = pack_synthetic(expand_grid(parse_spec(TINY_SPEC | {"resources": {"pack": 2}})))
    assert sorted(len(group) for group in two) == [1, 1, 1, 1, 2, 2, 2, 2]
    assert all(len(group) == 1 for group in pack_synthetic(expand_grid(parse_spec(TINY_SPEC | {"resources": {"pack": 1}}))))


@pytest.mark.parametrize("pack", ["two", 0, 2.5, True])
def test_a_bad_pack_is_one_line_naming_the_field(pack):
    with pytest.raises(SpecError) as err:
        parse_spec(TINY_SPEC | {"resources": {"pack": pack}}, source="spec.yaml")
    assert str(err.value) == f"spec.yaml: resources.pack: must be 'auto' or an integer >= 1, got {pack!r}"


EQUIVALENCE = TINY_SPEC | {
    "grid": {"context_length": [8, 16, 24], "data_size": [2000, 4000], "seed": [0]},
    "data": TINY_SPEC["data"] | {"encoding": "signed"},
    "training": {"batch_size": 250, "max_epochs": 6, "patience": 2, "grad_clip": 0.5},
}


@pytest.mark.slow
def test_packed_and_unpacked_sweeps_give_the_same_numbers(tmp_path, ray_cluster):
    tables = {}
    for pack in (1, "auto"):
        spec = parse_spec(EQUIVALENCE | {"name": f"pack-{pack}", "resources": {"pack": pack}})
        run_sweep(spec, tmp_path, data=prepare_data(spec), verbose=0)
        trials = store.load_results(tmp_path, sweep=spec.name).set_index("trial_id").sort_index()
        assert set(trials["status"]) == {"ok"} and len(trials) == 6
        tables[pack] = trials
    unpacked, packed = tables[1], tables["auto"]
    assert list(unpacked.index) == list(packed.index)  # the same trial ids
    assert list(unpacked["best_epoch"]) == list(packed["best_epoch"])
    assert (packed["best_val_loss"] / unpacked["best_val_loss"] - 1).abs().max() <= 1e-4
    history = store.load_results(tmp_path, "history", sweep="pack-auto")
    assert history.groupby("trial_id").size().to_dict() == packed["epoch"].to_dict()


@pytest.mark.slow
def test_a_partly_stored_group_trains_only_its_missing_points(tmp_path, ray_cluster):
    raw = EQUIVALENCE | {"name": "partial", "grid": {"context_length": [8], "data_size": [2000], "seed": [0]},
                         "training": EQUIVALENCE["training"] | {"max_epochs": 2}}
    spec = parse_spec(raw)
    run_sweep(spec, tmp_path, data=prepare_data(spec), verbose=0)
    grown = parse_spec(raw | {"grid": raw["grid"] | {"context_length": [8, 16, 24]}})
    outcome = run_sweep(grown, tmp_path, data=prepare_data(grown), verbose=0)
    assert len(outcome.skipped) == 1 and len(outcome.ran) == 2
    trials = store.load_results(tmp_path, sweep="partial")
    assert sorted(trials["context_length"]) == [8, 16, 24] and set(trials["status"]) == {"ok"}


def test_a_process_moves_the_data_to_the_device_once():
    """Groups that one worker process runs after each other reuse the rows it already holds."""
    from ctxscale.train import synthetic as loop

    spec = parse_spec(TINY_SPEC)
    data = prepare_data(spec)
    groups = pack_synthetic(expand_grid(spec))  # largest data size first
    first = loop.setup_synthetic(groups[0], data)
    later = loop.setup_synthetic(groups[-1], data)
    assert len(first.train) == 4000 and len(later.train) == 2000
    # the later, smaller group's rows are a view of what the first one moved to the device
    assert later.train.bits.data_ptr() == first.train.bits.data_ptr()
    assert later.val.bits.data_ptr() == first.val.bits.data_ptr()
    assert torch.equal(later.train.labels, first.train.labels[:2000])


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("clang++") is None,
                    reason="torch.compile's CPU backend needs a C++ compiler")
def test_fused_bias_leaky_relu_equals_the_eager_layers():
    """The GPU's fused bias + LeakyReLU (compiled; here on the CPU backend) gives the eager
    kernels' values and gradients, for stacks of different sizes (shapes are dynamic)."""
    for members, rows in ((3, 50), (1, 70)):
        x = torch.randn(members, rows, 40, dtype=torch.float64, requires_grad=True)
        bias = torch.randn(members, 40, dtype=torch.float64, requires_grad=True)
        fused = _fused_bias_leaky_relu()(x, bias, 0.01)
        fused.square().sum().backward()
        fused_grads = x.grad.clone(), bias.grad.clone()
        x.grad = bias.grad = None
        eager = F.leaky_relu(x + bias.unsqueeze(1), 0.01)
        eager.square().sum().backward()
        torch.testing.assert_close(fused, eager)
        torch.testing.assert_close(fused_grads[0], x.grad)
        torch.testing.assert_close(fused_grads[1], bias.grad)


def test_the_bits_layer_narrows_when_the_longest_member_stops():
    """keep_members drops the longest member: the stack narrows to the longest one left, and the
    members left compute what they computed before, with their AdamW moments narrowed alike."""
    lengths = [4, 7, 10]
    stacked = StackedModel([_member("mlp", length) for length in lengths], lengths)
    make = lambda params: torch.optim.AdamW(params, lr=1e-2)  # noqa: E731
    optimizer = make(stacked.parameters())
    bits = torch.randint(0, 2, (32, 10)).float()
    control = torch.eye(NUM_TASKS)[torch.arange(32) % NUM_TASKS]
    stacked(bits, control).square().sum().backward()
    optimizer.step()
    before = stacked(bits, control).detach()
    best = stacked.member_parameters(1)  # copied at width 10

    optimizer = keep_members(stacked, optimizer, [0, 1], make)
    assert stacked.width == 7 and stacked.context_lengths == [4, 7]
    bits_weight = dict(zip(stacked.names, stacked.stacked))[stacked.bits_weight_name]
    assert bits_weight.shape[-1] == 7 + NUM_TASKS
    assert optimizer.state[bits_weight]["exp_avg"].shape == bits_weight.shape
    torch.testing.assert_close(stacked(bits, control), before[:2])  # the 10-bit batch is cut to 7
    # parameters copied before the narrowing still unstack to the member's own model
    alone = _member("mlp", 7)
    alone.load_state_dict(stacked.unstacked(best, 7))
    torch.testing.assert_close(alone(bits[:, :7], control), before[1])


def _fused_eval_case(signed: bool):
    """A 3-member stack of the study's MLP shape (widths not multiples of the kernel's slices) and
    rows of a split: what the fused validation kernel and the eager stack both evaluate."""
    lengths = [4, 7, 10]
    members = []
    for length in lengths:
        torch.manual_seed(length)
        members.append(build_model("mlp", length, NUM_TASKS, hidden=[40, 20, 40], negative_slope=0.1))
    stacked = StackedModel(members, lengths)
    generator = torch.Generator().manual_seed(0)
    bits = torch.randint(0, 2, (70, 12), dtype=torch.uint8, generator=generator)  # wider than the stack
    task = torch.randint(0, NUM_TASKS, (70,), generator=generator)
    labels = torch.randint(0, 2, (70,), generator=generator).float()
    rows = torch.arange(1, 70, 2)  # one DDP rank's rows
    inputs = bits[rows, :10].float() * (2 if signed else 1) - (1 if signed else 0)
    return stacked, bits, task, labels, rows, inputs, F.one_hot(task[rows], NUM_TASKS).float()


def fused_kernel_against_eager() -> None:
    """Triton's CPU interpreter (TRITON_INTERPRET=1 when Triton is imported) runs the fused kernel
    in float32: its losses are the eager stack's, for 0/1 and -1/+1 bits."""
    from ctxscale.train import fused_eval

    for signed in (False, True):
        stacked, bits, task, labels, rows, inputs, control = _fused_eval_case(signed)
        assert fused_eval.choose_pass(stacked, torch.device("cpu"), bf16=False) == "fused"
        fused = fused_eval.member_losses(stacked, bits, task, labels, rows, signed, dtype=torch.float32)
        with torch.no_grad():
            logits = stacked(inputs, control)
        eager = F.binary_cross_entropy_with_logits(logits, labels[rows].expand_as(logits), reduction="none")
        torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("signed", [False, True])
def test_the_lean_validation_pass_computes_the_eager_losses(signed, monkeypatch):
    """Rows task by task with the control as a bias, the bottleneck composed with its neighbour:
    in float32 the eager stack's losses up to rounding, each in its row's place."""
    from ctxscale.train import fused_eval

    stacked, bits, task, labels, rows, inputs, control = _fused_eval_case(signed)
    monkeypatch.setenv("CTXSCALE_EVAL_PASS", "lean")
    assert fused_eval.choose_pass(stacked, torch.device("cpu"), bf16=False) == "lean"
    lean = fused_eval.lean_member_losses(stacked, bits, task, labels, rows, signed, chunk=4, dtype=torch.float32)
    with torch.no_grad():
        logits = stacked(inputs, control)
    eager = F.binary_cross_entropy_with_logits(logits, labels[rows].expand_as(logits), reduction="none")
    torch.testing.assert_close(lean, eager, rtol=1e-5, atol=1e-6)
    monkeypatch.setenv("CTXSCALE_EVAL_PASS", "eager")
    assert fused_eval.choose_pass(stacked, torch.device("cpu"), bf16=False) == "eager"
    monkeypatch.delenv("CTXSCALE_EVAL_PASS")  # the default on a CPU: layer by layer, as before
    assert fused_eval.choose_pass(stacked, torch.device("cpu"), bf16=True) == "eager"


def test_the_fused_validation_kernel_computes_the_eager_losses():
    """The fused kernel's logic (indexing, masks, the one-hot as a gathered row, slices of the
    hidden layers) against the eager stack, on the CPU. Triton chooses its interpreter when it is
    imported, so this runs in a fresh process."""
    pytest.importorskip("triton")
    tests = Path(__file__).parent
    code = f"import sys; sys.path.insert(0, {str(tests)!r}); import test_packing; test_packing.fused_kernel_against_eager()"
    proc = subprocess.run([sys.executable, "-c", code], env=os.environ | {"TRITON_INTERPRET": "1", "CTXSCALE_EVAL_PASS": "fused"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_fused_validation_kernel_in_bfloat16_on_a_gpu():
    """On a GPU in bfloat16 the kernel's losses are the autocast stack's up to bfloat16 rounding,
    and their mean is the same to well under the differences early stopping compares."""
    from ctxscale.train import fused_eval

    stacked, bits, task, labels, rows, inputs, control = _fused_eval_case(signed=False)
    stacked, bits, task, labels, rows, inputs, control = (
        x.cuda() for x in (stacked, bits, task, labels, rows, inputs, control))
    assert fused_eval.choose_pass(stacked, torch.device("cuda"), bf16=True) == "fused"
    fused = fused_eval.member_losses(stacked, bits, task, labels, rows)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        logits = stacked(inputs, control).float()
    eager = F.binary_cross_entropy_with_logits(logits, labels[rows].expand_as(logits), reduction="none")
    torch.testing.assert_close(fused, eager, rtol=0.05, atol=0.02)
    assert (fused.mean(dim=1) - eager.mean(dim=1)).abs().max() < 5e-3
