"""The LLaMA-style decoder: ``Transformer(ModelConfig(...))``.

Modules, in the order data flows: ``norm`` (RMSNorm), ``rope`` (rotary
positions), ``attention_backends`` (flash / sdpa / math kernels and masks),
``attention`` (GQA self-attention), ``mlp`` (SwiGLU/GeGLU), ``block``,
``transformer`` (the model), ``kv_cache`` and ``generation`` (``model.generate``).
Hugging Face name mapping lives in ``lmcore.hf``, nowhere else.
"""

from lmcore.model.generation import sample_next_token
from lmcore.model.kv_cache import KVCache
from lmcore.model.transformer import Transformer

__all__ = ["KVCache", "Transformer", "sample_next_token"]
