"""Classes and their constructor parameters, read from a library's source without importing it.

Validation must be quick and must not import torch, Avalanche or Flower (``clsim validate``
answers in about a second), yet every preset parameter is checked against the constructor it
goes to. So a class is found in the installed package's source: ``importlib`` locates the
package folder without importing it, and ``ast`` follows the ``from .x import ...`` re-exports
of its ``__init__.py`` files to the ``class`` statement. The constructor's parameters (name,
annotation as source text, default) then give each value a type to check with pydantic:

- the annotation, when it names only builtins, ``typing`` and pydantic's ``Field``;
- else the default's type (a number default accepts any number);
- else the type of the value the preset itself ships (EWC's ``ewc_lambda`` has neither).
"""
from __future__ import annotations

import ast
import importlib.util
import typing
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, TypeAdapter, ValidationError

NO_DEFAULT = object()


@dataclass(frozen=True)
class Param:
    name: str
    annotation: str | None  # source text, e.g. "Optional[int]"
    default: Any  # a literal value, NO_DEFAULT, or None for a default that is not a literal


@dataclass(frozen=True)
class ClassInfo:
    module: str  # where the class statement is, e.g. "avalanche.training.plugins.ewc"
    name: str
    params: tuple[Param, ...]  # constructor keywords (``self``, ``*args``, ``**kwargs`` left out)
    ancestors: tuple[str, ...]  # base class names, nearest first


# --------------------------------------------------------------------------- finding source
def _module_file(module: str) -> Path | None:
    """The source file of ``module`` (a package's ``__init__.py``), found without importing it."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: nothing is imported
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    base = Path(spec.origin).parent if spec.submodule_search_locations is None else Path(
        list(spec.submodule_search_locations)[0])
    if spec.submodule_search_locations is None:  # a plain module: it has no submodules
        return Path(spec.origin) if not rest and spec.origin else None
    path = base.joinpath(*rest)
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=256)
def _tree(module: str) -> ast.Module | None:
    path = _module_file(module)
    if path is None:
        return None
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _is_package(module: str) -> bool:
    path = _module_file(module)
    return path is not None and path.name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if _is_package(module) else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _exports(tree: ast.Module) -> set[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            try:
                return set(ast.literal_eval(node.value))
            except ValueError:
                return None
    return None


def find(module: str, name: str, _depth: int = 0) -> tuple[str, ast.ClassDef] | None:
    """The ``class name`` statement that ``from module import name`` would reach, and its module."""
    tree = _tree(module)
    if tree is None or _depth > 12:
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return module, node
    for node in tree.body:
        if not isinstance(node, ast.ImportFrom):
            continue
        source = _absolute(module, node)
        for alias in node.names:
            if alias.name == "*":
                exported = _exports(_tree(source)) if _tree(source) else None
                if exported is not None and name not in exported:
                    continue
                found = find(source, name, _depth + 1)
                if found:
                    return found
            elif (alias.asname or alias.name) == name:
                found = find(source, alias.name, _depth + 1)
                if found:
                    return found
    return None


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):  # Generic[T] and the like
        return _base_name(node.value)
    return None


def _literal(node: ast.expr | None) -> Any:
    if node is None:
        return NO_DEFAULT
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None  # a call or a name: not a value a YAML file could state


def _params(fn: ast.FunctionDef) -> tuple[Param, ...]:
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    out = [Param(p.arg, ast.unparse(p.annotation) if p.annotation else None, _literal(d))
           for p, d in zip(positional, defaults)]
    out += [Param(p.arg, ast.unparse(p.annotation) if p.annotation else None, _literal(d))
            for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    return tuple(p for p in out if p.name not in ("self", "cls"))


@lru_cache(maxsize=256)
def class_info(module: str, name: str) -> ClassInfo | None:
    """``name`` as importable from ``module``: its constructor's parameters and its ancestors.
    A class without an ``__init__`` of its own takes its first base's (as Python does)."""
    found = find(module, name)
    if found is None:
        return None
    where, node = found
    init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    ancestors: list[str] = []
    params: tuple[Param, ...] | None = _params(init) if init else None
    for base in node.bases:
        base_name = _base_name(base)
        if not base_name or base_name in ("object", "ABC", "Generic", "Protocol"):
            continue
        ancestors.append(base_name)
        info = class_info(where, base_name)
        if info is None:
            continue
        ancestors.extend(info.ancestors)
        if params is None:
            params = info.params
    return ClassInfo(where, name, params or (), tuple(dict.fromkeys(ancestors)))


def exported_names(module: str) -> list[str]:
    """``module.__all__`` as written in its source (empty when it has none)."""
    tree = _tree(module)
    return sorted(_exports(tree) or ()) if tree else []


# --------------------------------------------------------------------------- checking values
_NAMESPACE = {**{n: getattr(typing, n) for n in typing.__all__}, "int": int, "float": float, "str": str,
              "bool": bool, "list": list, "dict": dict, "tuple": tuple, "set": set, "None": None,
              "Field": Field}


def _from_value(value: Any) -> Any:
    if isinstance(value, bool):
        return bool
    if isinstance(value, (int, float)):
        return float  # a number: pydantic's float takes ints too
    if isinstance(value, (str, list, dict)):
        return type(value)
    return None


@lru_cache(maxsize=512)
def _adapter(annotation: str) -> TypeAdapter | None:
    try:
        kind = eval(annotation, {"__builtins__": {}}, _NAMESPACE)  # noqa: S307 (names of typing/builtins only)
        return TypeAdapter(kind, config={"strict": True} if kind in (int, str, bool) else None)
    except Exception:  # a library type (torch.device, a buffer class): not checkable here
        return None


def check(param: Param, value: Any, shipped: Any = NO_DEFAULT) -> str | None:
    """Why ``value`` does not fit ``param`` (None when it does, or when nothing says what fits)."""
    adapter = _adapter(param.annotation) if param.annotation else None
    if adapter is None:
        for example in (param.default, shipped):
            kind = None if example is NO_DEFAULT or example is None else _from_value(example)
            if kind is not None:
                adapter = TypeAdapter(kind, config={"strict": True} if kind in (str, bool) else None)
                break
    if adapter is None:
        return None
    if isinstance(value, bool) and adapter.core_schema.get("type") in ("float", "int"):
        return f"expected a number, got {value!r}"
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        msg = exc.errors(include_url=False)[0]["msg"]
        return f"{msg[0].lower()}{msg[1:]} (got {value!r})"
    return None
