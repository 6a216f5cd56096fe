"""Spec of measuring a pretrained causal LM (experiment 2 of the study): final-token cross-entropy
and hidden-state spectra at every context length of the grid.

Loading a spec touches neither the model nor the corpus (no download, no torch import);
`ctxscale.experiments.measure.prepare_measure` checks the corpus before Ray starts, and the trial
checks the model against the corpus when it has loaded it.
"""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from .common import LOCAL_CORPUS, Section, SweepSpec, _check_values

_THRESHOLDS = [0.002, 0.0035, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25]  # = measure.spectra.DEFAULT_THRESHOLDS
_N_EIGENVALUES = [3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]


class MeasureGrid(Section):
    """Context lengths only: a pretrained model has no data-size or seed axis."""

    context_length: list[int] = Field(
        description="Context lengths l in tokens: the model reads l - 1 tokens and the l-th (each "
        "chunk's final token) is scored. 2 <= l <= protocol.chunk_length.")

    @field_validator("context_length")
    @classmethod
    def _positive_unique(cls, values):
        _check_values("context_length", values, positive=True)
        if min(values) < 2:
            raise ValueError(f"context_length values must be at least 2 (one token read, one scored), got {min(values)}")
        return sorted(values)

    @property
    def size(self) -> int:
        return len(self.context_length)


class MeasureProtocol(Section):
    """The study's numbers; see ctxscale.measure.protocol for what each step does."""

    split: Literal["train", "val"] = Field(default="val", description="Which split of the corpus to read.")
    min_doc_tokens: int = Field(default=3000, ge=0, description="Keep documents with more than this many tokens "
                                "(counted in the model's tokens when inference.tokenizer is set).")
    drop_first: int = Field(default=100, ge=0, description="Tokens dropped at the start of each document.")
    drop_last: int = Field(default=50, ge=0, description="Tokens dropped at the end of each document.")
    chunk_length: int = Field(default=2048, ge=2, description="Tokens per chunk; the longest context length.")
    max_documents: Optional[int] = Field(default=None, gt=0, description="Read at most this many documents "
                                         "of the split, in corpus order (default: all).")
    max_chunks: Optional[int] = Field(default=None, ge=2, description="Use at most this many chunks in all "
                                      "(default: all); the PCA needs at least 2.")


class SpectraSettings(Section):
    """What is measured of a hidden state (measure's and parity's `spectra` section): the PCA spectrum's
    intrinsic dimensions and sums of log eigenvalues, and the KDE entropy."""

    thresholds: list[float] = Field(default=_THRESHOLDS, description="Intrinsic dimension = number of "
                                    "eigenvalues / largest above each threshold (the study: 0.002 .. 0.25).")
    n_eigenvalues: list[int] = Field(default=_N_EIGENVALUES, description="N values of the sum of log relative "
                                     "eigenvalues over the first N (the study: 3 .. 2,000).")
    kde_dims: Optional[int] = Field(default=16, ge=1, description="KDE entropy (column kde_entropy): PCA axes "
                                    "kept before the Gaussian KDE (null: all); see ctxscale.measure.kde.")
    kde_max_samples: Optional[int] = Field(default=10_000, ge=4, description="KDE entropy: a seeded random "
                                           "subsample of at most this many hidden states (null: all).")

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, values):
        _check_values("thresholds", values, positive=True)
        if max(values) >= 1:
            raise ValueError(f"thresholds are ratios to the largest eigenvalue and must be below 1, got {max(values)}")
        return sorted(values)

    @field_validator("n_eigenvalues")
    @classmethod
    def _n_values(cls, values):
        return sorted(_check_values("n_eigenvalues", values, positive=True))


class MeasureSpectra(SpectraSettings):
    layer: int = Field(default=-1, description="-1: the last layer's state after the final norm (what the "
                       "logits are computed from). k >= 0: hidden_states[k] of the model (0 = embeddings).")
    write_features: bool = Field(default=False, description="Also store the raw hidden states, one .npy per "
                                 "model and context length under <results>/<name>/features/.")


class MeasureInference(Section):
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="'auto' takes CUDA when the "
                                                   "task was given a GPU.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description="Weights' dtype; 'auto': bfloat16 on GPUs, float32 on CPUs. The softmax "
        "is always float32.")
    attention: str = Field(default="sdpa", description="transformers attn_implementation (sdpa, eager, "
                           "flash_attention_2, ...).")
    batch_size: Optional[int] = Field(default=None, gt=0, description="Sequences per forward pass (default: "
                                      "batch_tokens / context length). Halved on a CUDA out-of-memory error.")
    batch_tokens: int = Field(default=32768, gt=0, description="Tokens per forward pass when batch_size is unset.")
    tokenizer: Optional[str] = Field(
        default=None, description="null: the corpus's GPT-2 tokens are fed as they are (GPT-2 family and "
        "ctxscale's own GPTs). 'model': documents are decoded to text and re-tokenized with the model's "
        "tokenizer (any other model, e.g. Llama); or a tokenizer's hub id / folder.")
    trust_remote_code: bool = Field(default=False, description="Allow model code from the hub (off: only "
                                    "architectures transformers ships).")


class MeasureSpec(SweepSpec):
    experiment: Literal["measure"]
    model: Union[str, list[str]] = Field(
        description="A Hugging Face model id, a local transformers folder (e.g. a ctxscale GPT exported with "
        "ctxscale.measure.export), or 'random:gpt2-tiny' / 'random:gpt2-small' (random weights, no download). "
        "A list measures each model in its own Ray Tune trial.")
    corpus: str = Field(default=LOCAL_CORPUS, description="A corpus folder prepared by ctxscale "
                        "(prepare_corpus), or 'local': the Shakespeare corpus, prepared on first use.")
    grid: MeasureGrid
    protocol: MeasureProtocol = MeasureProtocol()
    spectra: MeasureSpectra = MeasureSpectra()
    inference: MeasureInference = MeasureInference()

    @field_validator("model")
    @classmethod
    def _models(cls, value):
        models = [value] if isinstance(value, str) else value
        if not models or any(not m.strip() for m in models):
            raise ValueError("model must name at least one model, and no name may be empty")
        if len(set(models)) != len(models):
            raise ValueError(f"model lists a model twice: {sorted({m for m in models if models.count(m) > 1})}")
        return value

    @model_validator(mode="after")
    def _fits(self):
        longest = max(self.grid.context_length)
        if longest > self.protocol.chunk_length:
            raise ValueError(f"grid.context_length {longest} exceeds protocol.chunk_length = "
                             f"{self.protocol.chunk_length}: a context is cut from one chunk")
        if self.resources.num_workers:
            raise ValueError("resources.num_workers must be 0 for measure specs: each model is one Ray Tune trial")
        return self

    @property
    def models(self) -> list[str]:
        return [self.model] if isinstance(self.model, str) else list(self.model)
