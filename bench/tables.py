"""The one markdown table the benches print: rows of dicts, every key a column (in first-seen order)."""

from __future__ import annotations


def markdown_table(rows: list[dict], *, hidden: tuple[str, ...] = ()) -> str:
    """``rows`` as a markdown table, a column per key (``hidden`` ones left out); a missing or None cell is blank."""
    columns = [key for key in dict.fromkeys(key for row in rows for key in row) if key not in hidden]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if row.get(c) is None else str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
