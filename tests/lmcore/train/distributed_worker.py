"""torchrun worker for test_distributed.py: ``distributed_worker.py MODE OUT.json``.

``fsdp``: wrap a tiny Transformer with FSDP2, train 4 updates of 2 micro-batches on fixed
random batches (each rank takes its slice of the global batch), normalise by the global
target-token count, and write the losses, whether parameters are sharded, and the keys of
the gathered full state dict. ``fail``: rank 1 raises, to test error reporting.
"""

from __future__ import annotations

import json
import os
import sys

import torch

from lmcore.config import ModelConfig
from lmcore.train.distributed import (
    DistributedContext,
    full_state_dict,
    global_target_tokens,
    gradient_scale,
    is_sharded,
    local_tensor,
    wrap_model,
)

GLOBAL_BATCH, SEQ, VOCAB, UPDATES, ACCUM = 4, 16, 64, 4, 2


def build_model():
    from lmcore.model import Transformer

    torch.manual_seed(11)
    return Transformer(ModelConfig(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=2, seq_length=SEQ))


def batches():
    g = torch.Generator().manual_seed(5)
    for _ in range(UPDATES * ACCUM):
        ids = torch.randint(0, VOCAB, (GLOBAL_BATCH, SEQ + 1), generator=g)
        targets = ids[:, 1:].clone()
        targets[torch.rand(targets.shape, generator=g) < 0.3] = -100  # uneven targets per rank
        yield ids[:, :-1], targets


def train(ctx, strategy: str) -> tuple[list[float], torch.nn.Module]:
    torch.set_num_threads(1)
    model = build_model()
    wrapped = wrap_model(model, strategy, ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    per_rank = GLOBAL_BATCH // ctx.world_size
    losses = []
    stream = list(batches())
    for update in range(UPDATES):
        group = stream[update * ACCUM:(update + 1) * ACCUM]
        mine = [(ids[ctx.rank * per_rank:(ctx.rank + 1) * per_rank], tgt[ctx.rank * per_rank:(ctx.rank + 1) * per_rank])
                for ids, tgt in group]
        total = global_target_tokens(sum(int((t != -100).sum()) for _, t in mine), ctx)
        loss_sum = torch.zeros(())
        for i, (ids, tgt) in enumerate(mine):
            with ctx.no_sync(wrapped, skip_sync=i < ACCUM - 1):
                logits = wrapped(ids)
                nats = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(),
                                                         ignore_index=-100, reduction="sum")
                (nats * gradient_scale(total, ctx)).backward()
            loss_sum += nats.detach()
        local_tensor(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(ctx.all_reduce_sum(loss_sum)) / total)
    return losses, wrapped


def main(mode: str, out: str) -> None:
    if mode == "fail":  # before the process group: the failure path should cost only the start-up
        if os.environ["RANK"] == "1":
            raise RuntimeError("rank 1 refuses to train")
        return
    with DistributedContext.from_env() as ctx:
        losses, model = train(ctx, mode)
        model_state = full_state_dict(model)  # a collective under FSDP: every rank calls it
        if ctx.is_main:
            with open(out, "w") as fh:
                json.dump({"losses": losses, "sharded": is_sharded(model), "state_dict_keys": sorted(model_state)}, fh)
        ctx.barrier()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
