"""Write docs/api.md, the API reference, from the docstrings of plait's public modules.

    .venv/bin/python docs/gen_api.py            # (re)write docs/api.md
    .venv/bin/python docs/gen_api.py --check    # exit 1 if docs/api.md is out of date
    .venv/bin/python docs/gen_api.py --missing  # list the public names without a docstring

Theory of operation. The public names of a module are its ``__all__``. ``plait`` has
none: its names are those it binds that are neither private nor modules, grouped by
topic (``PLAIT_SECTIONS``; a name no group lists goes to "other"). ``plait.socket``
re-exports the standard socket module's constants; only its own names are listed.
Each name gets its signature and its docstring; a class also gets its public methods
and properties, with those of private base classes (a public base is documented under
its own name). A method that overrides a base class's method without a docstring of
its own is listed by name only ("As in ..."): it does what the base documents. That
covers the standard library's interfaces (``asyncio.AbstractEventLoop``,
``concurrent.futures.Executor``) and plait's own (``plait.abc.Instrument``).

The output must be the same on every supported Python (the test suite runs
``--check`` on each), so nothing is taken from ``str(inspect.Signature)`` or
``inspect.getdoc``, whose renderings and inheritance rules vary between versions:
parameters, annotations (strings, under ``from __future__ import annotations``) and
defaults are rendered here, a docstring is read from the object itself and cleaned
with ``inspect.cleandoc`` (3.13 strips its indentation at compile time, older versions
do not), and a default whose ``repr`` shows a memory address stops the run. A method
defined under ``if sys.version_info ...`` in a class body (``ThreadQueue.shutdown``,
3.13+) is read from the source with ``ast``, on every version, and marked with its
condition. Parameters whose names start with an underscore are kernel-internal
(``checkpoint(_request)``) and left out.

Rejected: Sphinx with autodoc (a dependency, and reStructuredText output for a
repository whose documentation is Markdown) and ``pydoc`` (plain text, every
inherited method, and version-dependent rendering).

Docstrings are Google style with reStructuredText markup; the conversion to Markdown
is small: ````code```` and Sphinx roles (``:class:`~plait.X```) become `code`,
a Google section (``Args:``, ``Raises:`` ...) becomes a bold title and a list, and an
indented block becomes a code block.

Standard library only.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import enum
import importlib
import inspect
import math
import re
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ForwardRef

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
OUTPUT = DOCS / "api.md"
REGENERATE = ".venv/bin/python docs/gen_api.py"

MODULES = [
    "plait",
    "plait.lowlevel",
    "plait.abc",
    "plait.to_thread",
    "plait.from_thread",
    "plait.to_process",
    "plait.socket",
    "plait.testing",
    "plait.trace",
    "plait.aio",
    "plait.cluster",
    "plait.sched",
]
"""The public modules, in the order of the page."""

PLAIT_SECTIONS = {
    "running": "run Loop Handle TimerHandle",
    "tasks": (
        "TaskGroup Task TaskStatus TASK_STATUS_IGNORED current_task gather as_completed coroutine"
    ),
    "time and cancellation": (
        "sleep sleep_until sleep_forever checkpoint current_time CancelScope move_on_after "
        "move_on_at fail_after fail_at"
    ),
    "synchronisation": (
        "Event Lock Semaphore BoundedSemaphore Condition CapacityLimiter EventStatistics "
        "LockStatistics SemaphoreStatistics ConditionStatistics CapacityLimiterStatistics"
    ),
    "queues": "Queue LifoQueue PriorityQueue QueueStatistics ThreadQueue ThreadQueueStatistics",
    "threads, processes and futures": "ThreadPool ProcessPool Portal wait_future",
    "networking": (
        "open_tcp_stream open_tcp_listeners serve_tcp open_unix_stream open_unix_listener "
        "serve_unix serve_listeners Stream SocketStream SocketListener UnixSocketListener "
        "SSLStream"
    ),
    "subprocesses and signals": "run_process open_process Process open_signal_receiver",
    "inspecting a running program": "task_tree print_task_tree",
    "exceptions": (
        "Cancelled TaskCancelled WouldBlock EndOfStream ClosedResourceError "
        "BrokenResourceError BusyResourceError BrokenWorkerError Deadlock"
    ),
}
"""The topics of ``plait``'s own names (separated by spaces), in the order of the page."""

MADE_BY_PLAIT = {
    "plait.Handle",
    "plait.TimerHandle",
    "plait.Task",
    "plait.TaskStatus",
    "plait.Process",
    "plait.abc.PoolMap",
    "plait.lowlevel.TrioToken",
    "plait.testing.ExploreReport",
    "plait.sched.Event",
}
"""Classes whose instances only plait makes: their constructors are not shown."""

SKIPPED_BASES = {"object", "Generic", "Protocol", "ABC"}

WRAP = 88
"""A signature longer than this is written one parameter per line."""


# -- signatures ----------------------------------------------------------------------


def qualified(cls: type) -> str:
    """``cls``'s name, from the shortest module path that has it
    (``asyncio.AbstractEventLoop``, not ``asyncio.events.AbstractEventLoop``)."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    parts = cls.__module__.split(".")
    for i in range(1, len(parts)):
        module = sys.modules.get(".".join(parts[:i]))
        if getattr(module, cls.__qualname__, None) is cls:
            return f"{'.'.join(parts[:i])}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def annotation_text(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, ForwardRef):
        return annotation.__forward_arg__
    if isinstance(annotation, type):
        return qualified(annotation)
    return no_address(repr(annotation).replace("typing.", ""))


def default_text(value: Any) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "math.inf" if value > 0 else "-math.inf"
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, type)):
        module = getattr(value, "__module__", None)
        qualname = value.__qualname__
        return qualname if module in (None, "builtins") else f"{module}.{qualname}"
    return no_address(repr(value))


def no_address(text: str) -> str:
    if re.search(r" at 0x[0-9a-fA-F]+", text):
        raise SystemExit(
            f"gen_api.py: {text!r} shows a memory address, which changes on every run: "
            "give the object a stable repr, or teach default_text() about it"
        )
    return text


def parameter_texts(params: list[inspect.Parameter]) -> list[str]:
    """The parameters as source text, with the ``/`` and ``*`` markers."""
    texts: list[str] = []
    star_done = False
    for i, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not star_done:
            texts.append("*")
        if p.kind in (p.VAR_POSITIONAL, p.KEYWORD_ONLY):
            star_done = True
        text = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name
        if p.annotation is not p.empty:
            text += f": {annotation_text(p.annotation)}"
        if p.default is not p.empty:
            text += (" = " if p.annotation is not p.empty else "=") + default_text(p.default)
        texts.append(text)
        if p.kind is p.POSITIONAL_ONLY and (
            i + 1 == len(params) or params[i + 1].kind is not p.POSITIONAL_ONLY
        ):
            texts.append("/")
    return texts


def call_text(head: str, params: list[inspect.Parameter], returns: Any = None) -> str:
    """``head(params) -> returns``, one parameter per line when it is long."""
    texts = parameter_texts(params)
    tail = "" if returns in (None, inspect.Signature.empty) else f" -> {annotation_text(returns)}"
    line = f"{head}({', '.join(texts)}){tail}"
    if len(line) <= WRAP or not texts:
        return line
    return f"{head}(\n" + "".join(f"    {t},\n" for t in texts) + f"){tail}"


def parameters(fn: Any, *, drop_first: bool) -> tuple[list[inspect.Parameter], Any]:
    """``fn``'s parameters (without ``self``/``cls`` if ``drop_first``, without the
    kernel-internal ones) and its return annotation."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())[1 if drop_first else 0 :]
    params = [p for p in params if not (p.name.startswith("_") and p.default is not p.empty)]
    return params, sig.return_annotation


def returns_text(fn: Any, returns: Any) -> Any:
    """What to show after ``->``: nothing for a ``types.coroutine`` generator, whose
    annotation (``Generator[...]``) describes the generator, not what ``await`` gives."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is not None and code.co_flags & inspect.CO_ITERABLE_COROUTINE:
        return inspect.Signature.empty
    return returns


def is_async(fn: Any) -> bool:
    """An ``async def`` (or async generator), or a ``types.coroutine`` generator."""
    fn = inspect.unwrap(fn)
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        return True
    code = getattr(fn, "__code__", None)
    return code is not None and bool(code.co_flags & inspect.CO_ITERABLE_COROUTINE)


def is_plait(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module == "plait" or module.startswith("plait.")


def constructor(cls: type) -> list[inspect.Parameter] | None:
    """The constructor's parameters, or None when plait does not define them (an
    exception, or a class whose ``__init__`` comes from the standard library)."""
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):  # a NamedTuple
        annotations = inspect.get_annotations(cls)
        defaults = getattr(cls, "_field_defaults", {})
        return [
            inspect.Parameter(
                name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=annotations.get(name, inspect.Parameter.empty),
                default=defaults.get(name, inspect.Parameter.empty),
            )
            for name in cls._fields
        ]
    for method in ("__init__", "__new__"):
        owner = next(k for k in cls.__mro__ if method in k.__dict__)
        if owner is not object:
            break
    else:
        return []  # object's own: no arguments
    if not is_plait(owner):
        return None
    fn = owner.__dict__[method]
    return parameters(fn.__func__ if isinstance(fn, staticmethod) else fn, drop_first=True)[0]


# -- docstrings ----------------------------------------------------------------------

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|exc|data|obj):`(~?)([^`]+)`")
DOUBLE = re.compile(r"``(.+?)``", re.DOTALL)
SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Attributes|Returns|Yields|Raises|Example|Examples"
    r"|Note|Notes|Warning|See Also):\s*$"
)
LISTS = {"Args", "Arguments", "Parameters", "Attributes", "Raises", "Returns", "Yields"}
NAMED_ITEMS = {"Args", "Arguments", "Parameters", "Attributes", "Raises"}
ITEM = re.compile(r"^([\w.\[\], |*]+?):\s+(.*)$", re.DOTALL)


def own_doc(obj: Any) -> str | None:
    """The object's own docstring, cleaned; None if it has none. (A class's docstring
    is not inherited, and the signature dataclasses writes in its place is not one.)"""
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, type):
        doc = obj.__dict__.get("__doc__")
        if (
            isinstance(doc, str)
            and dataclasses.is_dataclass(obj)
            and doc.startswith(obj.__name__ + "(")
        ):
            doc = None
    else:
        doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return None
    return inspect.cleandoc(doc)


def inline(text: str) -> str:
    """Sphinx roles and ````code```` as Markdown code."""

    def role(match: re.Match[str]) -> str:
        target = match.group(2)
        return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"

    return DOUBLE.sub(lambda m: f"`{m.group(1)}`", ROLE.sub(role, text))


def markdown(doc: str) -> str:
    """A cleaned docstring as Markdown."""
    lines = doc.splitlines()
    out: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            out.extend(inline("\n".join(paragraph)).splitlines())
            paragraph.clear()

    def take_block(i: int, indented: str) -> tuple[int, str]:
        block = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(indented)):
            block.append(lines[i])
            i += 1
        return i, textwrap.dedent("\n".join(block)).strip("\n")

    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        section = SECTION.match(line)
        if section:
            flush()
            i, body = take_block(i + 1, " ")
            out.extend([f"**{section.group(1)}:**", "", *section_body(section.group(1), body), ""])
        elif line.startswith("    ") and not paragraph:
            i, block = take_block(i, "    ")
            out.extend(["```python", *block.splitlines(), "```", ""])
        elif not line:
            flush()
            if out and out[-1]:
                out.append("")
            i += 1
        else:
            paragraph.append(line)
            i += 1
    flush()
    return "\n".join(out).strip("\n")


def section_body(title: str, body: str) -> list[str]:
    if title.startswith("Example"):
        return ["```python", *body.splitlines(), "```"]
    if title not in LISTS:
        return inline(body).splitlines()
    items: list[str] = []
    for line in body.splitlines():
        if not items or (line and not line.startswith(" ")):
            items.append(line.strip())
        elif line.strip():
            items[-1] += " " + line.strip()
    out = []
    for item in items:
        match = ITEM.match(item) if title in NAMED_ITEMS else None
        if match:
            out.append(f"- `{match.group(1)}`: {inline(match.group(2))}")
        else:
            out.append(f"- {inline(item)}")
    return out


# -- the page ------------------------------------------------------------------------


def public_names(module: types.ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    found = []
    for name, obj in vars(module).items():
        if name.startswith("_") or isinstance(obj, types.ModuleType):
            continue
        if type(obj).__module__ == "__future__":
            continue  # from __future__ import annotations
        if module.__name__ == "plait.socket" and getattr(obj, "__module__", "") != "plait.socket":
            continue  # the standard socket module's names, re-exported as they are
        found.append(name)
    return found


def module_sections(module: types.ModuleType) -> list[tuple[str, list[str]]]:
    """(title, names) per part of the page that documents ``module``."""
    names = public_names(module)
    if module.__name__ != "plait":
        return [(f"`{module.__name__}`", names)]
    parts = [(f"`plait`: {title}", group.split()) for title, group in PLAIT_SECTIONS.items()]
    listed = [name for _, group in parts for name in group]
    unknown = sorted(set(listed) - set(names))
    if unknown:
        raise SystemExit(f"gen_api.py: PLAIT_SECTIONS lists names plait lacks: {unknown}")
    other = sorted(set(names) - set(listed))
    if other:
        parts.append(("`plait`: other", other))
    return parts


class Page:
    """The Markdown of docs/api.md, and the public names it found undocumented."""

    def __init__(self, public: dict[int, str]) -> None:
        self.public = public  # id(object) -> its first public name
        self.lines: list[str] = []
        self.missing: list[str] = []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def code(self, text: str) -> None:
        self.add("```python", text, "```", "")

    def doc(self, where: str, obj: Any) -> None:
        """``obj``'s docstring, or ``obj`` itself if it is one (or None: there is none)."""
        doc = obj if isinstance(obj, str) or obj is None else own_doc(obj)
        if doc is None:
            self.missing.append(where)
        else:
            self.add(markdown(doc), "")

    def link(self, obj: Any) -> str:
        name = self.public[id(obj)]
        return f"[`{name}`](#{name})"

    def entry(self, full: str, name: str, obj: Any) -> None:
        self.add(f'<a id="{full}"></a>', "", f"### `{full}`", "")
        first = self.public.get(id(obj))
        if first is not None and first != full:
            self.add(f"The same object as {self.link(obj)}.", "")
            return
        if isinstance(obj, type):
            if obj.__name__ != name:
                self.add(f"Another name for `{obj.__module__}.{obj.__qualname__}`.", "")
            self.cls(full, obj)
        elif callable(obj):
            try:
                params, returns = parameters(obj, drop_first=False)
            except (TypeError, ValueError):
                self.code(full)
            else:
                prefix = "async def " if is_async(obj) else "def "
                self.code(call_text(prefix + full, params, returns_text(obj, returns)))
            self.doc(full, obj)
        else:
            kind = next(k for k in type(obj).__mro__ if id(k) in self.public or not is_plait(k))
            self.code(f"{full}: {self.public.get(id(kind)) or qualified(kind)}")
            self.missing.append(f"{full} (a constant: an object has no docstring of its own)")

    def cls(self, full: str, cls: type) -> None:
        params = None if full in MADE_BY_PLAIT or issubclass(cls, enum.Enum) else constructor(cls)
        self.code(f"class {full}" if params is None else call_text(f"class {full}", params))
        bases = [
            self.link(base) if id(base) in self.public else f"`{qualified(base)}`"
            for base in cls.__bases__
            if base.__name__ not in SKIPPED_BASES
            and (id(base) in self.public or not is_plait(base))
        ]
        if bases:
            self.add(f"Bases: {', '.join(bases)}.", "")
        self.doc(full, cls)
        if issubclass(cls, enum.Enum):
            self.add("Members: " + ", ".join(f"`{m.name}`" for m in cls) + ".", "")
            return
        as_in: dict[str, list[str]] = {}
        for name, member in class_members(cls, self.public):
            base = next((k for k in cls.__mro__[1:] if name in k.__dict__), None)
            documented = base is not None and (id(base) in self.public or not is_plait(base))
            if documented and own_doc(member) is None:
                where = self.link(base) if id(base) in self.public else f"`{qualified(base)}`"
                as_in.setdefault(where, []).append(f"`{name}`")
            else:
                self.member(f"{full}.{name}", member, inherited_doc(cls, name))
        for where, names in as_in.items():
            self.add(f"As in {where}: {', '.join(names)}.", "")

    def member(self, full: str, member: Any, doc: str | None) -> None:
        """One method or property; ``doc`` is the docstring of the first class in the
        MRO that documents the name (a private base may)."""
        short = ".".join(full.split(".")[-2:])
        self.add(f"#### `{short}`", "")
        if isinstance(member, property):
            returns = inspect.signature(member.fget).return_annotation if member.fget else None
            tail = (
                ""
                if returns in (None, inspect.Signature.empty)
                else f": {annotation_text(returns)}"
            )
            self.code(f"property {short}{tail}")
            self.doc(full, doc)
            return
        if isinstance(member, Guarded):
            params, returns = member.signature()
            prefix = "async def " if isinstance(member.node, ast.AsyncFunctionDef) else "def "
            self.code(call_text(prefix + short, params, returns))
            self.add(f"Only where `{member.condition}`.", "")
            self.doc(full, doc)
            return
        kind, fn, drop_first = "", member, True
        if isinstance(member, staticmethod):
            kind, fn, drop_first = "staticmethod ", member.__func__, False
        elif isinstance(member, classmethod):
            kind, fn = "classmethod ", member.__func__
        params, returns = parameters(fn, drop_first=drop_first)
        prefix = kind + ("async def " if is_async(fn) else "def ")
        self.code(call_text(prefix + short, params, returns_text(fn, returns)))
        self.doc(full, doc)


class Source:
    """A default value as the source spells it (for members read from the source)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class Guarded:
    """A method defined under ``if sys.version_info ...`` in the class body, read from
    the source so that the page is the same on every Python, whether it has it or not."""

    def __init__(self, node: ast.FunctionDef | ast.AsyncFunctionDef, condition: str) -> None:
        self.node = node
        self.condition = condition
        self.__doc__ = ast.get_docstring(node)

    def signature(self) -> tuple[list[inspect.Parameter], Any]:
        args = self.node.args
        P = inspect.Parameter
        params: list[inspect.Parameter] = []

        def add(arg: ast.arg, kind: Any, default: ast.expr | None = None) -> None:
            params.append(
                P(
                    arg.arg,
                    kind,
                    annotation=ast.unparse(arg.annotation) if arg.annotation else P.empty,
                    default=P.empty if default is None else Source(ast.unparse(default)),
                )
            )

        positional = [*args.posonlyargs, *args.args]
        defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
        for i, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
            add(
                arg,
                P.POSITIONAL_ONLY if i < len(args.posonlyargs) else P.POSITIONAL_OR_KEYWORD,
                default,
            )
        if args.vararg:
            add(args.vararg, P.VAR_POSITIONAL)
        for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
            add(arg, P.KEYWORD_ONLY, default)
        if args.kwarg:
            add(args.kwarg, P.VAR_KEYWORD)
        returns = ast.unparse(self.node.returns) if self.node.returns else inspect.Signature.empty
        return params[1:], returns


def source_members(klass: type) -> tuple[list[str], dict[str, Guarded]]:
    """The names of the functions ``klass`` defines, in source order, and those of
    them it defines only under a ``sys.version_info`` condition.

    The file is found through the class's functions, not ``inspect.getsource``:
    plait's public classes say ``__module__ = "plait"``, where Python 3.11 and 3.12
    would look for them."""
    package = Path(importlib.import_module("plait").__file__ or "").parent
    files = {
        f.__code__.co_filename
        for f in (unwrap_member(m) for m in vars(klass).values())
        if isinstance(getattr(f, "__code__", None), types.CodeType)
        and Path(f.__code__.co_filename).is_relative_to(package)
    }
    if not files:
        return [], {}
    tree: ast.AST = ast.parse(Path(min(files)).read_text(encoding="utf-8"))
    node: ast.AST | None = tree
    for part in klass.__qualname__.split("."):
        node = next(
            (n for n in ast.walk(node) if isinstance(n, ast.ClassDef) and n.name == part),
            None,
        )
        if node is None:
            raise SystemExit(f"gen_api.py: class {klass.__qualname__} not found in {min(files)}")
    assert isinstance(node, ast.ClassDef)
    order: list[str] = []
    guarded: dict[str, Guarded] = {}

    def walk(body: list[ast.stmt], condition: str | None) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                order.append(stmt.name)
                if condition is not None:
                    guarded[stmt.name] = Guarded(stmt, condition)
            elif isinstance(stmt, ast.If):
                test = ast.unparse(stmt.test)
                versioned = "version_info" in test
                walk(stmt.body, test if versioned else condition)
                walk(stmt.orelse, f"not ({test})" if versioned else condition)

    walk(node.body, None)
    return order, guarded


def unwrap_member(member: Any) -> Any:
    if isinstance(member, (staticmethod, classmethod)):
        return member.__func__
    if isinstance(member, property):
        return member.fget
    return inspect.unwrap(member) if callable(member) else member


def inherited_doc(cls: type, name: str) -> str | None:
    """The docstring of ``name`` in the first class of ``cls``'s MRO that has one."""
    for klass in cls.__mro__:
        if not is_plait(klass):
            continue
        member = vars(klass).get(name)
        if member is None:
            member = source_members(klass)[1].get(name)
        doc = own_doc(member) if member is not None else None
        if doc is not None:
            return doc
    return None


def class_members(cls: type, public: dict[int, str]) -> Iterator[tuple[str, Any]]:
    """The public methods and properties of ``cls`` and of its private plait bases
    (a public base is documented under its own name), each name once, in source
    order, the class's own first. Methods defined only on some Pythons come from the
    source (``Guarded``)."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        if not is_plait(klass) or (klass is not cls and id(klass) in public):
            continue
        order, guarded = source_members(klass)
        rank = {name: i for i, name in enumerate(order)}
        members = dict(vars(klass))
        members.update(guarded)
        for name in sorted(members, key=lambda n: rank.get(n, len(rank))):
            member = members[name]
            if name.startswith("_") or name in seen:
                continue
            if isinstance(
                member, (types.FunctionType, staticmethod, classmethod, property, Guarded)
            ):
                seen.add(name)
                yield name, member


def generate() -> tuple[str, list[str]]:
    """The text of docs/api.md, and the public names that have no docstring."""
    modules = [importlib.import_module(name) for name in MODULES]
    plan = [(module, module_sections(module)) for module in modules]
    public: dict[int, str] = {}
    for module, parts in plan:
        for _, names in parts:
            for name in names:
                public.setdefault(id(getattr(module, name)), f"{module.__name__}.{name}")
    page = Page(public)
    page.add(
        "# API reference",
        "",
        "Generated from the docstrings by `docs/gen_api.py`: do not edit this file, edit",
        f"the docstring and run `{REGENERATE}`. For a guided tour see",
        "[tutorial.md](tutorial.md); coming from asyncio, see",
        "[from-asyncio.md](from-asyncio.md).",
        "",
    )
    for module, parts in plan:
        for title, names in parts:
            links = ", ".join(f"[`{n}`](#{module.__name__}.{n})" for n in names)
            page.add(f"- **{title}**: {links}")
    page.add("")
    for module, parts in plan:
        for title, names in parts:
            page.add(f"## {title}", "")
            summary = own_doc(module)
            if module.__name__ != "plait" and summary is not None:
                page.add(markdown(summary.split("\n\nTheory of operation", 1)[0]), "")
            for name in names:
                page.entry(f"{module.__name__}.{name}", name, getattr(module, name))
    return "\n".join(page.lines).rstrip() + "\n", page.missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/api.md from the docstrings.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is stale")
    mode.add_argument("--missing", action="store_true", help="list names without a docstring")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))  # document this tree, not an installed copy
    text, missing = generate()
    if args.missing:
        print("\n".join(missing))
        return 0
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current == text:
            return 0
        print(f"docs/api.md is out of date: run {REGENERATE}", file=sys.stderr)
        diff = difflib.unified_diff(
            current.splitlines(), text.splitlines(), "docs/api.md", "generated", lineterm=""
        )
        print("\n".join(list(diff)[:40]), file=sys.stderr)
        return 1
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote docs/api.md; {len(missing)} public names have no docstring (--missing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
