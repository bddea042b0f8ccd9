"""Training, split by concern.

``stage`` (``run_train``: builds the run, resumes, calls the loop), ``loop`` (``fit``: updates,
limits, evaluation, checkpoints, a graceful stop), ``trainer`` (``Trainer``: one optimizer update
and the token-normalised loss), ``optim`` (AdamW, Muon + AdamW), ``schedules`` (learning-rate
curves), ``precision`` (dtype and autocast), ``compile`` (``torch.compile`` with a fallback),
``checkpoint`` (atomic, sha256-verified directories), ``state`` (RNG and counters for exact
resume), ``callbacks`` (logging, progress bar), ``interrupt`` (SIGINT/SIGTERM: finish the step,
checkpoint, stop), ``context`` (rank/device seam), ``distributed`` (DDP/FSDP under torchrun),
``launch`` and ``worker`` (the parent and child sides of a torchrun run).  Nothing is imported
here, so ``import lmcore.train`` stays cheap.
"""
