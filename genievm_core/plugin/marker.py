"""The ``@hookimpl`` marker, in a module of its own so the built-in plugins need not import the host.

Plugins import it from ``genievm_core.plugin``, which re-exports it.
"""

from __future__ import annotations

import pluggy

__all__ = ["hookimpl"]

hookimpl = pluggy.HookimplMarker("genievm")
"""Marks a function as the implementation of a GenieVM hook."""
