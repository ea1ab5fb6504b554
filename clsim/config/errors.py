"""Errors a user can fix, and the one strict pydantic base every schema builds on.

Every problem with an input becomes a ``ConfigError`` that names the file, the field path and
what was expected, so the CLI prints one line and exits 2 instead of a traceback.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(Exception):
    """A bad input: ``file: field: expected ...`` — printed as one line by the CLI."""

    def __init__(self, file: str | Path | None, field: str | None, message: str):
        self.file, self.field, self.message = file, field, message
        parts = [str(p) for p in (file, field) if p]
        super().__init__(": ".join(parts + [message]))

    def __reduce__(self):  # survives pickling, e.g. raised inside a Ray actor
        return type(self), (self.file, self.field, self.message)


class Strict(BaseModel):
    """Unknown keys are errors (a typo never passes silently); values never change after checking."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# pydantic's location parts that are not field names: union tags and validator kinds
_TAGS = ("tweets", "synthetic", "file", "function-after", "function-before")


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TAGS:
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _explain(err: dict) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in ("missing", "union_tag_not_found"):
        return "required field is missing"
    if kind == "literal_error":
        return msg.replace("Input should be", "expected one of") + f" (got {err.get('input')!r})"
    if kind == "union_tag_invalid":  # e.g. stream.source: reddit
        ctx = err.get("ctx", {})
        return f"expected one of {ctx.get('expected_tags')} (got {ctx.get('tag')!r})"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    got = err.get("input")
    if kind not in ("value_error",) and not isinstance(got, (dict, list)):
        msg += f" (got {got!r})"
    return msg


def validation_to_error(file: str | Path | None, exc: ValidationError, prefix: str = "") -> ConfigError:
    """The first problem pydantic found, as a ConfigError (``prefix`` puts the path under a field)."""
    err = exc.errors(include_url=False)[0]
    path = _field_path(err["loc"])
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):  # the discriminator is the field at fault
        tag = str(err.get("ctx", {}).get("discriminator", "")).strip("'")
        path = f"{path}.{tag}" if path != "(top level)" else tag
    if prefix:
        path = prefix if path == "(top level)" else f"{prefix}.{path}"
    more = len(exc.errors()) - 1
    message = _explain(err) + (f" (+{more} more problem{'s' * (more > 1)})" if more else "")
    return ConfigError(file, path, message)


def read_yaml_mapping(path: str | Path) -> dict:
    """Read a YAML file that must hold a mapping; every failure is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, None, "file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, where, f"YAML syntax error: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, "not UTF-8 text") from None
    if data is None:
        raise ConfigError(path, None, "file is empty; expected a YAML mapping")
    if not isinstance(data, dict):
        raise ConfigError(path, None, f"expected a YAML mapping at the top level, got {type(data).__name__}")
    return data
