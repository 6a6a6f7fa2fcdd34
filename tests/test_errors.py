"""Domain errors carry no HTTP status; ``service/api/errors.py`` is the one place that maps them, and the web
framework stays inside ``service/api/`` and ``service/main.py``."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from service import errors
from service.api.errors import STATUS, status_of
from service.batching import BatcherClosed
from service.errors import (
    InputTooLarge,
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    ModelUnloaded,
    ServiceError,
    StorageFull,
    UnsupportedFormat,
    WrongModelKind,
)

SERVICE = Path(__file__).resolve().parents[1] / "service"
WEB = {"fastapi", "starlette"}


@pytest.mark.parametrize(
    ("exc", "status", "headers"),
    [
        (InvalidInput("x"), 422, {}),
        (UnsupportedFormat("x"), 415, {}),
        (InputTooLarge("x"), 413, {}),
        (WrongModelKind("x"), 422, {}),
        (ModelNotFound("x"), 404, {}),
        (ModelUnavailable("x"), 503, {"Retry-After": "30"}),
        (ModelUnloaded("x"), 503, {"Retry-After": "1"}),
        (BatcherClosed(), 503, {"Retry-After": "1"}),
        (StorageFull("x"), 507, {"Retry-After": "60"}),
    ],
)
def test_status_of_each_domain_error(exc, status, headers):
    assert status_of(exc) == (status, headers)


def test_an_unmapped_service_error_is_500():
    class Odd(ServiceError):
        pass

    assert status_of(Odd("x")) == (500, {})


def test_status_table_lists_subclasses_before_their_bases():
    kinds = [kind for kind, _, _ in STATUS]
    for i, kind in enumerate(kinds):
        assert not any(issubclass(kind, earlier) for earlier in kinds[:i]), kind


def test_every_domain_error_has_a_status():
    domain = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, ServiceError)]
    assert {c for c in domain if c is not ServiceError} <= {kind for kind, _, _ in STATUS}


def test_errors_keep_their_detail_and_not_found_is_a_lookup_error():
    exc = ModelNotFound("no model 'x'")
    assert exc.detail == str(exc) == "no model 'x'"
    assert isinstance(exc, LookupError)
    assert isinstance(BatcherClosed(), ModelUnloaded) and "retry" in BatcherClosed().detail


def test_no_error_class_takes_a_status():
    tree = ast.parse((SERVICE / "errors.py").read_text())
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    assert classes
    for cls in classes:
        names = {n.id for n in ast.walk(cls) if isinstance(n, ast.Name)}
        names |= {a.arg for n in ast.walk(cls) if isinstance(n, ast.arguments) for a in [*n.args, *n.kwonlyargs]}
        names |= {n.attr for n in ast.walk(cls) if isinstance(n, ast.Attribute)}
        assert not {n for n in names if "status" in n.lower()}, cls.name
    for _, cls in inspect.getmembers(errors, inspect.isclass):
        assert "status" not in "".join(inspect.signature(cls).parameters).lower(), cls


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_web_framework_is_imported_only_by_the_api_and_main():
    allowed = {SERVICE / "main.py"}
    offenders = {
        str(path.relative_to(SERVICE.parent)): sorted(imported_modules(path) & WEB)
        for path in sorted(SERVICE.rglob("*.py"))
        if path not in allowed and (SERVICE / "api") not in path.parents
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_import_check_sees_the_api_imports():
    assert "fastapi" in imported_modules(SERVICE / "api" / "errors.py")
    assert "starlette" in imported_modules(SERVICE / "api" / "errors.py")
