"""Loads the native module spikeforge._C. ``spikeforge.ops`` is its only user."""
from __future__ import annotations

native = None
native_error: str | None = None
try:
    from . import _C as native  # type: ignore[no-redef]
except ImportError as e:  # a source checkout that was never built: ops fall back to reference
    native_error = f"{type(e).__name__}: {e}"
