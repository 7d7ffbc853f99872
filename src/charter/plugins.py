"""One registry type for every plug-in kind: :class:`Registry`.

Charter's plug-in kinds — source connectors, embedders, model providers, eval scorers and tool
preconditions — each keep one ``Registry`` (``charter.sources``, ``charter.retrieval``, ``charter.models``,
``charter.evals``, ``charter.tools``) and share its rules:

* **Decorator registration.** Each kind's public decorator (``@connector("name")``, ``@embedder``,
  ``@provider``, ``@scorer``, ``@precondition``) calls :meth:`Registry.add`. Built-in plug-ins use the same
  decorators as third-party ones.
* **Entry points.** An installed distribution can contribute plug-ins through the kind's entry-point group
  (``charter.connectors``, ``charter.embedders``, ``charter.providers``, ``charter.scorers``,
  ``charter.preconditions``); the entry point's name is the plug-in's name and its object is what the
  decorator would have decorated (or a module whose import registers it with the decorator). The group is
  read and loaded lazily, once per process, on the first lookup (:meth:`Registry.get`, :meth:`Registry.names`,
  ``in``), under a lock. An entry point that fails to load raises :class:`PluginError` naming the entry point
  and its distribution; the next lookup tries again.
* **Duplicate names are refused.** Registering a name that another definition already holds raises
  :class:`PluginError` naming both origins (``module:qualname``, and the entry point when there is one).
  Registering the *same* definition again (same module and qualified name — a module re-executed, a test
  body run twice) replaces the earlier registration.
* **Lookups** — :meth:`Registry.names` lists every name, :meth:`Registry.get` returns one or raises
  :class:`~charter.errors.UsageError` listing the known names.

Tools (``@charter.tools.tool``) are deliberately *not* a ``Registry``: which tools exist is decided per charter
(``tools:`` names each callable by module path, and the charter alone grants effect, roles and approvals), so
the tool registry is built per runtime from the charter, not per process from decorators or entry points.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from charter.errors import UsageError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = ["PluginError", "Registry", "origin_of"]

T = TypeVar("T")


class PluginError(UsageError):
    """A plug-in cannot be registered or loaded: a name registered twice, or an entry point that fails."""


def origin_of(obj: Any) -> str:
    """Where a plug-in is defined: ``module:qualname`` (what duplicate-name errors show)."""
    module = getattr(obj, "__module__", None) or "?"
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__qualname__
    if "<lambda>" in qualname and hasattr(obj, "__code__"):  # two lambdas of a module are two definitions
        qualname += f"@{obj.__code__.co_firstlineno}"
    return f"{module}:{qualname}"


def _describe(ep: EntryPoint) -> str:
    dist = ep.dist
    where = f" of distribution {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point {ep.name!r} = {ep.value!r} in group {ep.group!r}{where}"


@dataclass(frozen=True)
class _Entry(Generic[T]):
    value: T
    origin: str  # module:qualname of the definition: the identity duplicates are judged by
    via: str = ""  # how it arrived, when not by the decorator ("entry point 'x' = 'pkg:x' of …")

    def describe(self) -> str:
        return f"{self.origin} ({self.via})" if self.via else self.origin


class Registry(Generic[T]):
    """Named plug-ins of one kind (``kind`` is what messages call it, e.g. ``"connector"``).

    ``group`` is the entry-point group; ``adapt`` turns a loaded entry-point object into a ``T`` (the same
    conversion the kind's decorator applies); ``builtins`` are modules imported before the first lookup
    (built-in plug-ins that register themselves on import); ``field`` is the charter field that names a
    plug-in of this kind, quoted by the unknown-name error.
    """

    def __init__(
        self,
        kind: str,
        *,
        group: str,
        adapt: Callable[[str, Any], T] | None = None,
        builtins: Sequence[str] = (),
        field: str | None = None,
    ) -> None:
        self.kind = kind
        self.group = group
        self.field = field
        self._adapt = adapt
        self._builtins = tuple(builtins)
        self._entries: dict[str, _Entry[T]] = {}
        self._lock = threading.Lock()  # guards _entries; held only briefly, never while importing
        self._load_lock = threading.RLock()  # one thread loads built-ins and entry points; others wait
        self._loaded = False
        self._loading = False
        self._builtins_loaded = not builtins

    # ------------------------------------------------------------------------------------ registration
    def add(self, name: str, value: T, *, origin: str, via: str = "") -> None:
        """Register ``value`` under ``name``; :class:`PluginError` when another definition holds it."""
        if not isinstance(name, str) or not name:
            raise PluginError(f"a {self.kind} needs a non-empty name, got {name!r}")
        self._ensure_builtins()  # built-ins hold their names first, whoever registers before a lookup
        with self._lock:
            held = self._entries.get(name)
            if held is not None and held.origin != origin:
                new = _Entry(value, origin, via)
                raise PluginError(
                    f"{self.kind} {name!r} is registered twice: by {held.describe()} and by {new.describe()}; "
                    f"rename one of them (or uninstall the package that brings the other)"
                )
            self._entries[name] = _Entry(value, origin, via)

    def remove(self, name: str) -> None:
        """Forget ``name`` (tests and benchmarks that swap a plug-in; see :meth:`restoring`)."""
        with self._lock:
            self._entries.pop(name, None)

    @contextmanager
    def restoring(self) -> Iterator[None]:
        """Registrations and removals made inside the block are undone when it ends."""
        with self._lock:
            saved = dict(self._entries)
        try:
            yield
        finally:
            with self._lock:
                self._entries.clear()
                self._entries.update(saved)

    # ------------------------------------------------------------------------------------ loading
    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._load_lock:
            if self._loaded or self._loading:  # loaded, or a plug-in being loaded looks itself up
                return
            self._loading = True
            try:
                self._ensure_builtins()
                from importlib.metadata import entry_points

                for ep in sorted(entry_points(group=self.group), key=lambda e: (e.name, e.value)):
                    self._load_entry_point(ep)
                self._loaded = True
            finally:
                self._loading = False

    def _ensure_builtins(self) -> None:
        if self._builtins_loaded:
            return
        with self._load_lock:
            if self._builtins_loaded:
                return
            self._builtins_loaded = True  # set first: each built-in module registers through add()
            try:
                for module in self._builtins:
                    importlib.import_module(module)
            except BaseException:
                self._builtins_loaded = False
                raise

    def _load_entry_point(self, ep: EntryPoint) -> None:
        before = self._entries.get(ep.name)
        try:
            obj = ep.load()
        except PluginError as exc:  # its import registered a name someone else holds
            raise PluginError(f"{_describe(ep)}: {exc}") from exc
        except Exception as exc:
            raise PluginError(
                f"the {self.kind} plug-in from {_describe(ep)} failed to load: {type(exc).__name__}: {exc}; "
                f"fix or uninstall that distribution"
            ) from exc
        after = self._entries.get(ep.name)
        if after is not None and (after is not before or after.origin.split(":")[0] == ep.module):
            return  # its module registered the name through the decorator (now, or when imported before)
        if after is not None and after.value is obj:
            return  # it points at an object already registered under its name
        if self._adapt is None:
            value: T = obj
        else:
            try:
                value = self._adapt(ep.name, obj)
            except TypeError as exc:
                raise PluginError(f"{_describe(ep)} is not a {self.kind}: {exc}") from exc
        self.add(ep.name, value, origin=origin_of(obj), via=_describe(ep))

    # ------------------------------------------------------------------------------------ lookups
    def names(self, *, by_registration: bool = False) -> list[str]:
        """Every registered name, sorted (or in registration order: built-ins first)."""
        self._ensure_loaded()
        with self._lock:
            names = list(self._entries)
        return names if by_registration else sorted(names)

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        with self._lock:
            return name in self._entries

    def get(self, name: str) -> T:
        """The plug-in registered as ``name``; :class:`UsageError` listing the known names if none is."""
        self._ensure_loaded()
        with self._lock:
            entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(self.names()) or "none"
            raise UsageError(f"unknown {self.kind} {name!r}; registered: {known}", field=self.field)
        return entry.value

    def origin(self, name: str) -> str:
        """Where the plug-in registered as ``name`` is defined (and the entry point, when it came by one)."""
        self._ensure_loaded()
        try:
            return self._entries[name].describe()
        except KeyError:
            raise UsageError(f"unknown {self.kind} {name!r}") from None

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, group={self.group!r}, names={sorted(self._entries)!r})"
