"""The route x rule table of the last run, as text (printed by the suite's conftest at the end)."""

from __future__ import annotations

__all__ = ["TABLE", "render"]

TABLE: list[str] = []
PASS, FAIL, NOT_APPLICABLE = "ok", "FAIL", "n/a"


def render(rules: list[str], rows: list[str], cells: dict[tuple[str, str], tuple[str, str]]) -> list[str]:
    """One line per route, one column per rule (``ok``, ``FAIL`` or ``n/a``); then every failure and
    every declared reason, numbered."""
    width = max(len(r) for r in rows)
    lines = ["rules: " + ", ".join(f"{i + 1}={name}" for i, name in enumerate(rules)), ""]
    lines.append(" " * width + " | " + " ".join(f"{i + 1:>4}" for i in range(len(rules))))
    reasons: dict[str, int] = {}
    failures = []
    for row in rows:
        marks = []
        for rule in rules:
            verdict, detail = cells[(rule, row)]
            if verdict == NOT_APPLICABLE:
                number = reasons.setdefault(detail, len(reasons) + 1)
                marks.append(f"{'-' + str(number):>4}")
            else:
                marks.append(f"{verdict:>4}")
                if verdict == FAIL:
                    failures.append(f"FAIL {row} x {rule}: {detail}")
        lines.append(f"{row:<{width}} | " + " ".join(marks))
    lines.append("")
    lines += [f"-{n}: not applicable: {reason}" for reason, n in reasons.items()]
    lines += failures
    return lines
