"""The plugin host: loads built-in and third-party plugins and builds the component registry.

Built-in components are registered by the modules in :data:`DEFAULT_PLUGINS`, exactly as a
third party registers them through the ``patchbench`` entry-point group. A plugin that fails
to import or to register is reported with one warning and skipped; ``PATCHBENCH_DISABLE_PLUGINS``
(comma-separated plugin names) blocks plugins by name.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Callable

import pluggy

from . import __version__, hookspecs
from .components import KINDS, Component, singular
from .errors import PatchbenchError

DEFAULT_PLUGINS = (
    "patchbench.builtin.datasets",
    "patchbench.builtin.patches",
    "patchbench.builtin.architectures",
    "patchbench.builtin.schedules",
    "patchbench.builtin.metrics",
    "patchbench.builtin.regularizers",
    "patchbench.builtin.theory",
)
ENTRY_POINT_GROUP = "patchbench"
DISABLE_ENV = "PATCHBENCH_DISABLE_PLUGINS"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entry:
    """A registered component and where it came from."""

    cls: type[Component]
    plugin: str
    distribution: str
    version: str

    @property
    def name(self) -> str:
        return self.cls.name


@dataclass
class Registry:
    """Components by kind and name, with each one's plugin of origin."""

    entries: dict[str, dict[str, Entry]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS})
    plugins: dict[str, PluginInfo] = field(default_factory=dict)

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Entry:
        """The entry for ``name`` (``base:variant`` looks up ``base``), or a helpful error."""
        base, colon, variant = name.partition(":")
        entry = self.entries[kind].get(base)
        if entry is not None and entry.cls.accepts_variant and not colon:
            raise PatchbenchError(f"{singular(kind)} {name!r} needs a variant: {name}:<name>")
        if entry is None or bool(colon) != entry.cls.accepts_variant:
            raise PatchbenchError(unknown_name_message(singular(kind), name, self.names(kind)))
        if colon:
            entry.cls.check_variant(variant)
        return entry

    def build(self, kind: str, name: str, params: dict | None = None) -> Component:
        """Validate ``params`` against the component's Params and instantiate it."""
        entry = self.get(kind, name)
        variant = name.partition(":")[2] or None
        return entry.cls(entry.cls.Params(**(params or {})), variant=variant)


def unknown_name_message(what: str, name: str, available: list[str]) -> str:
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {what} {name!r}{hint} available: {', '.join(available) or '(none)'}"


def _warn(message: str) -> None:
    print(f"patchbench: warning: {message}", file=sys.stderr)


def disabled_plugins() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _load_plugins(pm: pluggy.PluginManager, warn: Callable[[str], None]
                  ) -> dict[str, PluginInfo]:
    disabled = disabled_plugins()
    infos: dict[str, PluginInfo] = {}
    candidates: list[tuple[str, Callable[[], object], str, str]] = [
        (modname.rsplit(".", 1)[1], lambda m=modname: importlib.import_module(m),
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
            warn(f"plugin {name!r} ({dist}) failed to load: {type(exc).__name__}: {exc}")
            continue
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        infos[name] = PluginInfo(name, dist, version, hooks)
    return infos


def build_registry(warn: Callable[[str], None] = _warn) -> Registry:
    """Load every plugin and collect the components they register."""
    pm = pluggy.PluginManager("patchbench")
    pm.add_hookspecs(hookspecs)
    registry = Registry(plugins=_load_plugins(pm, warn))
    for kind, base in KINDS.items():
        caller = getattr(pm.hook, f"register_{kind}")
        # Calling each implementation on its own tells us which plugin gave which component
        # and confines a failing plugin to itself.
        for impl in caller.get_hookimpls():
            info = registry.plugins[impl.plugin_name]
            staged: list[Entry] = []

            def register(cls: type, _info: PluginInfo = info, _base: type = base) -> None:
                if not (isinstance(cls, type) and issubclass(cls, _base)):
                    raise TypeError(f"register_{kind} expects a {_base.__name__} subclass, "
                                    f"got {cls!r}")
                staged.append(Entry(cls, _info.name, _info.distribution, _info.version))

            try:
                impl.function(register=register)
            except Exception as exc:
                warn(f"plugin {info.name!r} ({info.distribution}) failed in register_{kind}: "
                     f"{type(exc).__name__}: {exc}")
                continue
            for entry in staged:
                other = registry.entries[kind].get(entry.name)
                if other is not None:
                    raise PatchbenchError(
                        f"{singular(kind)} {entry.name!r} is registered twice: by plugin "
                        f"{other.plugin!r} ({other.distribution}) and by plugin "
                        f"{entry.plugin!r} ({entry.distribution}); disable one with "
                        f"{DISABLE_ENV}")
                registry.entries[kind][entry.name] = entry
    return registry


_cached: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _cached
    if _cached is None:
        _cached = build_registry()
    return _cached
