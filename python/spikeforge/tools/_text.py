"""Plain-text tables and number formatting for the tools' reports and the command line."""

from __future__ import annotations

import math

__all__ = ["fmt", "format_table"]


def fmt(x, spec: str = ".2f", none: str = "n/a") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return none
    return format(x, spec)


def format_table(headers: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Plain-text table; the first `left` columns are left-aligned, the others right-aligned.

    A row shorter than the headers (e.g. [label, "n/a: reason"]) prints its last cell unpadded after
    the aligned ones, so a long reason does not widen the table.
    """
    full = [headers] + [r for r in rows if len(r) == len(headers)]
    widths = [max(len(str(r[i])) for r in full) for i in range(len(headers))]
    for r in rows:
        for i in range(min(left, len(r) - 1)):
            widths[i] = max(widths[i], len(str(r[i])))

    def line(cells):
        out = []
        short = len(cells) < len(headers)
        for i, c in enumerate(cells):
            if short and i == len(cells) - 1:
                out.append(str(c))
            else:
                out.append(str(c).ljust(widths[i]) if i < left else str(c).rjust(widths[i]))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep] + [line(r) for r in rows])
