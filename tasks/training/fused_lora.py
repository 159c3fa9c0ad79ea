"""LoRA layers computed through one merged weight, where that is exact: in training (``training.fuse_lora``) and
in prediction (``tasks.training.loop.predict_logits``).

peft computes a LoRA linear as ``x W^T + s (x A^T) B^T``: two skinny matmuls forward and four backward (rank r
against the hidden size), plus a scaling and an add on every activation. The same layer can be computed as
``x (W + s B A)^T`` forward and, backward, ``dx = g (W + s B A)`` and ``G = g^T x`` (one full-size matmul each),
``dA = s B^T G``, ``dB = s G A^T`` (no token dimension left). That is the same function and the same gradients (up
to float rounding), with three efficient matmuls per layer instead of one plus six skinny ones. Measured on a
2-core CPU (MiniLM, LoRA on every linear, SMS spam; ``bench/train_speed.py``): training at 0.92-0.99x the tokens/s
of peft's forward with 0.77-0.78x the peak RSS (fewer intermediate activations); prediction at 1.34-1.44x the
texts/s.

Safe only where the two are the same computation: plain LoRA (no DoRA or other variant), no LoRA dropout (dropout
acts on the LoRA branch's input only), one active adapter, not merged, a frozen ``nn.Linear`` base in float32 (in
bf16/fp16 the small delta ``s B A`` would round away when added to ``W``), no LoRA bias. Anything else keeps peft's
own forward, checked on every call. The patch lives on the module instances only while a training loop or a
prediction runs: what is saved and loaded is peft's ordinary model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _MergedLoraLinear(torch.autograd.Function):
    """``F.linear(x, W + s B A, bias)`` with gradients for ``x``, ``A``, ``B`` (and ``bias`` if it is trained)."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling: float):
        ctx.scaling = scaling
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight, lora_a, lora_b)
        return F.linear(x, torch.addmm(weight, lora_b, lora_a, alpha=scaling), bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight, lora_a, lora_b = ctx.saved_tensors
        s = ctx.scaling
        grad_x = grad_bias = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad @ torch.addmm(weight, lora_b, lora_a, alpha=s)
        if ctx.needs_input_grad[3] or ctx.needs_input_grad[4]:
            g2 = grad.reshape(-1, grad.shape[-1])
            full = g2.t() @ x.reshape(-1, x.shape[-1])  # dL/dW of the merged weight: out x in
            if ctx.needs_input_grad[3]:
                grad_a = (lora_b.t() @ full).mul_(s)
            if ctx.needs_input_grad[4]:
                grad_b = (full @ lora_a.t()).mul_(s)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.reshape(-1, grad.shape[-1]).sum(0)
        return grad_x, None, grad_bias, grad_a, grad_b, None


def _lora_linear_class():
    try:
        from peft.tuners.lora.layer import Linear
    except ImportError:  # peft without LoRA layers: nothing to fuse
        return None
    return Linear


def _fusable_now(module, x: torch.Tensor, args: tuple, kwargs: dict[str, Any]) -> str | None:
    """The one active adapter's name when this call can be fused; None when peft's own forward must run."""
    if args or kwargs or module.disable_adapters or module.merged:
        return None
    active = [a for a in module.active_adapters if a in module.lora_A]
    if len(active) != 1:
        return None
    name = active[0]
    lora_a, lora_b, base = module.lora_A[name], module.lora_B[name], module.base_layer
    if (name in getattr(module, "lora_variant", {}) or not isinstance(module.lora_dropout[name], nn.Identity)
            or lora_a.bias is not None or lora_b.bias is not None or base.weight.requires_grad):
        return None
    if not (x.dtype == base.weight.dtype == lora_a.weight.dtype == lora_b.weight.dtype == torch.float32):
        return None
    return name


def _fused_forward(module, original, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    name = _fusable_now(module, x, args, kwargs)
    if name is None:
        return original(x, *args, **kwargs)
    base = module.base_layer
    return _MergedLoraLinear.apply(x, base.weight, base.bias, module.lora_A[name].weight,
                                   module.lora_B[name].weight, float(module.scaling[name]))


def fusable_modules(model) -> list[nn.Module]:
    """The LoRA linears of ``model`` that can take the merged computation (a plain ``nn.Linear`` base, not
    ``fan_in_fan_out``); whether a given call is fused is decided per call."""
    linear = _lora_linear_class()
    if linear is None:
        return []
    return [m for m in model.modules()
            if type(m) is linear and type(m.base_layer) is nn.Linear and not getattr(m, "fan_in_fan_out", False)]


@contextlib.contextmanager
def fused_lora(model, enabled: bool = True) -> Iterator[int]:
    """While inside, the model's LoRA linears compute through the merged weight where exact; yields how many
    layers were patched (0 when disabled or there are none). Every patch is removed on the way out."""
    patched = fusable_modules(model) if enabled else []
    before = [m.__dict__.get("forward") for m in patched]  # an instance-level forward someone else set, if any
    for m in patched:
        original = m.forward
        m.forward = lambda x, *a, _m=m, _o=original, **k: _fused_forward(_m, _o, x, *a, **k)
    try:
        yield len(patched)
    finally:
        for m, previous in zip(patched, before):
            if previous is None:
                del m.forward
            else:
                m.forward = previous
