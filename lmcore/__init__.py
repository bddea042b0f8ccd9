"""lmcore: train LLaMA-style language models from raw JSONL.

The library layer: model, data, tokenizer, trainer, checkpoints, hardware,
tracking. It never imports Prefect; ``tasks/`` and ``flows/`` wrap it.
"""

__version__ = "0.1.0"

__all__ = ["ModelManager", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import lmcore` stays cheap (no torch/mlflow import at start-up).
    if name == "ModelManager":
        from lmcore.models_dir import ModelManager

        return ModelManager
    raise AttributeError(name)
