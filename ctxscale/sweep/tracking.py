"""A spec's optional `tracking:` section as Ray's own experiment-tracking callbacks.

`tracking.wandb` attaches `ray.air.integrations.wandb.WandbLoggerCallback` and `tracking.mlflow`
`ray.air.integrations.mlflow.MLflowLoggerCallback`: one run per Tune trial, named by its ctxscale
id, grouped by sweep (the W&B group, the MLflow experiment), with the flat grid coordinates
(`context_length`, `data_size`, `seed`) as its config. When a trial trains several packed points,
each point's metrics are logged under its own prefix (`l24/val_loss`), so the curves stay apart.

Their packages are optional extras (`pip install 'ctxscale[wandb]'`, `'ctxscale[mlflow]'`):
`check_tracking` says which is missing, in one line, before Ray is imported.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..spec.common import SpecError
from ..spec.point import Point

PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}  # tracking key -> the module it imports


def check_tracking(spec, source: str | None = None) -> None:
    """Raise SpecError naming the field when a tracking backend the spec asks for is not installed."""
    tracking = getattr(spec, "tracking", None)
    for key, module in PACKAGES.items():
        if tracking is not None and getattr(tracking, key) is not None and importlib.util.find_spec(module) is None:
            raise SpecError(f"{source or spec.name}: tracking.{key}: the {module} package is not installed "
                            f"(pip install 'ctxscale[{key}]')")


def _per_point(result: dict, group: list[Point]) -> dict:
    """A packed trial's report with each point's metrics under its context length (`l24/val_loss`)."""
    if len(group) == 1 or ("point" not in result and "points" not in result):
        return result
    from ray.tune.result import AUTO_RESULT_KEYS

    from .progress import point_reports

    length = {p.trial_id: p.context_length for p in group}
    flat = {k: v for k, v in result.items() if k in AUTO_RESULT_KEYS or k == "config"}
    for point_id, metrics in point_reports(group, result):
        flat.update({f"l{length[point_id]}/{k}": v for k, v in metrics.items()
                     if k not in flat and k not in ("point", "points")})
    return flat


def tracking_callbacks(spec, groups: dict[str, list[Point]], sweep_dir) -> list:
    """Ray's logger callbacks for the spec's `tracking:` section (none when it has none). W&B keeps
    its local files (offline runs to `wandb sync`) in `<sweep_dir>/wandb/`."""
    from .progress import trial_name

    check_tracking(spec)
    tracking = getattr(spec, "tracking", None)
    callbacks = []
    if tracking is not None and tracking.wandb is not None:
        from ray.air.integrations.wandb import WandbLoggerCallback

        class WandbPerPoint(WandbLoggerCallback):
            def log_trial_result(self, iteration, trial, result):
                super().log_trial_result(iteration, trial, _per_point(result, groups[trial_name(trial)]))

        options = tracking.wandb.model_dump(exclude_none=True, exclude={"project"})
        if "mode" in options:
            # Ray asks for an API key on the driver unless $WANDB_MODE says offline or disabled
            os.environ["WANDB_MODE"] = options["mode"]
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        callbacks.append(WandbPerPoint(project=tracking.wandb.project, group=spec.name, dir=str(sweep_dir), **options))
    if tracking is not None and tracking.mlflow is not None:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        class MLflowPerPoint(MLflowLoggerCallback):
            def log_trial_result(self, iteration, trial, result):
                super().log_trial_result(iteration, trial, _per_point(result, groups[trial_name(trial)]))

        callbacks.append(MLflowPerPoint(tracking_uri=tracking.mlflow.tracking_uri,
                                        experiment_name=tracking.mlflow.experiment_name or spec.name,
                                        tags={"sweep": spec.name}))
    return callbacks
