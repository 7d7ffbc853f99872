"""The tool registry: the ``@tool`` decorator, loading the charter's callables, and argument validation.

A tool is a Python function marked with ``@tool``. What it may do is decided by the charter alone (effect,
roles, approval rule, rate limit, preconditions): nothing the function or its module says about itself —
a docstring claiming to be read-only, an ``effect`` attribute — is ever consulted. The decorator only
records the name and the argument model (built from the signature unless one is given).

Arguments are validated strictly: they must be a JSON object; NaN and infinities, unknown fields and
values of the wrong type (``"50"`` for a number) are refused with a :class:`~charter.errors.UsageError`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from charter.errors import Problem, SpecError, UsageError
from charter.spec import Tool, canonical_json

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.spec import LoadedCharter

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__charter_tool__"


@dataclass(frozen=True)
class ToolContext:
    """What a running tool may know about the call. Declare a parameter annotated ``ToolContext`` to get it.

    ``idempotency_key`` is the action id: a tool that talks to a system with idempotency keys should pass
    it on, so that an operator may safely re-run a call whose outcome a crash left unknown.
    """

    idempotency_key: str
    principal_id: str
    tool: str
    base_dir: Path
    runtime: Runtime
    subject_id: str | None = None  # whom the conversation is about; tools scope their data to it
    request_id: str | None = None


class StrictArgs(BaseModel):
    """Base for tool argument models: unknown fields, NaN and type coercion are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


@dataclass(frozen=True)
class ToolDefinition:
    """What ``@tool`` records on a function: its name and argument model, nothing about its authority."""

    name: str
    fn: Callable[..., Any]
    args_model: type[BaseModel]
    context_param: str | None
    idempotent: bool = False


def _args_model_from_signature(fn: Callable[..., Any], name: str) -> tuple[type[BaseModel], str | None]:
    hints = get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    ctx_param: str | None = None
    for pname, param in inspect.signature(fn).parameters.items():
        annotation = hints.get(pname, Any)
        if annotation is ToolContext:
            ctx_param = pname
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise UsageError(f"tool {name!r}: *args/**kwargs are not allowed; declare every argument")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (annotation, default)
    model = create_model(f"{name}_args", __base__=StrictArgs, **fields)
    return model, ctx_param


@overload
def tool(fn: F, /) -> F: ...
@overload
def tool(
    *, name: str | None = None, args: type[BaseModel] | None = None, idempotent: bool = False
) -> Callable[[F], F]: ...


def tool(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    args: type[BaseModel] | None = None,
    idempotent: bool = False,
) -> F | Callable[[F], F]:
    """Mark a function as a tool. ``name`` defaults to the function's name; ``args`` to a model built from
    the signature (a parameter annotated :class:`ToolContext` receives the call context instead).

    ``idempotent=True`` promises that the function passes ``ToolContext.idempotency_key`` to the system it
    changes, so that an operator may re-run a call a crash interrupted (``resolve_stuck(..., "retry")``).
    It grants nothing: the charter alone decides effect, roles, approvals and limits.
    A function that is not marked cannot be named as a tool.
    """

    def mark(f: F) -> F:
        tool_name = name or f.__name__
        if args is not None:
            model: type[BaseModel] = args
            hints = get_type_hints(f, include_extras=True)
            ctx = next((p for p, a in hints.items() if a is ToolContext), None)
        else:
            model, ctx = _args_model_from_signature(f, tool_name)
        if idempotent and ctx is None:
            raise UsageError(
                f"tool {tool_name!r}: idempotent=True needs a ToolContext parameter to get the key"
            )
        setattr(
            f,
            _MARK,
            ToolDefinition(name=tool_name, fn=f, args_model=model, context_param=ctx, idempotent=idempotent),
        )
        return f

    return mark(fn) if fn is not None else mark


# ------------------------------------------------------------------------------------------- arguments
def canonical_args(args: Any) -> str:
    """The canonical JSON of a tool's arguments (sorted keys, no whitespace); NaN and infinity refused."""
    if not isinstance(args, dict):
        raise UsageError(f"tool arguments must be a JSON object, got {type(args).__name__}")
    try:
        json.dumps(args, allow_nan=False)
    except ValueError:
        raise UsageError("tool arguments must not contain NaN or infinity") from None
    except TypeError as exc:
        raise UsageError(f"tool arguments must be plain JSON: {exc}") from None
    return canonical_json(args)


def args_hash(args: Any) -> str:
    """SHA-256 (hex) of the canonical arguments: what an approval is bound to."""
    return hashlib.sha256(canonical_args(args).encode("utf-8")).hexdigest()


def parse_args_json(text: str) -> dict[str, Any]:
    """Parse ``--args`` JSON text: must be an object; NaN/Infinity literals refused."""

    def no_constants(value: str) -> Any:
        raise UsageError(f"tool arguments must not contain {value}")

    try:
        data = json.loads(text, parse_constant=no_constants)
    except ValueError as exc:  # not JSON, or an integer of more than 4,300 digits
        raise UsageError(f"tool arguments are not valid JSON: {str(exc).split(';')[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"tool arguments must be a JSON object, got {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class RegisteredTool:
    """A charter tool bound to its function. ``spec`` (from the charter) is the only source of authority."""

    spec: Tool
    definition: ToolDefinition

    @property
    def name(self) -> str:
        return self.spec.name

    def validate(self, args: Any) -> dict[str, Any]:
        """Validate ``args``; returns them as plain JSON (the form that is stored and hashed)."""
        text = canonical_args(args)
        try:
            model = self.definition.args_model.model_validate_json(text)
        except ValidationError as exc:
            parts = []
            for err in exc.errors(include_url=False):
                loc = ".".join(str(p) for p in err["loc"]) or "(arguments)"
                parts.append(f"{loc}: {err['msg']}")
            raise UsageError(f"invalid arguments for tool {self.name!r}: " + "; ".join(parts)) from None
        validated: dict[str, Any] = json.loads(model.model_dump_json())
        return validated

    def json_schema(self) -> dict[str, Any]:
        return self.definition.args_model.model_json_schema()

    @property
    def origin(self) -> str | None:
        """Where the implementation lives when it is not a local function (``mcp:<server>/<tool>``)."""
        return None

    def shown_description(self) -> str:
        """What a model or client is told the tool does (the charter's description)."""
        return self.spec.description

    def unavailable(self, *, live: bool = False) -> str | None:
        """Why the tool cannot run now, or ``None``. Local functions are always available (the kill switch is
        checked separately); upstream tools must be pinned and, with ``live``, still match their pin."""
        return None

    def call(self, args: dict[str, Any], context: ToolContext) -> Any:
        model = self.definition.args_model.model_validate_json(canonical_args(args))
        kwargs = {k: getattr(model, k) for k in type(model).model_fields}
        if self.definition.context_param:
            kwargs[self.definition.context_param] = context
        return self.definition.fn(**kwargs)


class ToolRegistry:
    """The charter's tools, bound to their functions. Built once per runtime by :func:`tool_registry`."""

    def __init__(self, forbidden: set[str]) -> None:
        self.forbidden = set(forbidden)
        self._tools: dict[str, RegisteredTool] = {}

    def register(self, spec: Tool, fn: Callable[..., Any]) -> RegisteredTool:
        """Bind a charter tool to a ``@tool`` function. Forbidden actions can never be registered."""
        definition = getattr(fn, _MARK, None)
        if not isinstance(definition, ToolDefinition):
            raise UsageError(
                f"{spec.callable} is not marked with @charter.tools.tool; only marked functions can be tools"
            )
        for name in {spec.name, definition.name}:
            if name in self.forbidden:
                raise UsageError(
                    f"tool {name!r} is a forbidden action (scope.forbidden_actions) and cannot be registered"
                )
        return self.add(RegisteredTool(spec=spec, definition=definition))

    def add(self, registered: RegisteredTool) -> RegisteredTool:
        """Add a bound tool (a Python function, or an upstream MCP tool: ``charter.mcp``)."""
        spec = registered.spec
        if spec.name in self.forbidden:
            raise UsageError(
                f"tool {spec.name!r} is a forbidden action (scope.forbidden_actions) and cannot be registered"
            )
        if spec.name in self._tools:
            raise UsageError(f"tool {spec.name!r} is registered twice")
        self._tools[spec.name] = registered
        return registered

    def get(self, name: str) -> RegisteredTool:
        if name in self.forbidden:
            raise KeyError(name)
        return self._tools[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tools and name not in self.forbidden

    def __iter__(self) -> Any:
        return iter(self._tools.values())

    def names(self) -> list[str]:
        return sorted(self._tools)

    @classmethod
    def from_charter(cls, loaded: LoadedCharter, rt: Runtime | None = None) -> ToolRegistry:
        """Import every tool the charter declares; every problem is reported, each with file and line.
        Upstream MCP tools (``upstream:``) are bound to ``rt`` (their pins live in its store)."""
        spec = loaded.spec
        registry = cls(set(spec.scope.forbidden_actions))
        problems: list[Problem] = []
        for i, t in enumerate(spec.tools):
            line = loaded.located.line_of(("tools", i, "callable" if t.callable else "upstream"))
            try:
                if t.upstream is not None:
                    from charter.tools._mcp_tool import upstream_tool

                    registry.add(upstream_tool(t, rt))
                    continue
                assert t.callable is not None
                fn = resolve_callable(t.callable, loaded.base_dir)
                registry.register(t, fn)
            except UsageError as exc:
                problems.append(
                    Problem(
                        str(exc.problem.message),
                        file=loaded.located.file,
                        line=line,
                        field=f"tools[{i}].{'callable' if t.callable else 'upstream'}",
                    )
                )
        if problems:
            raise SpecError(problems)
        return registry


_import_lock = threading.Lock()


def _load_module(module: str, base_dir: Path) -> ModuleType:
    rel = Path(*module.split("."))
    for candidate in (base_dir / rel.with_suffix(".py"), base_dir / rel / "__init__.py"):
        if candidate.is_file():
            resolved = candidate.resolve()
            # A unique name per file: two charters with a ``tools.py`` each never share a module.
            digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
            unique = f"charter_tools_{digest}_{module.replace('.', '_')}"
            with _import_lock:
                cached = sys.modules.get(unique)
                if cached is not None:
                    return cached
                spec = importlib.util.spec_from_file_location(unique, resolved)
                if spec is None or spec.loader is None:
                    raise UsageError(f"cannot import {resolved}")
                mod = importlib.util.module_from_spec(spec)
                sys.modules[unique] = mod
                try:
                    spec.loader.exec_module(mod)
                except Exception as exc:
                    del sys.modules[unique]
                    raise UsageError(f"importing {resolved} failed: {type(exc).__name__}: {exc}") from exc
                return mod
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(
            f"cannot import module {module!r} (not found beside the charter nor installed): {exc}"
        ) from None


def resolve_callable(ref: str, base_dir: Path) -> Callable[..., Any]:
    """``module:function``; the module is looked up beside the charter first, then on ``sys.path``."""
    module, _, attr = ref.partition(":")
    mod = _load_module(module, base_dir)
    fn = getattr(mod, attr, None)
    if fn is None or not callable(fn):
        raise UsageError(f"{ref}: module {module!r} has no function {attr!r}")
    return fn  # type: ignore[no-any-return]


_registries: weakref.WeakKeyDictionary[Any, ToolRegistry] = weakref.WeakKeyDictionary()
_registries_lock = threading.Lock()


def tool_registry(rt: Runtime) -> ToolRegistry:
    """The runtime's tool registry (imported once per runtime; a startup error if any tool is invalid)."""
    with _registries_lock:
        reg = _registries.get(rt)
        if reg is None:
            reg = ToolRegistry.from_charter(rt.charter, rt)
            _registries[rt] = reg
        return reg
