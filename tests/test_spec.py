"""Spec validation: every bad input gives one message naming the field, exit 2, nothing written."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ctxscale.cli import main
from ctxscale.spec import SpecError, load_spec, parse_spec

GOOD = {
    "name": "ok",
    "experiment": "synthetic",
    "grid": {"context_length": [8, 16], "data_size": [1000], "seed": [0]},
    "data": {"string_length": 32, "val_rows": 500},
}


def _with(path: str, value):
    spec = yaml.safe_load(yaml.safe_dump(GOOD))
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return spec


BAD = [
    (_with("colour", "red"), "colour: unknown key"),
    (_with("training.learning_rate", 0.1), "training.learning_rate: unknown key"),
    (_with("grid.context_length", "eight"), "grid.context_length"),
    (_with("grid.context_length", []), "grid.context_length: context_length must list at least one value"),
    (_with("grid.data_size", [1000, 1000]), "grid.data_size: data_size has duplicate values [1000]"),
    (_with("grid.seed", [1, 1]), "grid.seed: seed has duplicate values"),
    (_with("grid.data_size", [0, 10]), "grid.data_size: data_size values must be positive"),
    (_with("grid.context_length", [8, 40]), "grid.context_length [40] exceed data.string_length = 32"),
    (_with("data.train_rows", 500), "grid.data_size 1000 exceeds data.train_rows = 500"),
    (_with("data.string_length", 10) | {"grid": {"context_length": [4, 8], "data_size": [1000]}}, "cannot be drawn from 2**10 strings"),
    (_with("experiment", "vision"), "experiment: unknown experiment 'vision'"),
    (_with("training.batch_size", -5), "training.batch_size"),
    (_with("resources.gpus_per_trial", 0.5) | {"resources": {"num_workers": 2, "gpus_per_trial": 0.5}},
     "gpus_per_trial must be 0 or 1 when num_workers >= 1"),
    (_with("data.tasks", "/no/such/tasks.json"), "task list file '/no/such/tasks.json' does not exist"),
    (_with("data.encoding", "gray"), "data.encoding: Input should be 'binary' or 'signed'"),
    (_with("model.hidden", 1), "model.hidden: an int width h means [h, h // 2, h] and needs h >= 2, got 1"),
    (_with("model.hidden", []), "model.hidden: must be an int h or a non-empty list of integer widths >= 1"),
    (_with("model.hidden", [400, 0, 400]), "model.hidden: must be an int h or a non-empty list"),
    (_with("model.hidden", "wide"), "model.hidden: must be an int h or a non-empty list"),
    (_with("model.negative_slope", -0.1), "model.negative_slope"),
    (_with("model.feature_activation", "relu"), "model.feature_activation: Input should be 'none' or 'leaky_relu'"),
    (_with("training.grad_clip", 0), "training.grad_clip: Input should be greater than 0"),
    ({k: v for k, v in GOOD.items() if k != "grid"}, "grid: Field required"),
    ({k: v for k, v in GOOD.items() if k != "experiment"}, "experiment: required"),
]


@pytest.mark.parametrize("raw,message", BAD, ids=[m for _, m in BAD])
def test_bad_spec_names_the_field(raw, message):
    with pytest.raises(SpecError) as err:
        parse_spec(raw, "x.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("x.yaml: ")


def test_good_spec_loads_and_resolves_defaults(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    spec = load_spec(path)
    assert spec.train_rows == 1000 and spec.training.batch_size == 10_000 and spec.grid.size == 2


@pytest.mark.parametrize("text,message", [
    ("name: [unclosed", "not valid YAML"),
    ("- just\n- a list\n", "must be a YAML mapping"),
    ("", "must be a YAML mapping"),
])
def test_unparseable_files(tmp_path, text, message):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=message):
        load_spec(path)


def test_missing_file():
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec("/no/such/spec.yaml")


def test_cli_rejects_bad_spec_before_anything_is_written(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_with("grid.context_length", [8, 99])))
    results = tmp_path / "results"
    assert main(["sweep", str(path), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "grid.context_length" in err
    assert not results.exists()


def test_cli_error_is_one_line_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nexperiment: synthetic\ngrid: {context_length: [8], data_size: [10], seed: [0]}\nextra: 1\n")
    # a fresh process of its own: no Ray of this test session (or the machine's RAY_ADDRESS) reaches it
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-m", "ctxscale.cli", "sweep", str(path), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"ctxscale: error: {path}: extra: unknown key"
    assert "Traceback" not in proc.stderr and not (tmp_path / "r").exists()


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.glob("sweeps/*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_loads(path):
    spec = load_spec(path)
    raw = yaml.safe_load(path.read_text())
    assert spec.name == path.stem  # the results folder is named after the file
    for axis, values in raw["grid"].items():  # the grid is what the file says, in its order
        assert getattr(spec.grid, axis) == values, axis
    assert parse_spec(spec.model_dump(mode="json")) == spec  # what is stored with the results loads back


def test_cli_data_commands(tmp_path, capsys):
    assert main(["data", "synthetic", "--rows", "600", "--out", str(tmp_path / "syn"), "--tasks", "study50"]) == 0
    assert "rows=600" in capsys.readouterr().out
    assert main(["data", "corpus", "--source", str(tmp_path / "missing"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ctxscale: error:") and "missing" in err and not (tmp_path / "c").exists()


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.glob("sweeps/*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_has_a_cpu_smoke_version(path):
    from ctxscale.spec.smoke import smoke

    spec = load_spec(path)
    small = smoke(spec)
    assert small.name == f"{spec.name}-smoke" and small.experiment == spec.experiment
    assert set(small.grid.context_length) <= set(spec.grid.context_length) and len(small.grid.context_length) <= 3
    if spec.experiment != "measure":
        assert small.grid.data_size == sorted(spec.grid.data_size)[:2] and len(small.grid.seed) == 1
        assert small.training.device == "cpu" and small.resources.num_workers == 0
    assert small.resources.gpus_per_trial == 0


def test_a_task_list_with_a_constant_task_is_refused_naming_it(tmp_path, capsys):
    tasks = tmp_path / "tasks.json"
    tasks.write_text("[[3, 1], [5, 2], [7, 7], [9, 4]]")
    with pytest.raises(SpecError) as err:
        parse_spec(_with("data.tasks", str(tasks)), "x.yaml")
    assert "entry 2 [7, 7] uses one bit twice (l == a)" in str(err.value)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_with("data.tasks", str(tasks))))
    assert main(["sweep", str(path), "--results", str(tmp_path / "r")]) == 2
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and "entry 2 [7, 7]" in err_text and not (tmp_path / "r").exists()


def test_new_spec_defaults_are_the_study_settings():
    spec = parse_spec(GOOD)
    assert spec.data.encoding == "binary"
    assert spec.model.hidden == [400, 200, 400] and spec.model.negative_slope == 0.0015
    assert spec.model.feature_activation == "none"
    assert spec.training.weight_decay == 8e-4 and spec.training.grad_clip == 1.0


def test_earlier_choices_stay_expressible():
    raw = _with("model.hidden", 128)
    raw["data"]["encoding"] = "signed"
    raw["model"] |= {"negative_slope": 0.01, "feature_activation": "leaky_relu"}
    raw["training"] = {"grad_clip": None, "weight_decay": 1e-4}
    spec = parse_spec(raw)
    assert spec.model.hidden == 128 and spec.training.grad_clip is None and spec.data.encoding == "signed"


def _preparations(path: Path) -> list:
    """The `ctxscale data corpus ...` commands a spec's header tells the user to run, parsed by the CLI."""
    from ctxscale.cli import build_parser

    commands = re.findall(r"^#\s+ctxscale (data corpus .*)$", path.read_text(), flags=re.M)
    return [build_parser().parse_args(shlex.split(c)) for c in commands]


def test_shipped_specs_that_share_a_corpus_folder_prepare_it_the_same_way():
    by_folder: dict = {}
    for path in sorted(Path(__file__).parent.parent.glob("sweeps/*.yaml")):
        spec = load_spec(path)
        folder = getattr(getattr(spec, "data", None), "corpus", None) or getattr(spec, "corpus", None)
        if folder in (None, "local"):
            continue
        preparations = _preparations(path)
        assert [p.out for p in preparations] == [folder], f"{path.name}: says how to prepare {folder} once"
        settings = {k: v for k, v in vars(preparations[0]).items() if k != "func"}
        by_folder.setdefault(folder, {})[path.name] = settings
    assert by_folder, "no shipped spec names a corpus folder"
    for folder, specs in by_folder.items():
        first = next(iter(specs.values()))
        assert all(s == first for s in specs.values()), f"{folder} is prepared differently by {sorted(specs)}"
