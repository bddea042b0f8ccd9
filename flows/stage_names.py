"""The pipeline's stages, in order: one list for the flows, the CLI's argument checks and its help.

Its own module because the CLI checks a stage name before Prefect (which ``flows.pipeline``
imports) is loaded.
"""

STAGES = ("validate", "shard", "tokenizer", "pretokenize", "train", "evaluate", "register")
STAGE_HELP = ", ".join(STAGES[:-1]) + " or " + STAGES[-1]
