"""Printing answers as a table, JSON or CSV."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["print_objects", "print_rows"]


def print_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], output: str = "table") -> None:
    if output == "json":
        print(json.dumps([dict(zip(columns, row, strict=False)) for row in rows], indent=2, default=str))
        return
    if output == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
        return
    cells = [[str(c) for c in columns]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for index, row in enumerate(cells):
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=False)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


def print_objects(objects: Sequence[dict[str, Any]], columns: Sequence[str], output: str = "table") -> None:
    if output == "json":
        print(json.dumps(list(objects), indent=2, default=str))
        return
    print_rows(columns, [[obj.get(c) for c in columns] for obj in objects], output)
