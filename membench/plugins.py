"""Models and tasks from outside membench: import paths, plugin folders and installed entry points.

Three ways in, all resolved here and nowhere else:

    import path      "my_pkg.mixers:MyMixer" wherever a model or task name goes (--models, --tasks, a spec's
                     `model = "..."`, `membench check`); the current directory is importable, as with
                     `python -m`. "hf:MODEL_TYPE" names a Hugging Face model (models/hf.py), "pretrained:PATH_OR_ID"
                     a pretrained causal language model (models/pretrained.py).
    plugin folder    `--include DIR` or a spec's `include = [...]`: every *.py file in DIR is imported, so its
                     @register_model / @register_task decorators run; DIR is importable while it loads.
    entry point      an installed package declares `[project.entry-points."membench.models"]` (or
                     "membench.tasks") `name = "pkg.module:Class"` (or a module whose decorators register);
                     they load on first use of the registry.

What an import path may name, for models: a `MemoryModel` subclass (used as it is), or a sequence mixer (an
`nn.Module` class whose constructor takes `d_model`, optionally `layer_idx`, plus params; forward (B, T, D) ->
(B, T, D)), wrapped as membench's own families are (models/imported.py). For tasks: a `Task` subclass.

    >>> resolve("model", "membench.models.base:MLP").name
    'membench.models.base:MLP'
    >>> resolve("model", "membench.models.base:no_such")
    Traceback (most recent call last):
    membench.checks.ConfigError: model 'membench.models.base:no_such': module membench.models.base has no \
attribute 'no_such' (closest: none; it defines Block, MLP, MemoryModel, Mixer, ...)

A plugin that fails to import gets a one-line warning (`warn`) naming it and its error; membench keeps
working. A model or task from outside membench that raises while membench uses it (builds, counts, samples)
is bad input, reported in one line naming it (`blamed_on`); membench's own keep their traceback (a bug).
Where every registered name came from is the registry's `source(name)`: "membench", "include DIR/file.py",
"entry point DIST", or the defining module.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
import types
from pathlib import Path

from membench.checks import ConfigError

HF_PREFIX = "hf:"
PRETRAINED_PREFIX = "pretrained:"  # a causal LM and its tokenizer, by folder or hub id (models/pretrained.py)
INCLUDE_ENV = "MEMBENCH_INCLUDE"  # folders included so far, os.pathsep-separated: spawned workers re-include them
GROUPS = {"model": "membench.models", "task": "membench.tasks"}  # entry-point group of each registry kind
_resolved: dict[tuple[str, str], type] = {}  # (kind, path) -> class: one class per path per process
_included: set[Path] = set()
_source: list[str] = []  # the source being loaded (innermost last), read by Registry.register
WARNINGS: list[str] = []  # every plugin warning of this process, in order


def is_import_path(name: str) -> bool:
    """'pkg.mod:Class' or 'hf:TYPE' (registered names never hold a colon)."""
    return ":" in name


def current_source() -> str | None:
    """The plugin folder file or entry point being imported now, or None."""
    return _source[-1] if _source else None


@contextlib.contextmanager
def loading(source: str):
    _source.append(source)
    try:
        yield
    finally:
        _source.pop()


class PluginError(ConfigError):
    """A model or task from outside membench raised (see blamed_on)."""


def is_external(kind: str, name: str) -> bool:
    """True for a model or task ("model" or "task") that membench does not ship: an import path, or a name
    registered by a plugin folder, an entry point or the user's own code."""
    if is_import_path(name):
        return True
    if kind == "model":
        from membench.models import MODELS as registry
    else:
        from membench.memtasks import TASKS as registry
    return registry.source(name) != "membench"


@contextlib.contextmanager
def blamed_on(kind: str, name: str, doing: str):
    """An exception that a model or task from outside membench raises inside this block becomes one line
    naming it (PluginError); ConfigError passes as it is, and membench's own models and tasks keep their
    traceback (an exception there is a bug of membench).

        >>> with blamed_on("model", "my_mixers:Broken", "while being built"):   # whose __init__ raises
        ...     raise RuntimeError("bad shape")
        Traceback (most recent call last):
        membench.plugins.PluginError: model my_mixers:Broken raised RuntimeError while being built: bad shape
    """
    try:
        yield
    except ConfigError:
        raise
    except Exception as err:
        if not is_external(kind, name):
            raise
        raise PluginError(f"{kind} {name} raised {type(err).__name__} {doing}: {err}") from None


def warn(message: str) -> None:
    """One line on stderr, `membench: warning: ...`; kept in WARNINGS (tests and `membench models` read it)."""
    line = " ".join(message.split())
    WARNINGS.append(line)
    sys.stderr.write(f"membench: warning: {line}\n")


# --- import paths ------------------------------------------------------------------------------------------
def cwd_importable() -> None:
    """Put the current directory first on sys.path, as `python -m` does (the console script does not), and
    on $PYTHONPATH, so that worker processes (spawned, or Ray's, which start elsewhere) import the same paths."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if cwd not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [*paths, cwd] if p)


def resolve(kind: str, path: str) -> type:
    """The class an import path names, ready for the registry of `kind` ("model" or "task").

    Raises ConfigError (one line) for a module that is not found, a missing attribute (with the closest
    names), or an object that is not a model, mixer or task.
    """
    key = (kind, path)
    if key not in _resolved:
        if path.startswith(HF_PREFIX):
            if kind != "model":
                raise ConfigError(f"{kind} {path!r}: hf: names a Hugging Face model, not a {kind}")
            from membench.models.hf import hf_model_class

            _resolved[key] = hf_model_class(path[len(HF_PREFIX):])
        elif path.startswith(PRETRAINED_PREFIX):
            if kind != "model":
                raise ConfigError(f"{kind} {path!r}: pretrained: names a pretrained language model, not a {kind}")
            from membench.models.pretrained import pretrained_model_class

            _resolved[key] = pretrained_model_class(path[len(PRETRAINED_PREFIX):])
        else:
            _resolved[key] = adapt(kind, path, load_object(kind, path))
    return _resolved[key]


def load_object(kind: str, path: str) -> object:
    """Import 'pkg.mod:Name' (Name may be dotted: 'mod:Outer.Inner') and return the object."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{kind} {path!r}: an import path is MODULE:NAME, e.g. my_pkg.mixers:MyMixer")
    if module_name.startswith(".") or any(sep in module_name for sep in "/\\"):
        raise ConfigError(f"{kind} {path!r}: {module_name} is a relative or file path, not a module name; an import "
                          f"path names a module by its dotted name from the current directory or the installed "
                          f"packages (my_pkg.mixers:MyMixer for my_pkg/mixers.py), or give the folder with --include")
    cwd_importable()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ConfigError(f"{kind} {path!r}: module {module_name} not found (looked in the current "
                              f"directory and the installed packages)") from None
        raise ConfigError(f"{kind} {path!r}: module {module_name} imports {err.name}, which is not "
                          f"installed") from None
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = _own_names(obj)
            close = difflib.get_close_matches(part, names, n=3, cutoff=0.5)
            shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            raise ConfigError(f"{kind} {path!r}: module {module_name} has no attribute {part!r} (closest: "
                              f"{', '.join(close) or 'none'}; it defines {shown or 'nothing public'})")
        obj = getattr(obj, part)
    return obj


def _own_names(namespace: object) -> list[str]:
    """Public names defined in a module or class (not the ones it imported)."""
    home = getattr(namespace, "__name__", None)
    return sorted(n for n, v in vars(namespace).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)
                  and getattr(v, "__module__", home) == home)


def describe(obj: object) -> str:
    """'a function', 'a module', 'the class Foo (a subclass of nn.Module)', 'an int', ..."""
    if inspect.isclass(obj):
        bases = [b.__name__ for b in obj.__mro__[1:-1]]
        return f"the class {obj.__name__}" + (f" (a subclass of {', '.join(bases[:2])})" if bases else "")
    if inspect.ismodule(obj):
        return "a module"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return "a function"
    name = type(obj).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def adapt(kind: str, path: str, obj: object) -> type:
    """The registry class for `obj`: a Task or MemoryModel subclass (a named copy), or a wrapped mixer."""
    from torch import nn

    from membench.memtasks.base import Task
    from membench.models.base import MemoryModel
    from membench.models.imported import mixer_model_class

    if kind == "task":
        if inspect.isclass(obj) and issubclass(obj, Task):
            return type(obj.__name__, (obj,), {"name": path, "__module__": obj.__module__,
                                               "__doc__": obj.__doc__})
        raise ConfigError(f"task {path!r} names {describe(obj)}, not a task (a subclass of membench.Task)")
    if inspect.isclass(obj) and issubclass(obj, MemoryModel):
        return type(obj.__name__, (obj,), {"name": path, "__module__": obj.__module__,
                                           "__doc__": obj.__doc__})
    if inspect.isclass(obj) and issubclass(obj, nn.Module):
        if "d_model" not in inspect.signature(obj.__init__).parameters:
            raise ConfigError(f"model {path!r} names {describe(obj)} whose constructor takes no d_model, not a "
                              f"mixer (a mixer is built as Mixer(d_model, [layer_idx,] **params))")
        return mixer_model_class(path, obj)
    raise ConfigError(f"model {path!r} names {describe(obj)}, not a model or mixer (a MemoryModel subclass, "
                      f"or an nn.Module class built as Mixer(d_model, **params))")


# --- plugin folders ----------------------------------------------------------------------------------------
def include(folder: str | os.PathLike) -> list[str]:
    """Import every *.py file of `folder` (sorted by name) once; returns the files imported.

    A file that fails to import gets a warning and is skipped. The folder stays on sys.path (its files may
    import each other) and in $MEMBENCH_INCLUDE, so worker processes include it too.
    """
    where = Path(folder).expanduser().resolve()
    if not where.is_dir():
        raise ConfigError(f"include {folder}: not a directory")
    if where in _included:
        return []
    _included.add(where)
    cwd_importable()
    os.environ[INCLUDE_ENV] = os.pathsep.join(str(p) for p in sorted(_included))
    if str(where) not in sys.path:
        sys.path.insert(0, str(where))
    done = []
    for file in sorted(where.glob("*.py")):
        name = file.stem if file.stem not in sys.modules else f"_membench_include_{abs(hash(str(file)))}"
        with loading(f"include {file}"):
            try:
                spec = importlib.util.spec_from_file_location(name, file)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
                done.append(file.name)
            except Exception as err:  # noqa: BLE001 - a broken plugin must not stop membench
                sys.modules.pop(name, None)
                warn(f"plugin {file} failed to import: {type(err).__name__}: {err}")
    return done


def include_from_environment() -> None:
    """Include the folders a parent process included (spawned workers start with empty registries)."""
    for folder in filter(None, os.environ.get(INCLUDE_ENV, "").split(os.pathsep)):
        if Path(folder).is_dir():
            include(folder)


# --- entry points ------------------------------------------------------------------------------------------
def load_entry_points(registry) -> None:
    """Load the entry points of the registry's group; each either registers itself (a module with decorators)
    or names a class, registered under the entry point's name. Failures are warnings."""
    kind = registry.kind
    for ep in importlib.metadata.entry_points(group=GROUPS[kind]):
        dist = getattr(ep.dist, "name", None) or ep.value
        with loading(f"entry point {dist}"):
            try:
                obj = ep.load()
                if inspect.ismodule(obj):
                    continue  # its decorators registered what it holds
                if ep.name in registry.registered():
                    if registry.get(ep.name) is not obj:
                        warn(f"plugin {ep.name} ({ep.value}, from {dist}) not registered: "
                             f"{kind} {ep.name} already exists ({registry.source(ep.name)})")
                    continue
                cls = adapt(kind, ep.value, obj)
                registry.register(ep.name)(cls)
                if kind == "model":
                    cls.name = ep.name
            except Exception as err:  # noqa: BLE001 - a broken plugin must not stop membench
                warn(f"plugin {ep.name} ({ep.value}, from {dist}) failed to load: {type(err).__name__}: {err}")


def load_plugins(registry) -> None:
    """Everything from outside the package, for one registry: included folders, then entry points."""
    include_from_environment()
    load_entry_points(registry)
