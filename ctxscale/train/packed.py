"""Several synthetic models trained as one: a stacked model and what its optimizer step needs.

The models of one group differ only in how many bits they see (their context length). Each is
built on its own (same seed, same initial values as an unpacked trial), then its bits layer is
widened to the group's longest context with zero weight columns, and the members' parameters
are stacked along a new leading "member" dimension. Every layer of all members is one batched
product over the member dimension (`StackedModel.forward`); the bits layer reads the one shared
batch through a stride-0 view. When the longest members stop, the bits layer narrows to the
longest one left (`keep_members`). The bits layer's weights enter the product times
a 0/1 mask that zeroes each member's padding columns: they meet bits the member must not see,
contribute zero, get zero gradient, and stay zero under AdamW (zero moments, and decoupled decay
keeps zero at zero). A member's output and gradients are therefore those of its unpacked model.

The output layer gets a second, zero row whose logit is never used (so it too stays zero): a
one-row output layer runs a matrix-vector kernel when the stack holds one member but a batched
matrix kernel when it holds several, and their roundings differ; training on these tasks is
chaotic enough that such a difference grows to percents of the loss within ten epochs (measured).
With two rows every member computes the same bits whatever the stack's size, so a point gives
the same numbers packed (`resources.pack: auto`) and alone (`pack: 1`) on a CPU.
"""
from __future__ import annotations

import copy
import functools
from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

from ..models.mlp import MLP, BiMLP


def _name_of(model: nn.Module, tensor: torch.Tensor) -> str:
    return next(name for name, param in model.named_parameters() if param is tensor)


def _widened(model: nn.Module, context_length: int, width: int) -> dict[str, torch.Tensor]:
    """The model's parameters with zero columns inserted after its bits, up to `width` bits, and a
    zero second row in its output layer."""
    params = {name: param.detach() for name, param in model.named_parameters()}
    name = _name_of(model, model.bits_input.weight)
    weight = params[name]  # (out, context_length [+ num_tasks]): the bits' columns come first
    padding = weight.new_zeros(weight.shape[0], width - context_length)
    params[name] = torch.cat([weight[:, :context_length], padding, weight[:, context_length:]], dim=1)
    for tensor in (model.output.weight, model.output.bias):  # (1, hidden), (1,)
        name = _name_of(model, tensor)
        params[name] = torch.cat([params[name], torch.zeros_like(params[name])])
    return params


class StackedModel(nn.Module):
    """Models of one architecture and different context lengths as one module.

    Every parameter has shape (M, *its member's shape), the bits layer widened to the longest
    context length `width`. `forward(bits (B, width), control (B, T))` returns logits (M, B).

    Every layer is a batched product over the member dimension; the batch, the same for every
    member, enters through a stride-0 view. A member's bits beyond its context meet zero weight
    columns, which are multiplied by a 0/1 mask on the way in, so they also get zero gradient and
    stay zero. `width` may shrink as members leave (`keep_members`); wider bits are cut to it.
    """

    def __init__(self, members: list[nn.Module], context_lengths: list[int]):
        super().__init__()
        if not isinstance(members[0], (MLP, BiMLP)):
            raise TypeError(f"cannot stack a {type(members[0]).__name__}: only the MLP and the Bi-MLP")
        self.context_lengths = list(context_lengths)
        self.width = max(context_lengths)
        self.bits_weight_name = _name_of(members[0], members[0].bits_input.weight)
        self.output_names = [_name_of(members[0], members[0].output.weight), _name_of(members[0], members[0].output.bias)]
        widened = [_widened(model, length, self.width) for model, length in zip(members, context_lengths)]
        self.names = list(widened[0])
        # input columns after the bits (the MLP's control one-hot; none for the Bi-MLP's bits layer)
        self.extra_columns = widened[0][self.bits_weight_name].shape[1] - self.width
        self.stacked = nn.ParameterList([torch.stack([params[name] for params in widened]) for name in self.names])
        # 1 where a member's bits layer sees an input column: its own bits and what follows the
        # bits (the MLP's control columns), 0 on the padding
        lengths = torch.tensor(context_lengths, device=self.stacked[0].device)
        columns = torch.arange(widened[0][self.bits_weight_name].shape[1], device=lengths.device)
        seen = (columns < lengths[:, None]) | (columns >= self.width)
        self.register_buffer("input_mask", seen.float()[:, None, :])  # (M, 1, columns)
        # the layer structure of one member; kept out of the registered modules so that its
        # (meta, unused) parameters are not the stacked model's
        object.__setattr__(self, "template", copy.deepcopy(members[0]).to("meta"))

    def forward(self, bits: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        params = dict(zip(self.names, self.stacked))
        params[self.bits_weight_name] = params[self.bits_weight_name] * self.input_mask
        bits = bits[:, :self.width]  # the stack may have narrowed since the data was laid out
        if isinstance(self.template, MLP):
            logits = _layers(self.template.net, "net", params, torch.cat([bits, control], dim=1))
        else:
            features = _layers(self.template.bits_net, "bits_net", params, bits)
            logits = _layers(self.template.head, "head", params,
                             torch.cat([features, control.expand(len(features), -1, -1)], dim=2))
        return logits[..., 0]  # (M, B, 2) -> (M, B)

    def member_parameters(self, row: int) -> list[torch.Tensor]:
        """Copies of one member's (widened) parameters, in `names` order: what `unstacked` takes."""
        return [param[row].detach().clone() for param in self.stacked]

    def unstacked(self, params: list[torch.Tensor], context_length: int) -> dict[str, torch.Tensor]:
        """A member's parameters as the state dict of its own unpacked model (padding removed)."""
        state = dict(zip(self.names, params))
        weight = state[self.bits_weight_name]
        width = weight.shape[1] - self.extra_columns  # the stack's width when these were copied
        state[self.bits_weight_name] = torch.cat([weight[:, :context_length], weight[:, width:]], dim=1)
        for name in self.output_names:
            state[name] = state[name][:1]
        return state


def _bias_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float) -> torch.Tensor:
    # in x's dtype: under bfloat16 autocast a float32 bias would promote the activation to float32,
    # writing twice the bytes and costing the next product a cast back (float32 x: no change)
    return F.leaky_relu(x + bias.to(x.dtype).unsqueeze(1), negative_slope)


@functools.cache
def _fused_bias_leaky_relu() -> Callable:
    """`_bias_leaky_relu` compiled (shapes dynamic: M shrinks as members stop): one GPU kernel that
    reads the matrix product once, where eager mode writes the broadcast bias, accumulates onto it
    and reads and writes it again for the activation (measured on an H200: the broadcast copy and the
    LeakyReLU passes were 44 % of a packed group's GPU time)."""
    return torch.compile(_bias_leaky_relu, dynamic=True)


def _layers(sequence: nn.Sequential, prefix: str, params: dict, x: torch.Tensor) -> torch.Tensor:
    """`sequence` (Linear and LeakyReLU layers) run by every member on its stacked weights.

    x is (B, in) when it is the same for every member, else (M, B, in); the result is (M, B, out).
    In evaluation on a GPU a Linear layer followed by a LeakyReLU runs as a product and one fused
    kernel. The CPU keeps the eager kernels, whose numbers the packed-against-unpacked equality
    was shown with.
    """
    layers = list(sequence)
    # evaluation only: in training the compiled backward made a step slower (H200, 12 members x
    # 10,000 rows: 3.96 ms against 2.96 eager), while a validation pass over 2M rows fell from
    # 0.194 s to 0.132 s
    fuse = x.is_cuda and not torch.is_grad_enabled()
    index = 0
    while index < len(layers):
        layer = layers[index]
        if isinstance(layer, nn.Linear):
            weight, bias = params[f"{prefix}.{index}.weight"], params[f"{prefix}.{index}.bias"]  # (M, out, in), (M, out)
            members = len(bias)
            # one input for all members is read through a stride-0 view, so every layer's output is
            # a contiguous (M, B, out) and each member's product the same kernel call whatever M is
            if x.dim() == 2 and torch.is_autocast_enabled(x.device.type):
                # cast before the stride-0 view: autocast would copy the expanded input M times
                x = x.to(torch.get_autocast_dtype(x.device.type))
            inputs = x.expand(members, *x.shape) if x.dim() == 2 else x
            activation = layers[index + 1] if index + 1 < len(layers) else None
            if fuse and isinstance(activation, nn.LeakyReLU):
                x = _fused_bias_leaky_relu()(torch.bmm(inputs, weight.transpose(1, 2)), bias, activation.negative_slope)
                index += 2
                continue
            x = torch.baddbmm(bias.unsqueeze(1), inputs, weight.transpose(1, 2))
        elif isinstance(layer, nn.LeakyReLU):
            # in place where autograd keeps nothing (evaluation): no second activation-sized buffer
            x = F.leaky_relu(x, layer.negative_slope, inplace=not torch.is_grad_enabled())
        else:
            raise TypeError(f"cannot stack a {type(layer).__name__} layer")
        index += 1
    return x


def keep_members(model: StackedModel, optimizer: torch.optim.Optimizer, rows: list[int],
                 make_optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]) -> torch.optim.Optimizer:
    """Shrink the stack to the members at `rows` and return an optimizer that carries on from the
    old one's state for them (AdamW's moments and step count, sliced alike).

    A stopped member leaves the stack: it stops updating (Adam's momentum would move it on a zero
    gradient) and stops costing compute.
    """
    device = model.input_mask.device
    index = torch.tensor(rows, device=device)
    model.context_lengths = [model.context_lengths[row] for row in rows]
    # the bits layer narrows to the longest member left: the dropped columns are all padding (zero
    # weights, zero moments), so removing them changes no member's numbers, only the work
    width = max(model.context_lengths)
    columns = torch.cat([torch.arange(width, device=device),
                         torch.arange(model.width, model.width + model.extra_columns, device=device)])
    bits_index = model.names.index(model.bits_weight_name)
    model.width = width

    def kept_slice(tensor: torch.Tensor, position: int) -> torch.Tensor:
        tensor = tensor.detach()[index]
        return (tensor[:, :, columns] if position == bits_index else tensor).clone()

    old = list(model.stacked)
    model.stacked = nn.ParameterList([kept_slice(param, i) for i, param in enumerate(old)])
    model.input_mask = model.input_mask[index][:, :, columns]
    kept = make_optimizer(model.stacked.parameters())
    for position, (old_param, new_param) in enumerate(zip(old, model.stacked)):
        kept.state[new_param] = {
            key: (kept_slice(value, position) if value.dim() > 0 else value.clone()) if torch.is_tensor(value) else value
            for key, value in optimizer.state[old_param].items()
        }
    return kept


@torch.no_grad()
def clip_grad_norm_per_member(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` applied to each member on its own: every member's gradients
    are scaled by min(1, max_norm / (its global L2 norm + 1e-6)). Returns the norms (M,)."""
    grads = [param.grad for param in parameters if param.grad is not None]
    norms = torch.stack([torch.linalg.vector_norm(grad.flatten(1), dim=1) for grad in grads], dim=1)  # (M, P)
    total = torch.linalg.vector_norm(norms, dim=1)  # (M,)
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(scale.view(-1, *[1] * (grad.dim() - 1)))
    return total
