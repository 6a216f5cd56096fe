"""The `ctxscale` command: --version, overrides, a spec on stdin, help, machine formats, columns."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import ctxscale
from ctxscale import store
from ctxscale.cli import build_parser, main
from ctxscale.spec import parse_spec
from ctxscale.identity import science_hash

from conftest import TINY_SPEC

ONE_POINT = TINY_SPEC | {"name": "one", "grid": {"context_length": [8], "data_size": [1000], "seed": [0]},
                         "training": {"batch_size": 500, "max_epochs": 2, "patience": 2}}


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"ctxscale {ctxscale.__version__}"


def test_every_argument_has_help_and_the_description_is_whole():
    parser = build_parser()
    assert parser.description.rstrip().endswith(".")

    def walk(p):
        yield p
        for action in p._actions:
            if isinstance(action.choices, dict):  # a subcommand's parsers
                for sub in dict.fromkeys(action.choices.values()):
                    yield from walk(sub)

    missing = [f"{p.prog} {a.dest}" for p in walk(parser) for a in p._actions
               if a.help is None and a.dest not in ("help", "command", "kind")]
    assert missing == []


def test_plain_imports_and_types():
    assert {"load_results", "load_spec"} <= set(dir(ctxscale))
    assert (Path(ctxscale.__file__).parent / "py.typed").is_file()


def test_overrides_and_stdin_reach_the_stored_config_and_hash(ray_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(ONE_POINT)))
    code = main(["sweep", "-", "training.lr=2e-3", "name=over", "grid.seed=[3]", "--results", str(tmp_path), "--quiet"])
    assert code == 0, capsys.readouterr().err
    (row,) = store.load_results(tmp_path, sweep="over").to_dict("records")
    config = json.loads(row["config"])
    assert config["training"]["lr"] == 0.002 and config["name"] == "over" and row["seed"] == 3
    edited = parse_spec(ONE_POINT | {"training": ONE_POINT["training"] | {"lr": 0.002}})
    assert row["config_hash"] == science_hash(edited) != science_hash(parse_spec(ONE_POINT))


@pytest.mark.parametrize("override, message", [
    ("training.lr=abc", "training.lr: Input should be a valid number"),
    ("training.lrr=1", "training.lrr: unknown key"),
    ("name.x=1", "override 'name.x=1': name is not a section"),
    ("lr", "override 'lr': expected key=value"),
])
def test_bad_overrides_get_one_line_and_write_nothing(tmp_path, capsys, override, message):
    spec = tmp_path / "one.yaml"
    spec.write_text(yaml.safe_dump(ONE_POINT))
    assert main(["sweep", str(spec), override, "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"ctxscale: error: {spec}") and message in err, err
    assert not (tmp_path / "results").exists()


def test_bad_input_is_answered_before_ray_torch_or_pandas_is_imported(tmp_path):
    spec = tmp_path / "one.yaml"
    spec.write_text(yaml.safe_dump(ONE_POINT | {"training": {"lrr": 1}}))
    code = ("import sys; from ctxscale.cli import main; "
            f"codes = [main(['sweep', {str(spec)!r}]), main(['sweep', {str(tmp_path / 'none.yaml')!r}])]; "
            "print(codes, sorted({name.split('.')[0] for name in sys.modules} & {'ray', 'torch', 'pandas'}))")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.stdout.strip() == "[2, 2] []", proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [f"ctxscale: error: {spec}: training.lrr: unknown key (did you mean `lr`?)",
                                        f"ctxscale: error: {tmp_path / 'none.yaml'}: spec file not found"]


@pytest.mark.slow
def test_quiet_sweep_prints_ctxscale_lines_only(tmp_path):
    """A new user's first sweep with --quiet, on a Ray it starts itself: no Ray notice or warning
    (token authentication, TensorBoard logger, slow callbacks), only ctxscale's lines and table."""
    spec = tmp_path / "two.yaml"  # two points packed in one trial: their reports come as a list
    spec.write_text(yaml.safe_dump(ONE_POINT | {"grid": {"context_length": [8, 16], "data_size": [1000], "seed": [0]}}))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")} | {"HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "ctxscale.cli", "sweep", str(spec), "--quiet", "--results",
                           str(tmp_path / "results")], capture_output=True, text=True, timeout=400, env=env,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == "", proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("ctxscale: running on local Ray started in this process ("), lines
    assert lines[1:3] == ["", f"sweep one: 2 ok; results in {tmp_path / 'results' / 'one'}"], lines
    assert lines[-1] == "ran 2, skipped 0 stored, 0 held by another launch" and len(lines) == 9, lines


@pytest.mark.slow
def test_a_local_ray_passes_the_environment_to_its_workers_without_a_runtime_env(tmp_path):
    """The Ray the CLI starts has no job runtime environment (with one, each actor's process starts
    through Ray's runtime-environment agent, more slowly), so the setting its trials need, NCCL's
    NVLink multicast off, must reach them from the CLI's own environment."""
    code = ("import os\n"
            "from ctxscale.sweep.session import start_ray\n"
            "start_ray(None, quiet=True)\n"
            "import ray\n"
            "print(ray.get_runtime_context().runtime_env, "
            "ray.get(ray.remote(lambda: os.environ.get('NCCL_NVLS_ENABLE')).remote()))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "NCCL_NVLS_ENABLE")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=env | {"HOME": str(tmp_path)}, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "{} 0", proc.stdout


@pytest.mark.slow
def test_a_ddp_sweep_keeps_ray_trains_info_lines_out_of_the_console(tmp_path):
    """Without --verbose, a DDP trial's Ray Train controller and workers print no INFO lines (the
    worker group's start, one line per report and rank); the trial's own line comes through."""
    spec = tmp_path / "ddp.yaml"
    spec.write_text(yaml.safe_dump(ONE_POINT | {"name": "ddp", "resources": {"num_workers": 2, "cpus_per_trial": 1}}))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")} | {"HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "ctxscale.cli", "sweep", str(spec), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=400, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert "l8_d1000_s0_" in proc.stdout and " ok: best_val_loss " in proc.stdout, console[-3000:]
    for info in ("Started training worker group", "Reporting training result", "Setting up process group"):
        assert info not in console, console[-3000:]


def test_overrides_may_follow_the_options(tmp_path, capsys):
    spec = tmp_path / "one.yaml"
    spec.write_text(yaml.safe_dump(ONE_POINT))
    assert main(["sweep", str(spec), "--results", str(tmp_path / "results"), "--quiet", "training.lr=abc"]) == 2
    assert "training.lr: Input should be a valid number" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", str(spec), "--quiet", "training.lr=1", "--bogus"])
    assert exit_.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_machine_formats_keep_prose_off_stdout(tmp_path, capsys):
    assert main(["results", str(tmp_path), "--format", "csv"]) == 0
    out = capsys.readouterr()
    assert out.out == "" and "no trials rows" in out.err
    assert main(["results", str(tmp_path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_results_hides_bulky_columns_unless_asked(synthetic_results, capsys):
    assert main(["results", str(synthetic_results), "--table", "history", "--sweep", "tiny"]) == 0
    out = capsys.readouterr()
    header = out.out.splitlines()[0].split()
    assert "val_loss" in header and "tasks" not in header and "tasks" in out.err
    assert main(["results", str(synthetic_results), "--table", "history", "--columns", "trial_id,tasks"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["trial_id", "tasks"]
    assert main(["results", str(synthetic_results), "--columns", "nope"]) == 2
    assert "--columns: no column nope" in capsys.readouterr().err


def test_history_rows_carry_their_point_and_every_table_sorts_by_numbers(synthetic_results, capsys):
    keys = ["context_length", "data_size", "seed"]
    for table, order in (("history", keys + ["epoch"]), ("trials", keys)):
        assert main(["results", str(synthetic_results), "--table", table, "--sweep", "tiny", "--format", "csv"]) == 0
        rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        coordinates = [tuple(int(row[key]) for key in order) for row in rows]
        assert coordinates == sorted(coordinates) and coordinates[0][0] == 8  # l8 before l16, as numbers
        assert len({c[:3] for c in coordinates}) == 12  # every point of the tiny sweep, by its coordinates
    assert main(["results", str(synthetic_results), "--table", "history", "--sweep", "tiny"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[:5] == ["trial_id", *keys, "config_hash"]


def test_plot_draws_learning_curves(synthetic_results, tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert main(["plot", str(synthetic_results), "--sweep", "tiny", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and str(out) in capsys.readouterr().out
    assert main(["plot", str(synthetic_results), "--sweep", "tiny", "--metric", "nope"]) == 2
