"""Security basics: specs load with a safe YAML loader, checkpoints load with weights_only (a
damaged or hostile checkpoint is one line and a fresh start), remote model code stays off unless
a spec turns it on, and a Ray started by ctxscale serves its dashboard on 127.0.0.1 only."""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch

from ctxscale.spec import load_spec, parse_spec
from ctxscale.spec.common import SpecError
from ctxscale.train.gpt import CHECKPOINT_FILE, train_gpt

GPT = {"name": "g", "experiment": "gpt", "grid": {"context_length": [16], "data_size": [4096], "seed": [0]},
       "data": {"corpus": "unused"}, "model": {"preset": "tiny"},
       "training": {"tokens_per_step": 256, "micro_batch_tokens": 256, "warmup_steps": 1, "max_steps": 6,
                    "eval_every": 3, "eval_tokens": 256, "patience": 5, "compile": False, "device": "cpu"}}


def test_a_spec_with_a_python_tag_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)
    assert not marker.exists()


def test_remote_model_code_is_off_unless_the_spec_turns_it_on():
    base = {"name": "m", "experiment": "measure", "model": "gpt2", "corpus": "local",
            "grid": {"context_length": [8]}}
    assert parse_spec(base).inference.trust_remote_code is False
    assert parse_spec(base | {"inference": {"trust_remote_code": True}}).inference.trust_remote_code is True


def _train(keep_in, resume_dir=None):
    tokens = np.random.default_rng(0).integers(0, 50257, size=20_000).astype(np.uint16)
    reports, kept = [], []

    def report(metrics, checkpoint_dir=None):
        reports.append(metrics)
        if checkpoint_dir and metrics["step"] == 3:
            kept.append(shutil.copytree(checkpoint_dir, keep_in / f"step{metrics['step']}"))  # the loop deletes its own

    train_gpt(parse_spec(GPT), 16, 0, tokens[:16_000], tokens[16_000:], report, resume_dir=resume_dir)
    return reports, kept


class Hostile:
    def __reduce__(self):
        return (print, ("a checkpoint ran code",))


def test_a_gpt_trial_resumes_from_its_checkpoint_and_a_damaged_one_starts_fresh(tmp_path, capfd):
    first, kept = _train(tmp_path)
    assert [r["step"] for r in first] == [3, 6]
    resumed, _ = _train(tmp_path / "again", str(kept[0]))
    assert [r["step"] for r in resumed] == [6]  # the step count continues from the checkpoint
    assert resumed[-1]["tokens_seen"] == first[-1]["tokens_seen"]

    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 not a whole checkpoint")
    (tmp_path / "hostile").mkdir()
    with open(tmp_path / "hostile" / CHECKPOINT_FILE, "wb") as handle:
        torch.save({"model": Hostile()}, handle)
    for folder in ("damaged", "hostile"):
        capfd.readouterr()
        fresh, _ = _train(tmp_path / f"{folder}-kept", str(tmp_path / folder))
        assert [r["step"] for r in fresh] == [3, 6]  # started from step 0
        err = capfd.readouterr()
        lines = [line for line in err.err.splitlines() if "damaged checkpoint" in line]
        assert len(lines) == 1 and CHECKPOINT_FILE in lines[0] and "the trial starts fresh" in lines[0]
        assert "a checkpoint ran code" not in err.out + err.err
    with pytest.raises(pickle.UnpicklingError):  # what stopped it: weights_only refuses the object
        torch.load(tmp_path / "hostile" / CHECKPOINT_FILE, weights_only=True)
