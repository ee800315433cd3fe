"""The public API: exported names exist, are documented, and every public module says what it
exports (in the style of httpx's ``test_exported_members``)."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import inspect
import pkgutil
import types
import typing
from types import ModuleType

import pytest

import serversync

PUBLIC_MODULES = (
    "serversync",
    "serversync.model",
    "serversync.ports",
    "serversync.testing",
    "serversync.errors",
    "serversync.settings",
    "serversync.sql",
    "serversync.act",
)

_TYPE_ALIAS_TYPE: type | None = getattr(typing, "TypeAliasType", None)


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


def _exported(name: str) -> list[str]:
    exported: object = getattr(_module(name), "__all__", None)
    assert isinstance(exported, list | tuple), f"{name} has no __all__ list"
    assert all(isinstance(item, str) for item in exported)
    return [str(item) for item in exported]


def _is_type_alias(obj: object) -> bool:
    """Union aliases (``A | B``), ``typing.Union`` aliases, NewTypes and PEP 695 aliases."""
    if isinstance(obj, types.UnionType | typing.NewType):
        return True
    if _TYPE_ALIAS_TYPE is not None and isinstance(obj, _TYPE_ALIAS_TYPE):
        return True
    return typing.get_origin(obj) is typing.Union


def _documented_members() -> list[tuple[str, str, object]]:
    members: list[tuple[str, str, object]] = []
    for module_name in PUBLIC_MODULES:
        module = _module(module_name)
        for name in _exported(module_name):
            obj = getattr(module, name, None)
            if _is_type_alias(obj):
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                members.append((module_name, name, obj))
    return members


def _public_submodules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(serversync.__path__, prefix="serversync."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_exported_name_exists(module_name: str) -> None:
    module = _module(module_name)
    missing = [name for name in _exported(module_name) if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_has_no_duplicates(module_name: str) -> None:
    exported = _exported(module_name)
    duplicates = sorted({name for name in exported if exported.count(name) > 1})
    assert duplicates == []


def test_top_level_reexports_the_model_and_the_ports() -> None:
    for module_name in ("serversync.model", "serversync.ports"):
        module = _module(module_name)
        for name in _exported(module_name):
            assert name in serversync.__all__, f"{module_name}.{name} is not in serversync"
            assert getattr(serversync, name) is getattr(module, name)


@pytest.mark.parametrize("module_name", ["serversync.errors", "serversync.settings"])
def test_top_level_reexports_errors_and_settings(module_name: str) -> None:
    module = _module(module_name)
    for name in _exported(module_name):
        assert name in serversync.__all__
        assert getattr(serversync, name) is getattr(module, name)


@pytest.mark.parametrize(
    "name",
    [
        "Checkpoint",
        "SendOutcome",
        "AddResult",
        "Verdict",
        "MailboxId",
        "ActivityId",
        "MessageId",
        "ClaimToken",
    ],
)
def test_type_aliases_and_newtypes_are_recognised_as_exempt(name: str) -> None:
    obj = getattr(serversync, name)
    assert _is_type_alias(obj)
    assert not inspect.isclass(obj)


def test_classes_and_functions_are_not_mistaken_for_type_aliases() -> None:
    for obj in (serversync.SyncEngine, serversync.evaluate, serversync.EmailStatus):
        assert not _is_type_alias(obj)


@pytest.mark.parametrize(
    ("module_name", "name", "obj"),
    [pytest.param(*member, id=f"{member[0]}.{member[1]}") for member in _documented_members()],
)
def test_public_class_or_function_has_a_docstring(module_name: str, name: str, obj: object) -> None:
    # A class's own __doc__: inspect.getdoc would borrow the base class's docstring.
    doc = obj.__doc__
    assert doc is not None, f"{module_name}.{name} has no docstring"
    assert doc.strip(), f"{module_name}.{name} has an empty docstring"


def test_public_methods_of_exported_classes_are_documented() -> None:
    undocumented = []
    for module_name, name, obj in _documented_members():
        if not inspect.isclass(obj):
            continue
        for attr, raw in vars(obj).items():
            if attr.startswith("_"):
                continue
            target: object = raw
            if isinstance(raw, staticmethod | classmethod):
                target = raw.__func__
            elif isinstance(raw, property):
                target = raw.fget
            if not inspect.isfunction(target):
                continue
            # Inherited docstrings count: an implementation of a port method is documented by
            # the port.
            doc = raw.__doc__ if isinstance(raw, property) else inspect.getdoc(getattr(obj, attr))
            if not doc:
                undocumented.append(f"{module_name}.{name}.{attr}")
    assert undocumented == []


def test_documented_members_cover_the_main_entry_points() -> None:
    names = {name for _, name, _ in _documented_members()}
    assert {"SyncEngine", "Transports", "RelevanceRule", "Repositories", "evaluate"} <= names
    assert {"InMemoryWorld", "an_email", "SyncError", "SyncSettings"} <= names
    assert {"Alert", "AlertKind", "AlertLevel", "AlertSettings", "MailboxHealth"} <= names


def test_version_is_the_installed_distribution_version() -> None:
    assert isinstance(serversync.__version__, str)
    assert serversync.__version__ == importlib.metadata.version("serversync")


def test_walk_finds_the_public_submodules() -> None:
    found = _public_submodules()
    assert {"serversync.errors", "serversync.model.options", "serversync.ports.storage"} <= set(
        found
    )
    assert not any("._" in name for name in found)


@pytest.mark.parametrize("module_name", _public_submodules())
def test_every_public_module_defines_all(module_name: str) -> None:
    module = _module(module_name)
    assert hasattr(module, "__all__"), f"{module_name} does not define __all__"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_py_typed_marker_ships() -> None:
    marker = importlib.resources.files("serversync") / "py.typed"
    assert marker.is_file()
