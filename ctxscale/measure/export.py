"""Export a GPT-2 that ctxscale trained (ctxscale.models.gpt) to a transformers folder.

ctxscale's GPT is a pre-LayerNorm GPT-2 with rotary embeddings in the rotate-half layout, exact
GELU, a 4x MLP and tied input/output embeddings. transformers' GPT-NeoX with
`use_parallel_residual=False` and `rotary_pct` = ctxscale's `rope_fraction` computes exactly that, so the export is a
re-labelling of weights, with two adjustments:

- the fused QKV projection: ctxscale splits its output as [q (all heads) | k | v]; GPT-NeoX
  views it per head as [q_h | k_h | v_h], so the rows are regrouped head by head;
- biases: a ctxscale model trained with `bias: false` has none; GPT-NeoX's LayerNorms and MLP
  always have them, and they are set to zero (the same function).

The folder then loads with `AutoModelForCausalLM.from_pretrained` and is measured like any other
model (its vocabulary is GPT-2's, so a measure spec reads the corpus's tokens as they are).

    python -m ctxscale.measure.export --results results --sweep gpt2-local --trial TRIAL_ID out/gpt2-l256
    python -m ctxscale.measure.export --checkpoint path/to/state.pt --n-head 12 out/model
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import torch

CHECKPOINT_FILE = "state.pt"  # what ctxscale.train.gpt writes into each Ray checkpoint


def _strip_prefixes(state: dict) -> dict:
    # torch.compile and DDP wrappers prefix parameter names; the exported weights are the plain module's
    out = {}
    for key, value in state.items():
        for prefix in ("_orig_mod.", "module."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def infer_config(state: dict, n_head: int, rope_base: float = 10000.0) -> dict:
    """GPTConfig keyword arguments from a ctxscale GPT state dict; the head count and RoPE base are
    not visible in the weights' shapes and must be given."""
    vocab_size, n_embd = state["wte.weight"].shape
    n_layer = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    return dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab_size,
                bias="ln_f.bias" in state, rope_base=rope_base)


def to_transformers(state: dict, config: dict, max_positions: int = 16384):
    """A `GPTNeoXForCausalLM` holding the weights of a ctxscale GPT state dict (float32)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    state = _strip_prefixes(state)
    C, H = config["n_embd"], config["n_head"]
    D = C // H
    hf_config = GPTNeoXConfig(
        vocab_size=config["vocab_size"], hidden_size=C, num_hidden_layers=config["n_layer"], num_attention_heads=H,
        intermediate_size=4 * C, hidden_act="gelu",  # exact (erf) GELU, as F.gelu's default
        rotary_pct=float(config.get("rope_fraction", 1.0)), rotary_emb_base=float(config.get("rope_base", 10000.0)),
        use_parallel_residual=False,
        tie_word_embeddings=True, attention_bias=bool(config.get("bias", False)), layer_norm_eps=1e-5,
        max_position_embeddings=max_positions,  # unused by RoPE; only a label for users
        hidden_dropout=0.0, attention_dropout=0.0,
        # GPT-2's <|endoftext|>, when the vocabulary has it
        bos_token_id=50256 if config["vocab_size"] > 50256 else None,
        eos_token_id=50256 if config["vocab_size"] > 50256 else None)
    model = GPTNeoXForCausalLM(hf_config).float().eval()

    def copy(dst: torch.nn.Module, prefix: str) -> None:
        dst.weight.data.copy_(state[f"{prefix}.weight"])
        if getattr(dst, "bias", None) is None:
            return
        bias = state.get(f"{prefix}.bias")
        if bias is None:  # trained without biases: a zero bias is the same function
            dst.bias.data.zero_()
        else:
            dst.bias.data.copy_(bias)

    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(state["wte.weight"])  # tied: also the output layer
        for i, layer in enumerate(model.gpt_neox.layers):
            p = f"blocks.{i}"
            copy(layer.input_layernorm, f"{p}.ln_1")
            copy(layer.post_attention_layernorm, f"{p}.ln_2")
            qkv = state[f"{p}.attn.c_attn.weight"]  # (3C, C) = [q | k | v], heads contiguous in each
            layer.attention.query_key_value.weight.copy_(qkv.view(3, H, D, C).transpose(0, 1).reshape(3 * C, C))
            if layer.attention.query_key_value.bias is not None:
                layer.attention.query_key_value.bias.copy_(state[f"{p}.attn.c_attn.bias"].view(3, H, D).transpose(0, 1).reshape(-1))
            copy(layer.attention.dense, f"{p}.attn.c_proj")
            copy(layer.mlp.dense_h_to_4h, f"{p}.mlp.c_fc")
            copy(layer.mlp.dense_4h_to_h, f"{p}.mlp.c_proj")
        copy(model.gpt_neox.final_layer_norm, "ln_f")
    return model


def export_gpt(checkpoint, out_dir, *, config: Optional[dict] = None, n_head: Optional[int] = None,
               rope_base: float = 10000.0) -> Path:
    """Write a ctxscale GPT checkpoint as a transformers folder; return the folder.

    Parameters
    ----------
    checkpoint : path
        A Ray checkpoint folder holding `state.pt`, or the `state.pt` file itself.
    out_dir : path
        The folder to write (config.json, model.safetensors, ctxscale_export.json).
    config : dict, optional
        GPTConfig keyword arguments (n_layer, n_head, n_embd, vocab_size, bias, rope_base). Default:
        read from the weights, with `n_head` (required then) and `rope_base`.

    Examples
    --------
    >>> export_gpt("results/gpt2-local/_ray/.../checkpoint_000004", "models/gpt2-l256", n_head=2)  # doctest: +SKIP
    """
    path = Path(checkpoint)
    path = path / CHECKPOINT_FILE if path.is_dir() else path
    saved = torch.load(path, map_location="cpu", weights_only=True)
    state = _strip_prefixes(saved["model"] if "model" in saved else saved)
    config = config or saved.get("model_config") or saved.get("config")
    if config is None:
        if n_head is None:
            raise ValueError(f"{path}: the checkpoint does not record the model's shape; give n_head (or config)")
        config = infer_config(state, n_head, rope_base)
    model = to_transformers(state, dict(config))
    out = Path(out_dir)
    model.save_pretrained(out)
    note = {"source": str(path.absolute()), "ctxscale_config": dict(config), "metrics": saved.get("metrics", {}),
            "architecture": "GPT-NeoX, sequential residual, rotary_pct = rope_fraction: the same function as ctxscale.models.gpt"}
    (out / "ctxscale_export.json").write_text(json.dumps(note, indent=2, default=str))
    return out


def find_checkpoints(storage: Path, trial_id: str) -> list[Path]:
    """Every `state.pt` under Ray's storage that belongs to `trial_id` (its folder names carry the id)."""
    return sorted(p for p in Path(storage).rglob(CHECKPOINT_FILE) if trial_id in str(p.relative_to(storage)))


def export_trial(results_dir, sweep: str, trial_id: str, out_dir, which: str = "best") -> Path:
    """Export a stored GPT trial: its model shape from the trial row's spec, its weights from the
    checkpoint with the lowest validation loss ('best') or the latest step ('last')."""
    from ..spec.gpt import PRESETS
    from ..store import load_results

    trials = load_results(results_dir, "trials", sweep=sweep)
    rows = trials[trials["trial_id"] == trial_id] if len(trials) else trials
    if rows.empty:
        raise ValueError(f"{results_dir}: sweep {sweep!r} has no trial {trial_id!r}")
    spec = json.loads(rows["config"].iloc[0])
    section = spec.get("model", {})
    config = dict(PRESETS[section["preset"]]) if section.get("preset") else {}
    config.update({k: section[k] for k in ("n_layer", "n_head", "n_embd") if section.get(k) is not None})
    config.update({k: section[k] for k in ("vocab_size", "bias", "rope_base", "rope_fraction") if k in section})
    storage = Path(spec.get("resources", {}).get("storage_path") or Path(results_dir) / sweep / "_ray")
    found = find_checkpoints(storage, trial_id)
    if not found:
        raise ValueError(f"{storage}: no {CHECKPOINT_FILE} of trial {trial_id!r}")

    def rank(p: Path):
        saved = torch.load(p, map_location="cpu", weights_only=True)
        metrics, progress = saved.get("metrics", {}), saved.get("progress", {})
        return metrics.get("val_loss", float("inf")) if which == "best" else -progress.get("step", 0)

    return export_gpt(min(found, key=rank), out_dir, config=config)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctxscale.measure.export", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="transformers folder to write")
    parser.add_argument("--checkpoint", help="a checkpoint folder or its state.pt")
    parser.add_argument("--n-head", type=int, help="attention heads (with --checkpoint)")
    parser.add_argument("--rope-base", type=float, default=10000.0)
    parser.add_argument("--results", help="results folder of a GPT sweep (with --sweep and --trial)")
    parser.add_argument("--sweep")
    parser.add_argument("--trial")
    parser.add_argument("--which", choices=("best", "last"), default="best")
    args = parser.parse_args(argv)
    try:
        if args.checkpoint:
            out = export_gpt(args.checkpoint, args.out, n_head=args.n_head, rope_base=args.rope_base)
        elif args.results and args.sweep and args.trial:
            out = export_trial(args.results, args.sweep, args.trial, args.out, args.which)
        else:
            parser.error("give --checkpoint, or --results, --sweep and --trial")
    except (ValueError, FileNotFoundError) as err:
        print(f"export: error: {err}", file=sys.stderr)
        return 2
    print(f"exported to {out}; measure it with model: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
