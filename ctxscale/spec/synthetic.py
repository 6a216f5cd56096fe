"""Spec of the synthetic experiment (experiment 1 of the study): data, model and training sections."""
from __future__ import annotations

import json
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from .common import Grid, Section, SweepSpec
from .search import Search

STUDY_TASKS = "study50"  # the 50 (l, a) tasks of the reference study, shipped as package data


class SyntheticData(Section):
    tasks: str = Field(
        default=STUDY_TASKS,
        description="JSON file with a list of [l, a] tasks (label = bit[a-1] XOR bit[l-1]); "
        "'study50' is the study's list, shipped with ctxscale. A task with l == a is refused.",
    )
    string_length: int = Field(default=100, ge=2, le=4096, description="Bits per random string (L_max).")
    train_rows: Optional[int] = Field(
        default=None, gt=0, description="Rows in the generated training pool (default: the largest data_size)."
    )
    val_rows: int = Field(default=50_000, gt=0, description="Validation rows, disjoint from the training pool.")
    seed: int = Field(default=0, description="Seed of the generated set (trial seeds vary the model, not the data).")
    encoding: Literal["binary", "signed"] = Field(
        default="binary",
        description="How a model sees a bit: 'binary' as 0/1 (the study), 'signed' as -1/+1 (a zero bit then "
        "also drives the first layer). Changes only the model's input, not the generated set.",
    )


class SyntheticModel(Section):
    kind: Literal["mlp", "bimlp"] = Field(default="mlp", description="'mlp' or 'bimlp' (bits and control apart).")
    hidden: Union[int, list[int]] = Field(
        default=[400, 200, 400],
        description="MLP hidden widths, input side first: [400, 200, 400] is the study's. An int h means "
        "[h, h // 2, h]. A hidden layer narrower than both hidden layers beside it is a linear bottleneck, "
        "with no activation after it (the study's 200 layer): the two maps around it act as one "
        "low-rank linear map. Every other hidden layer is followed by LeakyReLU.",
    )
    negative_slope: float = Field(
        default=0.0015, ge=0, lt=1,
        description="LeakyReLU slope for negative inputs, in every activation of both models "
        "(the study: 0.0015; torch's default: 0.01).",
    )
    bits_hidden: int = Field(default=400, ge=1, description="Bi-MLP: width of the bits branch.")
    feature_dim: int = Field(default=80, ge=1, description="Bi-MLP: dimension of the bits feature.")
    feature_activation: Literal["none", "leaky_relu"] = Field(
        default="none",
        description="Bi-MLP: what follows the bits feature layer: 'none' (a linear feature, the study's) or "
        "'leaky_relu'. The feature's PCA spectrum is the intrinsic-dimension probe.",
    )
    head_hidden: int = Field(default=200, ge=1, description="Bi-MLP: width of the head over feature + control.")

    @field_validator("hidden", mode="before")
    @classmethod
    def _usable_widths(cls, hidden):
        # checked before pydantic's union so that a bad value gives one message, not one per type
        def is_int(value):
            return isinstance(value, int) and not isinstance(value, bool)

        if is_int(hidden):
            if hidden < 2:
                raise ValueError(f"an int width h means [h, h // 2, h] and needs h >= 2, got {hidden}")
        elif not (isinstance(hidden, list) and hidden and all(is_int(w) and w >= 1 for w in hidden)):
            raise ValueError(f"must be an int h or a non-empty list of integer widths >= 1, got {hidden!r}")
        return hidden


class SyntheticTraining(Section):
    lr: float = Field(default=1e-3, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(default=8e-4, ge=0, description="AdamW weight decay (the study's code: 8e-4).")
    grad_clip: Optional[float] = Field(
        default=1.0, gt=0, description="Clip the gradient's global norm to this value (the study: 1.0); null: no clipping."
    )
    batch_size: int = Field(default=10_000, gt=0, description="Rows per optimizer step.")
    max_epochs: int = Field(default=200, gt=0, description="Upper bound on passes over the training rows.")
    patience: int = Field(default=25, gt=0, description="Stop after this many epochs without a better val loss.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="'auto' takes CUDA when the trial was given a GPU (resources.gpus_per_trial > 0); a trial given none sees no GPU.")
    tf32: bool = Field(
        default=False,
        description="On CUDA, multiply float32 matrices on TF32 tensor cores (inputs rounded to a 10-bit "
        "mantissa, float32 sums): about 2.5x faster on an H200; false keeps full float32, as the study trained.",
    )
    precision: Literal["float32", "bfloat16"] = Field(
        default="float32",
        description="bfloat16: every layer's product (training and validation) under bfloat16 autocast, on "
        "any device; weights, AdamW state, losses and their sums stay float32. Faster on a GPU than tf32 "
        "(a validation pass over 2M rows is most of a small data size's time), at a 7-bit mantissa.",
    )


def load_task_list(tasks: str) -> list[tuple[int, int]]:
    """Read a task list ([[l, a], ...]); 'study50' names the packaged list of the study.

    Refuses a task with l == a (a constant label), naming its entry.
    """
    if tasks == STUDY_TASKS:
        text = importlib_resources.files("ctxscale.data").joinpath("tasks_study50.json").read_text()
        source = "the packaged study50 task list"
    else:
        path = Path(tasks)
        if not path.is_file():
            raise ValueError(f"task list file {tasks!r} does not exist")
        text, source = path.read_text(), f"task list {tasks!r}"
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source} is not valid JSON ({err})") from None
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{source} must be a non-empty JSON list of [l, a] pairs")
    out = []
    for i, pair in enumerate(raw):
        if (
            not isinstance(pair, list) or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair)
        ):
            raise ValueError(f"{source}: entry {i} must be [l, a] with positive integers, got {pair!r}")
        if pair[0] == pair[1]:
            # bit XOR itself is always 0: such a task teaches nothing about context length
            raise ValueError(f"{source}: entry {i} {pair!r} uses one bit twice (l == a), so its label is always 0")
        out.append((pair[0], pair[1]))
    return out


class SyntheticSpec(SweepSpec):
    experiment: Literal["synthetic"]
    grid: Grid
    data: SyntheticData = SyntheticData()
    model: SyntheticModel = SyntheticModel()
    training: SyntheticTraining = SyntheticTraining()
    search: Search = Search()  # which points run; not in the config hash

    @model_validator(mode="after")
    def _grid_fits_data(self):
        length = self.data.string_length
        too_long = [c for c in self.grid.context_length if c > length]
        if too_long:
            raise ValueError(f"grid.context_length {too_long} exceed data.string_length = {length}")
        largest = max(self.grid.data_size)
        if self.data.train_rows is not None and self.data.train_rows < largest:
            raise ValueError(
                f"grid.data_size {largest} exceeds data.train_rows = {self.data.train_rows}: "
                "the data cannot supply it"
            )
        if length < 64 and self.train_rows + self.data.val_rows > 2**length:
            raise ValueError(
                f"grid.data_size: {self.train_rows} + {self.data.val_rows} distinct rows cannot be drawn "
                f"from 2**{length} strings"
            )
        load_task_list(self.data.tasks)  # raises with the file named
        return self

    @property
    def train_rows(self) -> int:
        return self.data.train_rows or max(self.grid.data_size)
