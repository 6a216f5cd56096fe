"""Training loops, one per experiment. None of them imports Ray: each takes a trial description
and a `report(metrics, checkpoint_dir=None)` callable, so the same loop runs alone, in a plain
Ray Tune trial or under Ray Train DDP."""
from __future__ import annotations

from typing import Any, Callable, Optional


def run_trial(trial: dict, report: Callable[..., None], *, data: Any = None,
              resume_dir: Optional[str] = None) -> dict:
    """Run one trial of any experiment; `data` is the shared data set where the experiment has one."""
    experiment = trial["spec"]["experiment"]
    if experiment == "synthetic":
        from .synthetic import run_synthetic_trial
        return run_synthetic_trial(trial, report, data)
    if experiment == "gpt":
        from .gpt import run_gpt_trial
        return run_gpt_trial(trial, report, resume_dir=resume_dir)
    raise ValueError(f"no training loop for experiment {experiment!r}")
