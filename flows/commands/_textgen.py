"""Text in, text out for the CLI: prompt completion and one chat turn (no register(); not a command).

Why here: ``generate``, ``chat`` and ``run`` (its closing sample) share these
two calls; torch is imported inside them so the CLI starts fast.
"""

from __future__ import annotations

from typing import Any, Sequence


def sampling_args(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None,
                  seed: int | None) -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k or None,
            "top_p": top_p, "generator": generator}


def complete(model: Any, tokenizer: Any, prompt: str, **sampling: Any) -> str:
    """The model's continuation of ``prompt`` (prompt not included), stopping at end of text."""
    ids = ([tokenizer.bos_id] if tokenizer.bos_id is not None else []) + tokenizer.encode(prompt)
    new = model.generate([ids], stop_tokens=[tokenizer.eos_id], **sampling)[0]
    return tokenizer.decode(new)


def chat_reply(model: Any, tokenizer: Any, messages: Sequence[dict], **sampling: Any) -> str:
    """The assistant's next turn after ``messages``, rendered through the chat template."""
    ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
    new = model.generate([ids], stop_tokens=[tokenizer.end_of_turn_id, tokenizer.eos_id], **sampling)[0]
    return tokenizer.decode(new).strip()
