"""Plain-text formatting shared by the result table and the session summary."""

from __future__ import annotations

from collections.abc import Sequence


def number(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.3e}" if abs(x) < 1e-3 or abs(x) >= 1e4 else f"{x:.6g}"


def error(x: float | None) -> str:
    """A relative error, to three digits."""
    return "-" if x is None else f"{x:.2e}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Left-aligned columns as wide as their widest cell."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = []
    for row in (header, *rows):
        lines.append(indent + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    return lines
