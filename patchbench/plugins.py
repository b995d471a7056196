"""The plugin host: loads built-in and third-party plugins and builds the component registry.

Built-in components are registered by the modules in :data:`DEFAULT_PLUGINS`, exactly as a
third party registers them through the ``patchbench`` entry-point group. A plugin that fails
to import or to register is reported with one warning and skipped (a built-in one is an
error); ``PATCHBENCH_DISABLE_PLUGINS`` (comma-separated plugin names) blocks plugins by name.
Built-in plugins are named ``patchbench.<module>`` (``patchbench.schedules``).
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Callable

import pluggy

from . import __version__, hookspecs
from .components import KINDS, Component, singular
from .conformance import component_problems
from .errors import PatchbenchError, warn

DEFAULT_PLUGINS = (
    "patchbench.builtin.datasets",
    "patchbench.builtin.patches",
    "patchbench.builtin.architectures",
    "patchbench.builtin.schedules",
    "patchbench.builtin.metrics",
    "patchbench.builtin.regularizers",
    "patchbench.builtin.theory",
    "patchbench.builtin.optimizers",
    "patchbench.builtin.augmentations",
    "patchbench.builtin.mixing",
    "patchbench.builtin.squeezing",
    "patchbench.builtin.adversarial",
    "patchbench.builtin.trackers",
)
ENTRY_POINT_GROUP = "patchbench"
DISABLE_ENV = "PATCHBENCH_DISABLE_PLUGINS"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...] = ()
    unknown_hooks: tuple[str, ...] = ()
    """Hook implementations whose names patchbench does not define (a typo): never called."""

    @property
    def builtin(self) -> bool:
        return self.distribution == "patchbench"


@dataclass(frozen=True)
class Entry:
    """A registered component and where it came from."""

    cls: type[Component]
    plugin: str
    distribution: str
    version: str
    kind: str = ""
    problem: str | None = None
    """Why the component cannot be used (it breaks the contract), or None."""

    @property
    def name(self) -> str:
        return getattr(self.cls, "name", None) or self.cls.__name__

    @property
    def origin(self) -> str:
        """The component as error messages name it: kind, name, plugin and distribution."""
        return (f"{singular(self.kind)} {self.name!r} (plugin {self.plugin!r}, "
                f"{self.distribution} {self.version})")


@dataclass
class Registry:
    """Components by kind and name, with each one's plugin of origin."""

    entries: dict[str, dict[str, Entry]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS})
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    clashes: dict[tuple[str, str], list[Entry]] = field(default_factory=dict)
    """Names that two plugins registered: (kind, name) -> both entries. Such a name is not
    usable until one plugin is disabled, but the other components are."""

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def clash_messages(self) -> list[str]:
        return [clash_message(kind, name, found)
                for (kind, name), found in self.clashes.items()]

    def get(self, kind: str, name: str) -> Entry:
        """The entry for ``name`` (``base:variant`` looks up ``base``), or a helpful error."""
        base, colon, variant = name.partition(":")
        if (kind, base) in self.clashes:
            raise PatchbenchError(clash_message(kind, base, self.clashes[(kind, base)]))
        entry = self.entries[kind].get(base)
        if entry is not None and entry.problem:
            raise PatchbenchError(f"{entry.origin} cannot be used: {entry.problem}")
        if entry is not None and entry.cls.accepts_variant and not colon:
            raise PatchbenchError(f"{singular(kind)} {name!r} needs a variant: {name}:<name>")
        if entry is None or bool(colon) != entry.cls.accepts_variant:
            raise PatchbenchError(unknown_name_message(singular(kind), name, self.names(kind)))
        if colon:
            entry.cls.check_variant(variant)
        return entry

    def build(self, kind: str, name: str, params: dict | None = None) -> Component:
        """Validate ``params`` against the component's Params and instantiate it; the
        component knows its origin (``component.origin``) for boundary checks."""
        entry = self.get(kind, name)
        variant = name.partition(":")[2] or None
        component = entry.cls(entry.cls.Params(**(params or {})), variant=variant)
        component.origin = entry.origin
        return component


def clash_message(kind: str, name: str, found: list[Entry]) -> str:
    a, b = found[0], found[1]
    return (f"{singular(kind)} {name!r} is registered twice: by plugin {a.plugin!r} "
            f"({a.distribution}) and by plugin {b.plugin!r} ({b.distribution}); disable one "
            f"with {DISABLE_ENV}")


def unknown_name_message(what: str, name: str, available: list[str]) -> str:
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {what} {name!r}{hint} available: {', '.join(available) or '(none)'}"


def disabled_plugins() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


HOOK_NAMES = tuple(f"register_{kind}" for kind in KINDS)


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> tuple[str, ...]:
    """Hook implementations of ``plugin`` that no hookspec defines: pluggy registers them
    without complaint, and they are never called (``register_patchs``)."""
    return tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()
                        if h.name not in HOOK_NAMES))


def _unmarked_hooks(plugin: object) -> list[str]:
    """``register_*`` functions of ``plugin`` without ``@hookimpl``: pluggy skips them."""
    found = []
    for attr in sorted(dir(plugin)):
        if not attr.startswith("register_"):
            continue
        fn = getattr(plugin, attr, None)
        if callable(fn) and not isinstance(fn, type) \
                and getattr(fn, "patchbench_impl", None) is None:
            found.append(attr)
    return found


def _load_plugins(pm: pluggy.PluginManager, warn: Callable[[str], None]
                  ) -> dict[str, PluginInfo]:
    disabled = disabled_plugins()
    infos: dict[str, PluginInfo] = {}
    candidates: list[tuple[str, Callable[[], object], str, str]] = [
        (builtin_name(modname), lambda m=modname: importlib.import_module(m),
         "patchbench", __version__) for modname in DEFAULT_PLUGINS
    ]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        candidates.append((ep.name, ep.load, dist, version))
    for name, load, dist, version in candidates:
        if name in disabled:
            continue
        try:
            plugin = load()
            pm.register(plugin, name=name)
        except Exception as exc:  # a broken plugin must not break the CLI
            if dist == "patchbench":  # ... but a broken built-in one is patchbench's bug
                raise
            warn(f"plugin {name!r} ({dist}) failed to load: {type(exc).__name__}: {exc}")
            continue
        for fn in _unmarked_hooks(plugin):
            warn(f"plugin {name!r} ({dist}): {fn} is not decorated with @hookimpl; pluggy "
                 f"skips it, so it is never called (add `from patchbench import hookimpl` "
                 f"and `@hookimpl` above it)")
        unknown = _unknown_hooks(pm, plugin)
        for hook in unknown:
            close = difflib.get_close_matches(hook, HOOK_NAMES, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warn(f"plugin {name!r} ({dist}): {hook} is not a patchbench hook{hint}; it is "
                 f"never called. The hooks: {', '.join(HOOK_NAMES)}")
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()
                             if h.name in HOOK_NAMES))
        infos[name] = PluginInfo(name, dist, version, hooks, unknown)
    return infos


def builtin_name(modname: str) -> str:
    """``patchbench.builtin.schedules`` -> ``patchbench.schedules``: not the bare kind, so
    that disabling a third-party plugin called ``schedules`` leaves the built-in ones."""
    return "patchbench." + modname.rsplit(".", 1)[-1]


def build_registry(warn: Callable[[str], None] = warn) -> Registry:
    """Load every plugin and collect the components they register, each checked against its
    interface (:func:`patchbench.conformance.component_problems`). A third-party plugin that
    fails, or registers a component that breaks the contract, is reported (the component
    is then unusable, with that reason); a built-in one that does is an error."""
    pm = pluggy.PluginManager("patchbench")
    pm.add_hookspecs(hookspecs)
    registry = Registry(plugins=_load_plugins(pm, warn))
    for kind, base in KINDS.items():
        caller = getattr(pm.hook, f"register_{kind}")
        # Calling each implementation on its own tells us which plugin gave which component
        # and confines a failing plugin to itself.
        for impl in caller.get_hookimpls():
            info = registry.plugins[impl.plugin_name]
            staged: list[type] = []

            def register(cls: type, _base: type = base) -> None:
                if not (isinstance(cls, type) and issubclass(cls, _base)):
                    raise TypeError(f"register_{kind} expects a {_base.__name__} subclass, "
                                    f"got {cls!r}")
                staged.append(cls)

            try:
                impl.function(register=register)
            except Exception as exc:
                if info.builtin:
                    raise
                warn(f"plugin {info.name!r} ({info.distribution}) failed in register_{kind}: "
                     f"{type(exc).__name__}: {exc}")
                continue
            for cls in staged:
                entry = Entry(cls, info.name, info.distribution, info.version, kind)
                problems = component_problems(cls, kind)
                if problems:
                    if info.builtin:
                        raise RuntimeError(f"{entry.origin}: {'; '.join(problems)}")
                    entry = replace(entry, problem="; ".join(problems))
                    warn(f"{entry.origin}: {entry.problem}")
                other = registry.entries[kind].pop(entry.name, None)
                if other is not None or (kind, entry.name) in registry.clashes:
                    registry.clashes.setdefault((kind, entry.name), [other] if other else [])
                    registry.clashes[(kind, entry.name)].append(entry)
                    continue
                registry.entries[kind][entry.name] = entry
    return registry


_cached: Registry | None = None


def get_registry(allow_clashes: bool = False) -> Registry:
    """The process-wide registry, built on first use. Two plugins that register one name
    stop every command (naming both) but ``patchbench plugins``, which shows them."""
    global _cached
    if _cached is None:
        _cached = build_registry()
    if _cached.clashes and not allow_clashes:
        raise PatchbenchError(_cached.clash_messages()[0])
    return _cached
