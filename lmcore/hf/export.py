"""Export a registered model folder to a Hugging Face transformers folder.

Why a separate module from :mod:`lmcore.hf`: ``lmcore.hf`` maps one
in-memory model to and from the ``LlamaForCausalLM`` layout; this module
works at the level of a whole ``models/<id>/`` folder (weights, config,
tokenizer, metadata), which is what ``lmcore export-hf ID OUT_DIR`` and the
register stage hand over. The result loads with
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``
(chat template in ``tokenizer_config.json``, ``generation_config.json`` with
bos/eos/pad), and keeps lmcore's ``metadata.json`` as ``lmcore_metadata.json``
so the lineage travels with the copy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lmcore.errors import CheckpointError, UsageError


def export_for_hf(model_dir: str | Path, out_dir: str | Path, verify: bool = True) -> Path:
    """Write ``model_dir`` (a ModelManager folder) as a transformers folder in ``out_dir``; returns it.

    ``out_dir`` must be empty or absent. ``verify`` checks the sha256 of every
    file against ``metadata.json`` first.
    """
    from lmcore.hf.convert import save_hf
    from lmcore.models_dir import ModelManager

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError("exists and is not a folder; choose a new folder to export into", path=str(out_dir))
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UsageError("output folder is not empty; choose a new folder", path=str(out_dir))
    model, tokenizer, meta = ModelManager(model_dir.parent).load_for_inference(model_dir.name, verify=verify)
    if tokenizer is None:
        raise CheckpointError("no tokenizer.json: a Hugging Face export needs the tokenizer", path=str(model_dir))
    save_hf(model, out_dir, tokenizer)
    lineage = {k: v for k, v in meta.items() if k != "files"}
    (out_dir / "lmcore_metadata.json").write_text(json.dumps(lineage, indent=2, default=str) + "\n",
                                                  encoding="utf-8")
    readme = model_dir / "README.md"
    if readme.is_file():
        shutil.copy2(readme, out_dir / "README.md")
    return out_dir
