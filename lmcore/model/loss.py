"""The output layer and cross-entropy in one pass over row chunks: the full logits never exist.

Why: the logits of a batch are ``tokens x vocab`` floats (8 x 2048 tokens x 32k vocabulary is
2 GiB in fp32), written once by the head, read again by the softmax, and once more by its
backward. :class:`ChunkedLinearCrossEntropy` computes, ``chunk_rows`` tokens at a time, the
chunk's logits, its loss, and the gradient of that loss with respect to the chunk's hidden states
and the head weight (softmax minus one-hot, times the two matmuls a backward would do anyway).
Backward then only scales the stored gradients by the incoming one. The same three matmuls as
the plain path, one softmax pass instead of three, and peak memory of one chunk's logits.

Numerics: matmuls run in the hidden states' dtype (bf16 under autocast, like the plain head);
the softmax, log-sum-exp and loss are float32; the weight's gradient accumulates in float32.
Targets equal to ``ignore_index`` add no loss and no gradient. The result is the **sum** of
nats over the kept targets, like ``F.cross_entropy(..., reduction="sum")`` on the full logits
(equal to float32 rounding; tests compare both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
CHUNK_ROWS = 1024


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum of cross-entropy (nats, float32) of ``logits [..., V]`` against ``targets [...]``, skipping
    ``IGNORE_INDEX``: the plain path, through the full logits."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """``sum CE(hidden @ weight.T, targets)`` with gradients computed in the forward pass."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        compute = hidden.dtype
        w = weight.to(compute)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_weight else None
        for start in range(0, hidden.shape[0], chunk_rows):
            h = hidden[start:start + chunk_rows]
            t = targets[start:start + chunk_rows]
            logits = (h @ w.t()).float()                        # [n, V]
            keep = t != IGNORE_INDEX
            safe = torch.where(keep, t, torch.zeros_like(t))
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, safe[:, None]).squeeze(1)
            total += torch.where(keep, lse - picked, torch.zeros_like(lse)).sum()
            if not (want_hidden or want_weight):
                continue
            probs = logits.sub_(lse[:, None]).exp_()            # softmax, in place of the logits
            probs.scatter_add_(1, safe[:, None], -keep[:, None].to(probs.dtype))
            probs.mul_(keep[:, None].to(probs.dtype))           # ignored rows: no gradient
            g = probs.to(compute)
            if want_hidden:
                grad_hidden[start:start + chunk_rows] = g @ w
            if want_weight:
                grad_weight.add_((g.t() @ h).float())
        ctx.save_for_backward(*(t for t in (grad_hidden, grad_weight) if t is not None))
        ctx.has = (want_hidden, want_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        """The gradients were computed in forward: scale them by the incoming gradient of the sum."""
        saved = list(ctx.saved_tensors)
        want_hidden, want_weight = ctx.has
        grad_hidden = saved.pop(0) * grad_output if want_hidden else None  # stays in the hidden dtype
        grad_weight = (saved.pop(0) * grad_output).to(ctx.weight_dtype) if want_weight else None
        return grad_hidden, grad_weight, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Sum of cross-entropy (nats) of ``hidden [..., C] @ weight.T [V, C]`` against ``targets [...]``,
    skipping ``IGNORE_INDEX``; autocast is honoured for the matmuls, the loss is float32."""
    if torch.is_autocast_enabled(hidden.device.type):
        hidden = hidden.to(torch.get_autocast_dtype(hidden.device.type))
    hidden, targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    with torch.autocast(hidden.device.type, enabled=False):
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            return ChunkedLinearCrossEntropy.apply(hidden, weight, targets, chunk_rows)
        with torch.no_grad():  # evaluation: the loss alone, chunk by chunk
            return ChunkedLinearCrossEntropy.forward(_NoGrad(), hidden, weight, targets, chunk_rows)


class _NoGrad:
    """Stands in for autograd's ``ctx`` when no gradient is wanted (evaluation)."""

    needs_input_grad = (False, False, False, False)

    def save_for_backward(self, *tensors) -> None:
        pass
