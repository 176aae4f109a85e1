"""Model size: multiply-accumulates of one forward pass, counted without running it."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def count_macs(model: nn.Module, shape: Sequence[int]) -> int:
    """Multiply-accumulates per sample of one forward pass on an input of ``shape`` (B,C,H,W).

    Counted by forward hooks on a copy moved to the meta device: exact shapes, no arithmetic,
    so MACs at 256² cost nothing even where the benchmark itself runs tiny sizes. Only convs
    and Linear layers count (biases, BatchNorm, activations and SE gating do not), as usual.
    """
    total = 0

    def hook(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.ConvTranspose2d):  # each input element is spread over a kernel
            total += inputs[0].numel() * m.out_channels // m.groups * math.prod(m.kernel_size)
        elif isinstance(m, nn.Conv2d):
            total += out.numel() * m.in_channels // m.groups * math.prod(m.kernel_size)
        elif isinstance(m, nn.Linear):
            total += inputs[0].numel() * m.out_features

    meta = copy.deepcopy(model).to("meta")
    modules = list(meta.modules())
    for m in list(modules):  # a frozen pretrained encoder sits outside the module tree
        if getattr(m, "_net", None):
            modules += list(m.net.modules())
    for m in modules:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            m.register_forward_hook(hook)
    with torch.inference_mode():
        meta(torch.empty(*shape, device="meta"))
    return total // shape[0]
