"""The training engine, split by concern.

``trainer`` (``run_train`` and the ``fit`` loop), ``engine`` (one optimizer update and the
token-normalised loss), ``optim`` (AdamW groups), ``schedules`` (learning-rate curves),
``precision`` (dtype, autocast, compile fallback), ``checkpoint`` (atomic, sha256-verified
directories), ``state`` (RNG and counters for exact resume), ``callbacks`` (logging, progress
bar), ``throughput`` (FLOPs and MFU), ``context`` (rank/device seam), ``distributed`` and
``launch`` (DDP/FSDP under torchrun).  Nothing is imported here, so ``import lmcore.train``
stays cheap.
"""
