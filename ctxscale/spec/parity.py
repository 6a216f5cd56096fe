"""Spec of the position-weighted multitask sparse-parity experiment (`experiment: parity`).

A trial trains one small causal Transformer per (data_size, seed) and then evaluates it at every
`grid.context_length`: data_size is the number of training samples, context lengths are
evaluated inside the trial. The study fixes L = 60 bits, half the training samples unmasked and the
rest with their last 0–50 bits unknown, 3 layers of width 208 (FFN 832) with RoPE base 4,000. It
leaves open (or states inconsistently) the number of tasks (100 or 200), their frequencies, the
attention heads and the optimiser: those are fields below, with documented defaults.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from .common import Grid, Section, SweepSpec, _check_values
from .measure import SpectraSettings


class ParityGrid(Grid):
    context_length: list[int] = Field(description="Context lengths (bits) at which every trained model is "
                                      "evaluated, bits beyond them unknown; 1 <= l <= data.string_length.")
    data_size: list[int] = Field(description="Training samples per model.")
    seed: list[int] = Field(default=[0], description="Seeds of the model's initial weights and batch order.")

    @field_validator("context_length", "data_size")
    @classmethod
    def _positive_unique(cls, values, info):
        return sorted(_check_values(info.field_name, values, positive=True))

    @property
    def size(self) -> int:
        return len(self.data_size) * len(self.seed)


class ParityData(Section):
    string_length: int = Field(default=60, ge=2, le=250, description="Context bits L (the study: 60).")
    n_tasks: int = Field(default=100, ge=1, le=252, description="Tasks (the study says both 100 and 200).")
    weight_exponent: float = Field(
        default=0.33, ge=0,
        description="γ of the task frequencies (1 - (b - 1) / L)^γ, b a task's farther bit; farther bits evenly "
        "spaced over 2..L. The study's frequencies are not published: 0.33 puts the Bayes risk at l = 17 and 50 "
        "(0.458, 0.069 nats) near its reported 0.4643 and 0.0612.")
    task_seed: int = Field(default=0, description="Seed of each task's nearer bit.")
    unmasked_fraction: float = Field(default=0.5, ge=0, le=1, description="Share of training samples with every "
                                     "bit visible (the study: half).")
    mask_min: int = Field(default=0, ge=0, description="Fewest far bits made unknown in a masked sample.")
    mask_max: int = Field(default=50, ge=0, description="Most far bits made unknown in a masked sample (the "
                          "study: 0..50 of 60).")
    eval_per_task: int = Field(default=200, ge=1, description="Evaluation samples per task and context length; "
                               "task CEs are averaged with the exact frequencies.")
    feature_rows: int = Field(default=10_000, ge=4, description="Samples (tasks by frequency) whose final hidden "
                              "state is measured (PCA spectrum, KDE entropy) at each context length.")
    seed: int = Field(default=0, description="Seed of the generated training, evaluation and feature sets.")

    @model_validator(mode="after")
    def _mask_range(self):
        if self.mask_min > self.mask_max:
            raise ValueError(f"data.mask_min ({self.mask_min}) exceeds data.mask_max ({self.mask_max})")
        if self.mask_max >= self.string_length:
            raise ValueError(f"data.mask_max ({self.mask_max}) must be below data.string_length ({self.string_length})")
        return self


class ParityModel(Section):
    n_layer: int = Field(default=3, ge=1, description="Transformer blocks (the study: 3).")
    n_embd: int = Field(default=208, ge=2, description="Width (the study: 208; the FFN is 4x: 832).")
    n_head: int = Field(default=4, ge=1, description="Attention heads (not given by the study); the head "
                        "dimension must be even for RoPE, and a multiple of 8 for the flash / memory-efficient attention "
                        "kernels on GPUs (208 / 4 = 52 falls back to the slow math kernel; 208 / 13 = 16 does not).")
    rope_base: float = Field(default=4000.0, gt=0, description="RoPE base (the study: 4,000).")

    @model_validator(mode="after")
    def _heads(self):
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ValueError(f"model.n_embd ({self.n_embd}) / model.n_head ({self.n_head}) must be an even integer")
        return self


class ParityTraining(Section):
    epochs: int = Field(default=20, ge=1, description="Passes over the data_size training samples.")
    batch_size: int = Field(default=512, ge=1, description="Samples per optimizer step.")
    lr: float = Field(default=1e-3, gt=0, description="AdamW peak learning rate (linear warmup, then lr_schedule).")
    warmup_steps: int = Field(default=200, ge=0, description="Linear warmup steps.")
    lr_schedule: Literal["cosine", "constant"] = Field(default="cosine", description="After the warmup: cosine "
                                                       "to lr/10 at the last step, or constant at lr.")
    curriculum_tasks: float = Field(default=1.0, gt=0, le=1, description="Share of the tasks, the nearest first "
                                    "(smallest farther bit), that the first curriculum_steps steps train on; 1: all.")
    curriculum_steps: int = Field(default=0, ge=0, description="Steps on the nearest curriculum_tasks before the "
                                  "epochs over all samples begin (0: no curriculum).")
    checkpoint_every_s: float = Field(default=300.0, gt=0, description="At the end of an epoch, save the model "
                                      "and optimizer (a Ray checkpoint) once this long has passed since the last: a "
                                      "launch stopped mid-trial goes on from there when run again. Not in config_hash.")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay.")
    grad_clip: Optional[float] = Field(default=1.0, gt=0, description="Clip the gradient norm (null: no clipping).")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="'auto' takes CUDA when the trial was given a GPU (resources.gpus_per_trial > 0); a trial given none sees no GPU.")
    precision: Literal["float32", "bfloat16"] = Field(default="float32", description="bfloat16: autocast on CUDA "
                                                     "(the loss and the evaluation stay float32).")
    compile: bool = Field(default=False, description="torch.compile the model (CUDA; ignored on CPUs), static "
                          "shapes: a data_size that is a multiple of batch_size compiles one graph, else two.")
    threads: Optional[int] = Field(default=None, ge=1, description="torch CPU threads (default: the trial's CPUs).")

    @model_validator(mode="after")
    def _curriculum(self):
        if (self.curriculum_tasks < 1) != (self.curriculum_steps > 0):
            raise ValueError("training.curriculum_tasks below 1 and training.curriculum_steps above 0 go together "
                             f"(got {self.curriculum_tasks} and {self.curriculum_steps})")
        return self


class ParitySpectra(SpectraSettings):
    n_eigenvalues: list[int] = Field(default=[3, 5, 10, 20, 50, 100, 200], description="N of the sums of log "
                                     "relative eigenvalues (N beyond the width: NaN).")


class ParitySpec(SweepSpec):
    experiment: Literal["parity"]
    grid: ParityGrid
    data: ParityData = ParityData()
    model: ParityModel = ParityModel()
    training: ParityTraining = ParityTraining()
    spectra: ParitySpectra = ParitySpectra()

    @model_validator(mode="after")
    def _fits(self):
        too_long = [c for c in self.grid.context_length if c > self.data.string_length]
        if too_long:
            raise ValueError(f"grid.context_length {too_long} exceed data.string_length = {self.data.string_length}")
        if self.resources.num_workers:
            raise ValueError("resources.num_workers must be 0 for parity specs: a model this small trains in one process")
        return self
