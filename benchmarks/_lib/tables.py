"""Tables as aligned plain text (printed) or markdown (saved)."""

import math


def fmt_value(value, spec=".3f"):
    """``value`` formatted with ``spec``; ``-`` for None, ``inf (never)``."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf (never)"
    return format(value, spec)


def text_table(header, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
        )
    return "\n".join(lines)


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
