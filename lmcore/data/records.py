"""The canonical record, and turning one raw JSONL line into it (or into a reason it cannot be).

Every input line gets exactly one verdict from :func:`parse_line`: a
:class:`Record`, or a rejection reason from :data:`REASONS` with a detail
string. The validate and shard stages both call it (through
``lmcore.data.verdicts``), so the report and the shards never disagree.

What is accepted (be generous with messy dumps, strict about what reaches training):

* Text records: the first field of ``data.text_fields`` that is present and
  not ``null`` (default ``text, content, message, body, output``). A string is
  used; any other type is ``wrong_type``. Text is normalised: ``\\r\\n`` and
  lone ``\\r`` become ``\\n`` and surrounding whitespace is stripped.
* Chat records: a ``messages`` list of ``{role, content}`` or a ShareGPT
  ``conversations`` list of ``{from, value}`` (checked before text fields).
  Roles map to system/user/assistant/tool (case-insensitive): the user's names
  (``human``, ``user``, ``prompter`` ...) -> user; the assistants' names, including
  the model names chat exports use as speakers (``gpt``, ``chatgpt``, ``bing``,
  ``bard``, ``claude``, ``gemini`` ...) -> assistant; ``system`` -> system;
  ``tool``/``function``/``observation``/``ipython`` -> tool. A speaker name not in
  the table never loses the conversation: the turn takes the role the dialogue
  expects there (assistant after a user or tool turn, else user), and the name is
  counted in the validation report (``unknown_roles``). Content may be a string, or an OpenAI-style list of parts
  whose ``text`` parts are joined. An assistant turn whose content is ``null``
  or missing but that carries ``tool_calls`` (or ``function_call``) keeps the
  calls as compact JSON text, so tool use is learned rather than dropped.
  Each content is normalised like text; empty turns are dropped; a chat whose
  turns are all blank is ``empty``. Any sequence of roles is accepted (a lone
  system turn, no assistant turn, two user turns in a row). Anything else (not
  a list, an empty list, a turn that is not an object, unknown or missing role,
  missing/non-string content without tool calls) is ``invalid_chat``.
* ``data.use_conversation_format`` false: a chat is flattened to text, one
  ``"<role>: <content>"`` block per turn joined by a blank line (``\\n\\n``).

Record id: the first 16 hex digits of blake2b over the canonical content
(kind + text, or kind + canonical messages JSON), so exact duplicates share
an id and dedupe keeps only 8 bytes per record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import orjson

from lmcore.data.formats import OversizeLine

# Reasons a line is rejected. INVALID ones count toward data.max_invalid_fraction;
# FILTERED ones are well-formed data the pipeline chooses not to use.
INVALID_REASONS = ("invalid_utf8", "malformed_json", "not_object", "no_text_field", "wrong_type", "invalid_chat",
                   "line_too_long")
FILTERED_REASONS = ("empty", "too_short", "duplicate")
REASONS = INVALID_REASONS + FILTERED_REASONS
BLANK = "blank"  # a blank line: counted, neither valid nor rejected

USER_NAMES = ("user", "human", "prompter", "person", "customer", "you", "me", "question")
ASSISTANT_NAMES = ("assistant", "gpt", "chatgpt", "gpt-3.5", "gpt-4", "gpt4", "gpt-4o", "openai", "bot", "ai",
                   "model", "bing", "bard", "gemini", "claude", "llama", "mistral", "vicuna", "alpaca", "copilot",
                   "character", "answer", "response")
ROLE_ALIASES = {
    "system": "system",
    **{name: "user" for name in USER_NAMES},
    **{name: "assistant" for name in ASSISTANT_NAMES},
    "tool": "tool", "function": "tool", "observation": "tool", "ipython": "tool",
}
CHAT_FIELDS = (("messages", "role", "content"), ("conversations", "from", "value"))


@dataclass(slots=True)
class Record:
    """One usable example, as stored in a Parquet shard row (``RECORD_SCHEMA``)."""

    id: str
    digest: bytes  # 8 bytes; the id is its hex
    kind: str  # "text" | "chat"
    text: Optional[str]
    messages: Optional[str]  # canonical JSON [{"role","content"}]
    source: str
    line: int
    chars: int  # characters of content (text, or the sum of turn contents)
    payload: bytes  # UTF-8 of text (or messages): hashed for the id, written to shards, bounded by shard_max_bytes
    unknown_roles: tuple[str, ...] = ()  # speaker names not in ROLE_ALIASES, each turn once (for the report)

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "text": self.text, "messages": self.messages,
                "source": self.source, "line": self.line}


@dataclass(slots=True)
class Rejection:
    reason: str
    detail: str


class LineParser:
    """Parses raw lines with one data config's rules; ``parse(raw, source, line)`` -> Record | Rejection | None."""

    def __init__(self, text_fields: Sequence[str], use_conversation_format: bool, min_text_length: int):
        self.text_fields = tuple(text_fields)
        self.keep_chat = use_conversation_format
        self.min_length = min_text_length

    def parse(self, raw: bytes, source: str, line: int) -> Record | Rejection | None:
        """``None`` for a blank line."""
        if type(raw) is OversizeLine:
            return Rejection("line_too_long", f"{raw.size:,} bytes > the {raw.limit:,}-byte line limit "
                                              "(not JSON Lines?); skipped unread")
        if not raw or raw.isspace():
            return None
        try:
            obj = orjson.loads(raw)  # validates UTF-8 strictly; on failure, find out which problem it was
        except orjson.JSONDecodeError as exc:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                return Rejection("invalid_utf8", f"byte 0x{raw[bad.start]:02x} at offset {bad.start}: {bad.reason}")
            return Rejection("malformed_json", str(exc))
        if not isinstance(obj, dict):
            return Rejection("not_object", f"top-level JSON {type(obj).__name__}, expected an object")
        for field, role_key, content_key in CHAT_FIELDS:
            turns = obj.get(field)
            if turns is not None:
                return self._chat(turns, field, role_key, content_key, source, line)
        for field in self.text_fields:
            value = obj.get(field)
            if value is None:
                continue
            if not isinstance(value, str):
                return Rejection("wrong_type", f"field '{field}' is {_json_type(value)}, expected a string")
            return self._text(normalise_text(value), source, line)
        return Rejection("no_text_field", f"none of {list(self.text_fields)} or messages/conversations present"
                                          f" (keys: {sorted(obj)[:8]})")

    # ------------------------------------------------------------------ builders
    def _text(self, text: str, source: str, line: int, what: str = "text") -> Record | Rejection:
        if not text:
            return Rejection("empty", f"{what} is empty or whitespace")
        if len(text) < self.min_length:
            return Rejection("too_short", f"{len(text)} characters < data.min_text_length {self.min_length}")
        payload = text.encode("utf-8")
        digest = content_digest("text", payload)
        return Record(digest.hex(), digest, "text", text, None, source, line, len(text), payload)

    def _chat(self, turns: Any, field: str, role_key: str, content_key: str,
              source: str, line: int) -> Record | Rejection:
        unknown: list[str] = []
        messages = parse_turns(turns, field, role_key, content_key, unknown)
        if isinstance(messages, Rejection):
            return messages
        if not self.keep_chat:
            record = self._text(flatten_chat(messages), source, line, what="conversation")
            if isinstance(record, Record):
                record.unknown_roles = tuple(unknown)
            return record
        chars = sum(len(m["content"]) for m in messages)
        if not messages:
            return Rejection("empty", f"'{field}' has no non-empty turn")
        if chars < self.min_length:
            return Rejection("too_short", f"{chars} characters < data.min_text_length {self.min_length}")
        payload = orjson.dumps(messages)
        digest = content_digest("chat", payload)
        return Record(digest.hex(), digest, "chat", None, payload.decode("utf-8"), source, line, chars, payload,
                      tuple(unknown))


def parse_turns(turns: Any, field: str, role_key: str, content_key: str,
                unknown: list[str] | None = None) -> list[dict[str, str]] | Rejection:
    """Canonical ``[{"role","content"}]`` (empty turns dropped) or an ``invalid_chat`` rejection.

    Speaker names not in :data:`ROLE_ALIASES` take the role the dialogue expects (see the module
    doc) and are appended to ``unknown``.
    """
    if not isinstance(turns, list):
        return Rejection("invalid_chat", f"'{field}' is {_json_type(turns)}, expected a list")
    if not turns:
        return Rejection("invalid_chat", f"'{field}' is an empty list")
    out: list[dict[str, str]] = []
    previous: str | None = None
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            return Rejection("invalid_chat", f"{field}[{i}] is {_json_type(turn)}, expected an object")
        raw_role = turn.get(role_key, turn.get("role" if role_key == "from" else "from"))
        if not isinstance(raw_role, str) or not raw_role.strip():
            return Rejection("invalid_chat", f"{field}[{i}] has a missing or non-string role {raw_role!r}")
        role = ROLE_ALIASES.get(raw_role.strip().lower())
        if role is None:
            role = "assistant" if previous in ("user", "tool") else "user"
            if unknown is not None:
                unknown.append(raw_role.strip()[:40])
        previous = role
        content = turn.get(content_key, turn.get("content" if content_key == "value" else "value"))
        text = _content_text(content)
        if text is None and content is None and role == "assistant":
            calls = turn.get("tool_calls") or turn.get("function_call")
            if calls:
                text = orjson.dumps(calls).decode("utf-8")
        if text is None:
            return Rejection("invalid_chat", f"{field}[{i}] ({role}) content is {_json_type(content)}, expected a string")
        text = normalise_text(text)
        if text:
            out.append({"role": role, "content": text})
    return out


def _content_text(content: Any) -> Optional[str]:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:  # OpenAI content parts
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
        if parts and all(isinstance(p, str) for p in parts):
            return "\n".join(parts)
    return None


def normalise_text(text: str) -> str:
    """Unix newlines, no surrounding whitespace."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.strip()


def flatten_chat(messages: list[dict[str, str]]) -> str:
    """A chat as plain text: ``"user: hi\\n\\nassistant: hello"``."""
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


_DIGEST_PREFIX = {kind: hashlib.blake2b(kind.encode("ascii") + b"\0", digest_size=8) for kind in ("text", "chat")}


def content_digest(kind: str, payload: bytes) -> bytes:
    """8-byte blake2b of ``kind + "\\0" + payload`` (canonical UTF-8 content); its hex is the record id."""
    h = _DIGEST_PREFIX[kind].copy()
    h.update(payload)
    return h.digest()


def escape_raw(raw: bytes, limit: Optional[int] = None) -> str:
    """A raw line as text for reports: invalid bytes as ``\\xNN`` escapes, optionally cut to ``limit`` chars."""
    text = raw.decode("utf-8", "backslashreplace")
    if limit is not None and len(text) > limit:
        return text[:limit] + f"... [{len(text) - limit} more characters]"
    return text


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
