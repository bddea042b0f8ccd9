"""The registered model as an MLflow pyfunc: prompts in, generated text out.

Why a pyfunc over the model folder instead of ``mlflow.pytorch``: MLflow 3's
pytorch flavour exports with ``torch.export``, which fixes the sequence
length of its input example, while a language model is called with any
prompt length and a KV cache. So the artifact is simply the model folder
(``models/<id>/`` of :mod:`lmcore.models_dir`: ``model.safetensors``,
``config.json``, tokenizer files, ``metadata.json``; an HF export folder also
works) and :class:`LmcoreTextGenerator` loads it with lmcore's own code,
which is shipped inside the MLflow model (``code_paths``) so that
``mlflow.pyfunc.load_model("models:/NAME@champion").predict(["ROMEO:"])``
works wherever the pinned requirements are installed.

Requirements are given explicitly (:func:`pip_requirements`): inferring them
costs about 2.5 s per ``log_model`` here.
"""

from __future__ import annotations

import json
import shutil
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import warnings

import mlflow.pyfunc
import pandas as pd

MODEL_ARTIFACT = "model_dir"
DEFAULT_PARAMS: dict[str, Any] = {"max_new_tokens": 64, "temperature": 0.8, "top_k": 50, "top_p": 1.0,
                                  "seed": -1}
_SKIP_FILES = {"optimizer.pt", "scheduler.json"}  # training state: not needed to generate


def load_model_folder(model_dir: str | Path):
    """``(model, tokenizer)`` from a ModelManager folder or a Hugging Face export folder."""
    from lmcore.data.tokenizer import LmcoreTokenizer

    model_dir = Path(model_dir)
    if (model_dir / "metadata.json").is_file():
        from lmcore.models_dir import ModelManager

        # MLflow copied the folder itself; the sha256 check is for folders people copy by hand
        model, tokenizer, _ = ModelManager(model_dir.parent).load_for_inference(model_dir.name, verify=False)
    else:
        from lmcore.hf.convert import load_hf

        model, tokenizer = load_hf(model_dir), LmcoreTokenizer.load(model_dir)
    if tokenizer is None:
        raise FileNotFoundError(f"{model_dir}: no tokenizer.json; a registered model needs its tokenizer")
    return model.eval(), tokenizer


def prompts_from(model_input: Any) -> list[str]:
    """Accept what pyfunc callers pass: a string, a list of strings, a DataFrame/Series column, an array."""
    if isinstance(model_input, str):
        return [model_input]
    if hasattr(model_input, "columns"):  # pandas DataFrame: the first column holds the prompts
        model_input = model_input[model_input.columns[0]]
    if hasattr(model_input, "tolist"):
        model_input = model_input.tolist()
    out = []
    for item in model_input:
        if isinstance(item, dict):
            item = item.get("prompt", next(iter(item.values()), ""))
        elif isinstance(item, (list, tuple)):
            item = item[0] if item else ""
        out.append("" if item is None else str(item))
    return out


class LmcoreTextGenerator(mlflow.pyfunc.PythonModel):
    """Text continuation with an lmcore model; params: max_new_tokens, temperature, top_k, top_p, seed.

    ``temperature`` 0 is greedy; ``top_k`` 0 and ``top_p`` 1.0 turn those filters off;
    ``seed`` >= 0 makes sampling reproducible. Each output is the continuation
    only (the prompt is not repeated), cut at the end-of-text token.
    """

    def load_context(self, context) -> None:
        self.model, self.tokenizer = load_model_folder(context.artifacts[MODEL_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        # The DataFrame hint tells MLflow to validate against the logged signature (a list of
        # strings arrives as a one-column frame); direct callers may pass a list or a string.
        import torch

        p = {**DEFAULT_PARAMS, **{k: v for k, v in (params or {}).items() if v is not None}}
        prompts = prompts_from(model_input)
        if not prompts:
            return []
        tok = self.tokenizer
        bos = [tok.bos_id] if tok.bos_id is not None else []
        ids = [bos + tok.encode(text) for text in prompts]
        generator = torch.Generator().manual_seed(int(p["seed"])) if int(p["seed"]) >= 0 else None
        new = self.model.generate(ids, max_new_tokens=int(p["max_new_tokens"]), temperature=float(p["temperature"]),
                                  top_k=int(p["top_k"]) or None, top_p=float(p["top_p"]),
                                  stop_tokens=[tok.eos_id], generator=generator, pad_token_id=tok.pad_id or 0)
        return [tok.decode(row) for row in new]


def signature():
    """String prompts in, strings out, sampling settings as params."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    types = {"max_new_tokens": "long", "temperature": "double", "top_k": "long", "top_p": "double", "seed": "long"}
    return ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema([ColSpec("string")]),
                          params=ParamSchema([ParamSpec(k, types[k], v) for k, v in DEFAULT_PARAMS.items()]))


def pip_requirements() -> list[str]:
    """Pinned to what is installed here (no inference)."""
    pins = []
    for name in ("mlflow", "torch", "tokenizers", "safetensors", "numpy", "pydantic", "pyyaml", "jinja2"):
        try:
            version = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pins.append(name)
            continue
        pins.append(f"{name}=={version.split('+')[0]}")
    return pins


def stage_model_folder(model_dir: str | Path, dest_root: str | Path) -> Path:
    """Copy of ``model_dir`` under ``dest_root`` without optimizer/scheduler state (what the pyfunc ships)."""
    model_dir = Path(model_dir)
    dest = Path(dest_root) / model_dir.name
    dest.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        if item.is_file() and item.name not in _SKIP_FILES:
            shutil.copy2(item, dest / item.name)
    return dest


def lmcore_code_path() -> str:
    """The lmcore package folder, shipped with the MLflow model."""
    import lmcore

    return str(Path(lmcore.__file__).parent)


def log_text_generator(model_dir: str | Path, name: str = "model", **kwargs: Any):
    """``mlflow.pyfunc.log_model`` of :class:`LmcoreTextGenerator` over ``model_dir``; returns ModelInfo.

    Uses the fluent API (active run / ``model_id`` in ``kwargs``); the tracking URI must be set.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lmcore-pyfunc-") as tmp:
        staged = stage_model_folder(model_dir, tmp)
        meta = {}
        if (staged / "metadata.json").is_file():
            meta = json.loads((staged / "metadata.json").read_text(encoding="utf-8"))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example was not provided.*")
            return mlflow.pyfunc.log_model(
                name=name, python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
                artifacts={MODEL_ARTIFACT: str(staged)},
                code_paths=[lmcore_code_path()], pip_requirements=pip_requirements(), signature=signature(),
                metadata={"lmcore_model_id": meta.get("id", Path(model_dir).name),
                          "parameters": meta.get("parameters")}, **kwargs)
