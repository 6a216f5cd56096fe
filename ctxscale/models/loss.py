"""Linear + cross-entropy over chunks of rows, for training (`GPTConfig.loss_chunk_rows`).

The plain path, `F.cross_entropy(lm_head(h).float(), y)`, holds (rows, vocabulary) logits and
runs a float32 log-softmax over all of them: ~9 % of a step of the study's model at T = 1,024 on
an H200 (bench/bench_gpt.py). Here the lm_head matmul, the loss and the loss's gradients are
computed one chunk of rows at a time, in the forward pass: each chunk's logits live only while
their gradient (softmax - one-hot) is turned into the chunk's share of the gradients of the hidden
states and of the weight, which backward then only scales. No matmul is recomputed (recomputing
the lm_head matmul in backward, as activation checkpointing would, costs a third of its FLOPs
again, more than the log-softmax saves), and the logits are never float32 in memory.
"""
from __future__ import annotations

import torch


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int):
        device = hidden.device.type
        # the dtype the lm_head matmul would run in: bf16 under autocast, else the inputs'
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        w, n, vocab = weight.to(dtype), hidden.shape[0], weight.shape[0]
        loss, grad_w, grad_h = 0.0, 0.0, []
        for h, y in zip(hidden.to(dtype).split(chunk_rows), targets.split(chunk_rows)):
            logits = (h @ w.t()).float()  # (rows, V): float32 only inside the fused kernels under compile
            lse = logits.logsumexp(dim=1)
            loss = loss + (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
            # d(mean loss)/d logits = (softmax - one-hot) / n, cast to the matmul dtype as autograd
            # does for the plain path's .float(); the comparison with arange fuses into one kernel
            hit = torch.arange(vocab, device=hidden.device) == y[:, None]
            g = (((logits - lse[:, None]).exp() - hit.float()) / n).to(dtype)
            grad_h.append(g @ w)
            grad_w = grad_w + (g.t() @ h).float()  # float32 sum over chunks
        ctx.save_for_backward(torch.cat(grad_h).to(hidden.dtype), grad_w.to(weight.dtype))
        return loss / n

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_loss, grad_w * grad_loss, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk_rows: int) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T` (hidden (N, C), weight (V, C), targets (N,)
    class ids, no ignored ones), in chunks of `chunk_rows` rows (the last may be shorter).

    Equal to `F.cross_entropy((hidden @ weight.T).float(), targets)`, and so are its gradients,
    up to rounding. It computes the gradients whether or not backward follows: use it for
    training only.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    return _LinearCrossEntropy.apply(hidden, weight, targets, chunk_rows)
