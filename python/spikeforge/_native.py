"""Loads the native module spikeforge._C. ``spikeforge.ops`` runs its kernels; ``spikeforge.cli.info`` and
``spikeforge.testing`` only ask it what was built."""

from __future__ import annotations

from typing import Any

# torch first: its wheel ships libgomp.so.1, and loading it before _C makes the native kernels share
# torch's OpenMP runtime (same soname) instead of starting a second thread pool that would spin
# against torch's on the same cores.
import torch  # noqa: F401

# Any: the extension has no type stubs; callers test `native is None` before using it
native: Any = None
native_error: str | None = None
try:
    # the compiled extension is invisible to mypy (no stubs) and rebinds the Any declared above
    from . import _C as native  # type: ignore[attr-defined,no-redef]  # noqa: F401 (re-exported: the one handle on _C)
except ImportError as e:  # a source checkout that was never built: ops fall back to reference
    native_error = f"{type(e).__name__}: {e}"
