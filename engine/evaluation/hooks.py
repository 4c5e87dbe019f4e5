"""Per-linear-layer input access through forward hooks, for data-dependent merge methods.

RegMean needs each linear layer's input Gram matrix XᵀX, Fisher merging and activation-based pruning
need activations; both come from running a task's model over a split with hooks on its
``nn.Linear`` modules. Inputs are reported under the name of the layer's weight tensor in the state
dict (``backbone.layers.0.fc1.weight``), which is what the merge executor iterates over.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from engine.runtime import CancelToken

InputCallback = Callable[[str, torch.Tensor], None]
TokenMask = Callable[[torch.Tensor], torch.Tensor]  # a batch of inputs → which positions are real tokens


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """The model's linear modules keyed by their weight tensor's state-dict name."""
    return {f"{name}.weight": m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


@torch.no_grad()
def visit_linear_inputs(model: nn.Module, inputs: torch.Tensor, callback: InputCallback, *, batch_size: int = 512,
                        token_mask: TokenMask | None = None, cancel: CancelToken | None = None) -> None:
    """Run ``model`` over ``inputs`` in batches; call ``callback(weight_name, x)`` with every linear
    layer's input flattened to [tokens, in_features], on the model's device.

    ``token_mask`` (a task's, such as a text-perplexity task's) marks a batch's real positions [b, L];
    a layer input of shape [b, L, features] then keeps only those rows (padding is left out)."""
    device = next(model.parameters()).device
    mask: list[torch.Tensor | None] = [None]

    def hook_for(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            x = args[0]
            keep = mask[0]
            callback(name, x[keep] if keep is not None and x.shape[:-1] == keep.shape
                     else x.reshape(-1, x.shape[-1]))
        return hook

    handles = [m.register_forward_pre_hook(hook_for(name)) for name, m in linear_layers(model).items()]
    try:
        for start in range(0, len(inputs), batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            batch = inputs[start:start + batch_size].to(device)
            mask[0] = token_mask(batch) if token_mask is not None else None
            model(batch)
    finally:
        for h in handles:
            h.remove()


def linear_input_grams(model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 512,
                       token_mask: TokenMask | None = None,
                       cancel: CancelToken | None = None) -> dict[str, tuple[torch.Tensor, int]]:
    """Per linear layer: (XᵀX summed over ``inputs``, number of rows of X), in fp32 on the model's device
    (rows of padding left out where ``token_mask`` marks them; see ``visit_linear_inputs``)."""
    grams: dict[str, list] = {}

    def add(name: str, x: torch.Tensor) -> None:
        x = x.float()
        if name not in grams:
            grams[name] = [x.T @ x, x.shape[0]]
        else:
            grams[name][0] += x.T @ x
            grams[name][1] += x.shape[0]

    visit_linear_inputs(model, inputs, add, batch_size=batch_size, token_mask=token_mask, cancel=cancel)
    return {k: (g, n) for k, (g, n) in grams.items()}
