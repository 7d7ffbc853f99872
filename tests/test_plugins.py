"""``charter.plugins.Registry``: the one registry every plug-in kind uses (docs/api.md, "Plug-ins").

Entry points are real: each test writes a distribution (``*.dist-info`` with ``METADATA`` and
``entry_points.txt``) and its module into a temporary directory put on ``sys.path``, the way ``pip install``
would, and ``importlib.metadata`` finds it.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from charter.errors import UsageError
from charter.plugins import PluginError, Registry, origin_of

ROOT = Path(__file__).resolve().parents[1]


def _group() -> str:
    return f"charter.test_{uuid.uuid4().hex[:10]}"


def _distribution(
    root: Path, dist: str, group: str, entries: dict[str, str], modules: dict[str, str]
) -> None:
    """A package as pip leaves it: its modules and ``<dist>-1.0.dist-info`` declaring ``entries``."""
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n", encoding="utf-8")
    lines = [f"[{group}]"] + [f"{name} = {value}" for name, value in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


def _mod() -> str:
    return f"charter_test_plugin_{uuid.uuid4().hex[:10]}"


def test_exported_names() -> None:
    import charter.plugins

    assert sorted(charter.plugins.__all__) == ["PluginError", "Registry", "origin_of"]
    assert issubclass(PluginError, UsageError)


# ------------------------------------------------------------------------------------------ decorators
def test_a_name_registered_by_two_definitions_is_refused_naming_both() -> None:
    reg: Registry[Callable[[], int]] = Registry("widget", group=_group())

    def one() -> int:
        return 1

    def two() -> int:
        return 2

    reg.add("w", one, origin=origin_of(one))
    with pytest.raises(PluginError) as caught:
        reg.add("w", two, origin=origin_of(two))
    message = str(caught.value)
    assert "widget 'w' is registered twice" in message
    assert origin_of(one) in message and origin_of(two) in message
    assert origin_of(one) != origin_of(two)
    assert reg.get("w")() == 1  # the first registration stands


def test_the_same_definition_registered_again_replaces_itself() -> None:
    reg: Registry[Callable[[], int]] = Registry("widget", group=_group())
    for value in (1, 2):  # a test body or a module run twice: same module:qualname

        def make(value: int = value) -> int:
            return value

        reg.add("w", make, origin=origin_of(make))
    assert reg.get("w")() == 2 and reg.names() == ["w"]


def test_an_unknown_name_lists_the_known_ones() -> None:
    reg: Registry[int] = Registry("widget", group=_group(), field="widgets.kind")
    reg.add("b", 2, origin="m:b")
    reg.add("a", 1, origin="m:a")
    with pytest.raises(UsageError) as caught:
        reg.get("c")
    assert str(caught.value) == "widgets.kind: unknown widget 'c'; registered: a, b"
    assert reg.names() == ["a", "b"] and reg.names(by_registration=True) == ["b", "a"]
    assert "a" in reg and "c" not in reg
    empty: Registry[int] = Registry("widget", group=_group())
    with pytest.raises(UsageError, match="registered: none"):
        empty.get("a")


def test_restoring_undoes_changes() -> None:
    reg: Registry[int] = Registry("widget", group=_group())
    reg.add("a", 1, origin="m:a")
    with reg.restoring():
        reg.remove("a")
        reg.add("a", 9, origin="other:a")
        assert reg.get("a") == 9
    assert reg.get("a") == 1 and reg.origin("a") == "m:a"


@pytest.mark.parametrize(
    ("decorate", "names"),
    [
        ("charter.sources:connector", "charter.sources:connector_names"),
        ("charter.retrieval:embedder", "charter.retrieval:registered_embedders"),
        ("charter.models:provider", "charter.models:provider_names"),
        ("charter.evals:scorer", "charter.evals:scorer_names"),
        ("charter.tools:precondition", None),
    ],
)
def test_every_plug_in_kind_refuses_a_taken_name(decorate: str, names: str | None) -> None:
    import importlib

    module, attr = decorate.split(":")
    decorator = getattr(importlib.import_module(module), attr)
    builtin = {
        "connector": "folder",
        "embedder": "minilm",
        "provider": "extractive",
        "scorer": "retrieval",
        "precondition": "draft_approved",
    }[attr]

    def impostor(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("never called")

    with pytest.raises(PluginError, match=rf"'{builtin}' is registered twice: by charter\."):
        decorator(builtin)(impostor)
    if names is not None:
        module, attr = names.split(":")
        assert builtin in getattr(importlib.import_module(module), attr)()


# ------------------------------------------------------------------------------------------ entry points
def test_a_plug_in_is_found_through_its_entry_point(site: Path) -> None:
    group, mod = _group(), _mod()
    _distribution(
        site,
        "charter-widgets",
        group,
        {"double": f"{mod}:double"},
        {mod: "def double(x):\n    return 2 * x\n"},
    )
    reg: Registry[Callable[[int], int]] = Registry("widget", group=group)
    assert reg.names() == ["double"]
    assert reg.get("double")(21) == 42
    assert "entry point 'double'" in reg.origin("double") and "charter-widgets 1.0" in reg.origin("double")


def test_an_entry_point_whose_import_registers_through_the_decorator(site: Path) -> None:
    group, mod = _group(), _mod()
    reg: Registry[Callable[[], str]] = Registry("widget", group=group)
    sys.modules["charter_test_registry_host"] = type(sys)("charter_test_registry_host")
    sys.modules["charter_test_registry_host"].reg = reg  # type: ignore[attr-defined]
    try:
        source = """
            from charter_test_registry_host import reg

            def hello():
                return "hi"

            reg.add("hello", hello, origin=f"{__name__}:hello")
        """
        _distribution(site, "charter-hello", group, {"hello": mod}, {mod: source})
        assert reg.get("hello")() == "hi"
        assert reg.origin("hello") == f"{mod}:hello"
    finally:
        del sys.modules["charter_test_registry_host"]


def test_a_module_entry_point_imported_before_the_first_lookup(site: Path) -> None:
    """``name = module`` whose decorator already ran (the user imported it first) is the same plug-in."""
    group, mod = _group(), _mod()
    reg: Registry[Callable[[], str]] = Registry("widget", group=group)
    host = type(sys)("charter_test_registry_host2")
    host.reg = reg  # type: ignore[attr-defined]
    sys.modules[host.__name__] = host
    try:
        source = """
            from charter_test_registry_host2 import reg

            def early():
                return "early"

            reg.add("early", early, origin=f"{__name__}:early")
        """
        _distribution(site, "charter-early", group, {"early": mod}, {mod: source})
        importlib.import_module(mod)
        assert reg.names() == ["early"] and reg.get("early")() == "early"
    finally:
        del sys.modules[host.__name__]


def test_two_lambdas_of_one_module_are_two_definitions() -> None:
    reg: Registry[Callable[[], int]] = Registry("widget", group=_group())
    lambdas: list[Callable[[], int]] = [
        lambda: 1,
        lambda: 2,  # on another line: another definition
    ]
    reg.add("w", lambdas[0], origin=origin_of(lambdas[0]))
    reg.add("w", lambdas[0], origin=origin_of(lambdas[0]))  # the same one again: fine
    with pytest.raises(PluginError, match="registered twice"):
        reg.add("w", lambdas[1], origin=origin_of(lambdas[1]))


def test_a_broken_plug_in_names_its_entry_point(site: Path) -> None:
    group, mod = _group(), _mod()
    _distribution(
        site, "charter-broken", group, {"bad": f"{mod}:thing"}, {mod: "import no_such_module_at_all\n"}
    )
    reg: Registry[Any] = Registry("widget", group=group)
    reg.add("fine", 1, origin="m:fine")
    for _ in range(2):  # not remembered as loaded: every lookup says it again
        with pytest.raises(PluginError) as caught:
            reg.get("fine")
        message = str(caught.value)
        assert (
            f"entry point 'bad' = '{mod}:thing' in group '{group}' of distribution charter-broken 1.0"
            in message
        )
        assert "failed to load: ModuleNotFoundError" in message and "no_such_module_at_all" in message
        assert "fix or uninstall" in message


def test_an_entry_point_that_takes_a_registered_name_is_refused(site: Path) -> None:
    group, mod = _group(), _mod()
    _distribution(site, "charter-clash", group, {"w": f"{mod}:w"}, {mod: "def w():\n    return 2\n"})
    reg: Registry[Callable[[], int]] = Registry("widget", group=group)

    def w() -> int:
        return 1

    reg.add("w", w, origin=origin_of(w))
    with pytest.raises(PluginError) as caught:
        reg.names()
    message = str(caught.value)
    assert "widget 'w' is registered twice" in message
    assert (
        origin_of(w) in message and f"{mod}:w (entry point 'w'" in message and "charter-clash 1.0" in message
    )


def test_an_entry_point_object_of_the_wrong_kind_is_refused(site: Path) -> None:
    group, mod = _group(), _mod()
    _distribution(site, "charter-wrong", group, {"n": f"{mod}:N"}, {mod: "N = 3\n"})

    def adapt(name: str, obj: Any) -> Callable[[], Any]:
        if not callable(obj):
            raise TypeError(f"@widget({name!r}) needs a function")
        return obj  # type: ignore[no-any-return]

    reg: Registry[Callable[[], Any]] = Registry("widget", group=group, adapt=adapt)
    with pytest.raises(
        PluginError, match=r"entry point 'n' .* is not a widget: @widget\('n'\) needs a function"
    ):
        reg.get("n")


def test_lazy_loading_is_thread_safe(site: Path) -> None:
    """Many threads' first lookups at once: the group is loaded once and every thread sees the plug-in."""
    group, mod = _group(), _mod()
    slow = "import time\ntime.sleep(0.3)\n\ndef slow():\n    return 'loaded'\n"
    _distribution(site, "charter-slow", group, {"slow": f"{mod}:slow"}, {mod: slow})
    adapted: list[str] = []

    def adapt(name: str, obj: Any) -> Any:
        adapted.append(name)
        return obj

    reg: Registry[Callable[[], str]] = Registry("widget", group=group, adapt=adapt)
    reg.add("early", lambda: "early", origin="m:early")
    threads = 12
    barrier = threading.Barrier(threads)
    results: list[object] = []
    lock = threading.Lock()

    def look() -> None:
        barrier.wait()
        try:
            found: object = (reg.get("slow")(), reg.names())
        except Exception as exc:  # pragma: no cover - what the test is about
            found = exc
        with lock:
            results.append(found)

    workers = [threading.Thread(target=look) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=30)
    assert results == [("loaded", ["early", "slow"])] * threads
    assert adapted == ["slow"]


def test_a_real_connector_from_an_installed_package(tmp_path: Path) -> None:
    """The ``charter.connectors`` group end to end, in a fresh interpreter (the process-wide registry)."""
    mod = _mod()
    source = """
        def lines(ctx):
            \"\"\"One document per part of the location string.\"\"\"
            for i, part in enumerate(ctx.source.location.split("|")):
                yield ctx.document(doc_id=f"l{i}", title=part, text=part, format="text", acl=frozenset({"public"}))
    """
    _distribution(tmp_path, "charter-lines", "charter.connectors", {"lines": f"{mod}:lines"}, {mod: source})
    code = textwrap.dedent(
        """
        from pathlib import Path
        from charter.sources import ConnectorContext, connector_names, get_connector
        from tests.sources._helpers import make_source

        assert "lines" in connector_names() and "folder" in connector_names(), connector_names()
        src = make_source(connector="lines", location="alpha|beta")
        docs = list(get_connector("lines").documents(ConnectorContext(src, Path("."))))
        print([d.title for d in docs])
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['alpha', 'beta']"
