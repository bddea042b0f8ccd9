"""Dotted config keys: which exist, the closest one to a typo, their bounds, ``--set`` overrides, and
pydantic's errors as one :class:`~lmcore.errors.ConfigError` that names the key.

Why its own module: these walk a pydantic model tree, whichever it is (``root``), so the config
sections in :mod:`lmcore.config` stay a plain list of typed fields.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Optional, get_args

import yaml
from pydantic import BaseModel, ValidationError

from lmcore.errors import ConfigError

_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def section_of(annotation: Any) -> Optional[type[BaseModel]]:
    """The model class of a field that is a section: ``Section`` or ``Optional[Section]``; else None."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def valid_keys(root: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of the model tree ``root`` (sections and their fields)."""
    keys = []
    for name, field in root.model_fields.items():
        path = f"{prefix}{name}"
        keys.append(path)
        section = section_of(field.annotation)
        if section is not None:
            keys.extend(valid_keys(section, path + "."))
    return keys


# Names people type for a key, from other trainers' configs.
COMMON_NAMES = {"lr": "learning_rate", "epochs": "max_epochs", "num_epochs": "max_epochs", "steps": "max_steps",
                "num_train_epochs": "max_epochs", "batch": "batch_size", "per_device_train_batch_size": "batch_size",
                "warmup": "warmup_steps", "grad_accum": "gradient_accumulation_steps", "clip": "max_grad_norm",
                "precision": "dtype", "compile": "use_compile", "n_layer": "num_layers", "n_head": "num_heads",
                "n_embd": "hidden_size", "block_size": "seq_length", "context_length": "seq_length"}


def suggest_key(root: type[BaseModel], bad_path: str) -> Optional[str]:
    """Closest valid dotted key to ``bad_path``: a common other name for the key, a close name in the
    same section, a close field name anywhere, then the closest key of the same depth."""
    keys = valid_keys(root)
    parent = bad_path.rsplit(".", 1)[0] if "." in bad_path else ""
    leaf = bad_path.rsplit(".", 1)[-1]
    siblings = [k for k in keys if (k.rsplit(".", 1)[0] if "." in k else "") == parent]
    by_leaf = {k.rsplit(".", 1)[-1]: k for k in reversed(keys)}
    common = COMMON_NAMES.get(leaf.lower())
    if common:
        same_section = [k for k in siblings if k.rsplit(".", 1)[-1] == common]
        return same_section[0] if same_section else by_leaf.get(common)
    close = difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1] for k in siblings], n=1, cutoff=0.5)
    if close:
        return f"{parent}.{close[0]}" if parent else close[0]
    close = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.75)
    if close:
        return by_leaf[close[0]]
    depth = bad_path.count(".")
    close = difflib.get_close_matches(bad_path, [k for k in keys if k.count(".") == depth], n=1, cutoff=0.6)
    return close[0] if close else None


def allowed_range(root: type[BaseModel], path: str) -> Optional[str]:
    """The numeric bounds of the field at dotted ``path`` (e.g. ``'> 0 and <= 1.0'``), or None."""
    model: Any = root
    field = None
    for part in path.split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        field = fields[part]
        model = section_of(field.annotation)
    if field is None:
        return None
    bounds = []
    for meta in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(meta, attr, None)
            if value is not None:
                bounds.append(f"{sign} {value}")
    return " and ".join(bounds) or None


def translate(exc: ValidationError, root: type[BaseModel], source: Callable[[str], Optional[str]] = lambda _: None,
              prefix: str = "") -> ConfigError:
    """pydantic's errors -> one ConfigError naming each dotted key, with a suggestion or the allowed range.

    ``source(key)`` says where a key's value came from (the YAML file, or ``--set key=value``), so the
    message blames the right one.
    """
    messages = []
    first_key = None
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        path = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        first_key = first_key or path
        if err["type"] == "extra_forbidden":
            hint = suggest_key(root, path)
            msg = f"unknown key '{path}'" + (f"; did you mean '{hint}'?" if hint else "")
        else:
            got = err.get("input")
            text = err["msg"].removeprefix("Value error, ")
            msg = f"{path}: {text}" + ("" if isinstance(got, dict) else f" (got {got!r})") if path else text
            allowed = allowed_range(root, path)
            if allowed and err["type"] in _RANGE_ERRORS:
                msg += f"; allowed range: {allowed}"
        where = source(path)
        messages.append(f"{where}: {msg}" if where else msg)
    error = ConfigError("; ".join(messages), key=None) if messages else ConfigError(str(exc))
    error.key = first_key  # set after construction: the message already names the key
    return error


def apply_override(root: type[BaseModel], raw: dict[str, Any], item: str, label: str = "--set") -> str:
    """Apply one ``key.path=value`` to the raw config dict; the value is parsed as YAML (``1e-3``,
    ``true``, ``[a, b]``). Returns the key. An unknown key is a ConfigError with the closest one;
    errors name the override as ``label`` (``--set`` on the command line, ``overrides`` in a deployment)."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"{label} {item!r} must look like key.path=value")
    path, _, text = item.partition("=")
    path = path.strip()
    parts = path.split(".")
    if path not in set(valid_keys(root)):
        hint = suggest_key(root, path)
        error = ConfigError(f"{label} {item!r}: unknown key '{path}'" + (f"; did you mean '{hint}'?" if hint else ""))
        error.key = path
        raise error
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return path
