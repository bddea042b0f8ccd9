"""How many bytes one training step needs, before we try it.

Why an estimate and not a trial run: ``auto`` and ``lmcore plan`` must rank
presets from 25M to 7B parameters on machines that could not even allocate
the larger ones. The figures are per device, for a single process (no
sharding), and are meant to be a little pessimistic.

The model (bytes, N = parameters, e = bytes per activation element):

* weights ``N * p`` (p = 4 for fp32 parameters, 2 when parameters are kept in
  bf16/fp16); with fp32 parameters under autocast, the half-precision copies
  autocast makes of each weight (``2N``).
* gradients ``N * p``.
* AdamW: fp32 ``m`` and ``v`` (``8N``) plus fp32 master weights (``4N``) when
  the parameters themselves are half precision.
* activations per layer, after Korthikanti et al. 2022 ("Reducing Activation
  Recomputation in Large Transformer Models": ``34sbh + 5as^2b`` bytes in half
  precision for a GPT block), re-derived for lmcore's LLaMA block and checked
  against the tensors autograd actually saves (``saved_tensors_hooks``; see
  tests/lmcore/test_hardware.py): per RMSNorm its fp32 input (the residual
  stream) and fp32 normalised value, plus autocast's ``e``-byte copy for the
  next matmul (``sbh(8 + e)``); the fused QKV output ``sb(h + 2kv)``, the
  rotated Q and K ``sb(h + kv)`` and the attention output ``sbh`` at ``e``
  bytes; for SwiGLU the fused gate/up output, silu(gate) and the product
  ``4sbf`` (f = MLP width). Fused attention (SDPA flash/efficient kernels,
  flash-attn) never materialises the ``s x s`` scores; the ``math`` backend
  keeps the softmax output in fp32 (autocast runs softmax in fp32) and its
  ``e``-byte copy for the product with V, ``as^2b(4 + e)`` (``4as^2b`` in fp32). No dropout masks (dropout is 0 in
  LLaMA-style training).
* FSDP over ``shards`` devices divides weights, gradients and optimizer states
  (the gathered layer being computed is small next to them and is ignored).
* with gradient checkpointing each layer keeps only its input (``sbh`` fp32)
  and one layer's activations exist at a time while it is recomputed.
* logits ``b * s * V`` in fp32 twice (upcast logits and the log-softmax the
  cross-entropy keeps) -- for small models with a 32k vocabulary this is the
  largest single tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from lmcore.config import Dtype, ModelConfig


_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
GiB = 1024 ** 3


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device for one training step. ``total`` is the sum of the parts."""

    parameters: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    dtype: str
    gradient_checkpointing: bool

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits

    @property
    def model_states(self) -> int:
        """Everything that does not scale with batch or sequence length."""
        return self.weights + self.gradients + self.optimizer

    def with_cpu_offload(self, model_cfg: ModelConfig) -> "MemoryEstimate":
        """The GPU's share under FSDP2's CPU offload: weights, gradients and optimizer state move to CPU
        memory, and the GPU holds about two blocks' gathered weights (the one computing, the next one
        prefetched) besides the activations and logits. :attr:`model_states` of ``self`` is what the
        CPU then holds."""
        per_param = self.weights / max(1, self.parameters)
        block = (self.parameters - model_cfg.vocab_size * model_cfg.hidden_size) / max(1, model_cfg.num_layers)
        return MemoryEstimate(self.parameters, int(2 * block * per_param), 0, 0, self.activations, self.logits,
                              self.dtype, self.gradient_checkpointing)

    def as_gib(self) -> dict[str, float]:
        return {k: round(getattr(self, k) / GiB, 2)
                for k in ("weights", "gradients", "optimizer", "activations", "logits", "total")}


def estimate_training_memory(model_cfg: ModelConfig, batch_size: int, seq_length: int | None = None,
                             dtype: Dtype = "bf16", gradient_checkpointing: bool = False,
                             param_dtype: Dtype = "fp32", shards: int = 1) -> MemoryEstimate:
    """Estimate training memory for ``batch_size`` sequences of ``seq_length`` tokens.

    ``dtype`` is the compute precision (autocast); ``param_dtype`` how parameters
    are stored (lmcore's trainer keeps fp32 parameters and autocasts). ``shards``
    divides weights, gradients and optimizer states (FSDP over that many devices).
    """
    if dtype not in _BYTES or param_dtype not in _BYTES:
        raise ValueError(f"dtype must be one of {sorted(_BYTES)}, got {dtype!r}/{param_dtype!r}")
    s = int(seq_length or model_cfg.seq_length)
    b = int(batch_size)
    n = model_cfg.num_parameters()
    e = _BYTES[dtype]
    p = _BYTES[param_dtype]
    mixed = dtype != "fp32"

    weights = n * p
    if mixed and p == 4:
        weights += n * e  # autocast's half-precision weight copies, live through forward and backward
    gradients = n * p
    optimizer = 8 * n + (4 * n if p < 4 else 0)
    shards = max(1, int(shards))
    weights, gradients, optimizer = -(-weights // shards), -(-gradients // shards), -(-optimizer // shards)

    per_layer = _layer_activation_bytes(model_cfg, b, s, e)
    residual = 4 * b * s * model_cfg.hidden_size  # fp32 residual stream between blocks
    layers = model_cfg.num_layers
    if gradient_checkpointing:
        activations = layers * residual + per_layer
    else:
        activations = layers * per_layer
    activations += _norm_bytes(b * s * model_cfg.hidden_size, e)  # the final norm
    logits = 2 * 4 * b * s * model_cfg.vocab_size
    return MemoryEstimate(parameters=n, weights=weights, gradients=gradients, optimizer=optimizer,
                          activations=activations, logits=logits, dtype=dtype,
                          gradient_checkpointing=gradient_checkpointing)


def _norm_bytes(sbh: int, e: int) -> int:
    """One RMSNorm: fp32 input and normalised value, plus autocast's copy for the next matmul."""
    return sbh * (4 + 4 + (e if e < 4 else 0))


def _layer_activation_bytes(cfg: ModelConfig, b: int, s: int, e: int) -> int:
    """Bytes autograd keeps for one block's backward (see the module docstring)."""
    h, kv, f = cfg.hidden_size, cfg.kv_heads * cfg.head_dim, cfg.ffn_size
    sb = s * b
    norms = 2 * _norm_bytes(sb * h, e)
    attention = sb * ((h + 2 * kv) + (h + kv) + h) * e  # QKV, rotated Q/K, attention output
    mlp = 4 * sb * f * e  # gate/up, silu(gate), silu(gate) * up
    scores = 0
    if cfg.attention_backend == "math":
        scores = cfg.num_heads * s * s * b * (4 + (e if e < 4 else 0))  # fp32 softmax (+ its half copy)
    return norms + attention + mlp + scores
