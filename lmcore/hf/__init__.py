"""Hugging Face interop: ``convert`` maps one model to and from ``LlamaForCausalLM``; ``export`` writes
a whole registered model folder as a transformers folder.

``from lmcore.hf import save_hf, load_hf`` is the public API (see ``convert``).
"""

from lmcore.hf.convert import load_hf, save_hf

__all__ = ["load_hf", "save_hf"]
