"""Drive schemathesis through its Python API: every operation of a schema, valid and invalid requests.

(Schemathesis' own pytest plugin reads a private attribute of pytest's test items that pytest 9 no longer
has, and its lazy loading is the only way to fuzz a product that a fixture starts; so the loop is here and
the plugin is switched off in pyproject.toml, ``-p no:schemathesis``.)
Each operation is its own Hypothesis run; a finding is recorded and the next operation still runs, so one
run reports every finding at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode
from schemathesis.schemas import BaseSchema

__all__ = ["Finding", "FuzzRun", "fuzz_schema"]


@dataclass(frozen=True)
class Finding:
    operation: str
    mode: str
    error: str

    def __str__(self) -> str:
        return f"{self.operation} ({self.mode}): {self.error}"


@dataclass
class FuzzRun:
    fuzzed: list[str] = field(default_factory=list)  # operation labels
    findings: list[Finding] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)  # answers by status code

    def summary(self) -> str:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        return f"{len(self.fuzzed)} operations, {self.statuses.total()} requests ({codes})"


def fuzz_schema(
    schema: BaseSchema,
    call: Callable[..., Any],
    examples: int,
    skip: Iterable[str] = (),
) -> FuzzRun:
    """Fuzz every operation but those in ``skip`` (labels such as ``POST /logout``). ``call(case)`` sends
    a case, validates its answer and returns it."""
    fuzz = settings(
        max_examples=examples,
        derandomize=True,  # a fixed seed: the same requests on every run
        deadline=None,  # a loaded machine is slow; time is not what is checked here
        database=None,  # nothing remembered between runs, so every run is the same
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a finding is reported as found
        suppress_health_check=list(HealthCheck),
    )
    skipped = set(skip)
    outcome = FuzzRun()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in skipped:
            continue
        outcome.fuzzed.append(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @fuzz
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case) -> None:  # type: ignore[no-untyped-def]
                try:
                    outcome.statuses[call(case).status_code] += 1
                except AssertionError as failed:
                    outcome.statuses[getattr(getattr(failed, "response", None), "status_code", 0)] += 1
                    raise

            try:
                run()
            except Unsatisfiable:
                continue  # e.g. no invalid request exists for an operation without parameters
            # Schemathesis reports failures as a BaseExceptionGroup; every finding is collected, then reported.
            except (Exception, BaseExceptionGroup) as exc:
                outcome.findings.append(Finding(operation.label, mode.value, _first_lines(str(exc))))
    return outcome


def _first_lines(text: str, lines: int = 20) -> str:
    return "\n    ".join(text.strip().splitlines()[:lines])
