"""Property-based fuzzing of every HTTP API of the launched product, from each service's OpenAPI document.

Schemathesis generates valid and invalid requests for every operation a service's ``/openapi.json`` lists,
sent as an Admin (so authenticated paths are reached, not only 401s); the rule checked is the one every
client relies on: no answer is a 5xx. The seed and the number of examples per operation are fixed, so a
run is repeatable and short; ``AQUEDUCT_FUZZ_EXAMPLES`` raises the budget for a longer hunt.

Each finding became a regression test in the service's own tests (see the README, "Fuzzing").
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error

from tests.fuzz.conftest import AdminCredentials
from tests.fuzz.runner import fuzz_schema
from tests.support.stack import Stack

# About a minute per service on a quiet machine; the timeout leaves room for a loaded one.
pytestmark = [pytest.mark.fuzz, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

EXAMPLES = int(os.environ.get("AQUEDUCT_FUZZ_EXAMPLES", "10"))
CHECKS = [not_a_server_error]

# Operations left out, each with its reason (never silently):
SKIP = {
    # Takes no input; rotating twice retires the key of the fuzzer's own session (rotation is tested in
    # services/auth/tests).
    "auth": ["POST /auth/keys/rotate"],
    # Takes no input and ends the fuzzer's own session (sign-out is tested in the browser tests).
    "ui": ["POST /logout"],
}


def _fuzz(stack: Stack, service: str, prepare=lambda case: None, **send) -> None:  # type: ignore[no-untyped-def]
    base = stack.urls[service]

    def call(case):  # type: ignore[no-untyped-def]
        prepare(case)
        return case.call_and_validate(base_url=base, checks=CHECKS, **send)

    run = fuzz_schema(
        schemathesis.openapi.from_url(f"{base}/openapi.json"),
        call,
        EXAMPLES,
        SKIP.get(service, ()),
    )
    print(f"\nfuzzed {service}: {run.summary()}")
    assert run.fuzzed, f"{service} publishes no operation to fuzz"
    # Authenticated paths were reached: most answers are not "sign in first".
    assert run.statuses[401] < run.statuses.total() / 2, run.summary()
    if run.findings:
        # The service's own account of what went wrong: the tracebacks in its log.
        log = stack.data_dir / "logs" / f"{service}.log"
        lines = log.read_text(errors="replace").splitlines()[-3000:] if log.exists() else []
        logged = "\n".join(
            line for line in lines if "Error" in line or line.startswith(("  File", "Traceback"))
        )
        found = "\n".join(map(str, run.findings))
        pytest.fail(
            f"{service}: {len(run.findings)} finding(s)\n{found}\n--- logged by the product ---\n{logged}"
        )


# The order matters: the directory's fuzzing changes what the others see (it publishes terms of service
# the Admin has not accepted, excludes models), so the data plane and the reports go first.


def _known_model(case) -> None:  # type: ignore[no-untyped-def]
    """Name the stack's model, so requests pass model routing and reach the limits, the upstream and the
    usage record instead of stopping at "model not found"."""
    if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
        case.body["model"] = "fake-model"


def test_proxy_never_answers_5xx(fuzz_stack: Stack, admin: AdminCredentials) -> None:
    _fuzz(fuzz_stack, "proxy", prepare=_known_model, headers=admin.bearer(admin.api_token))


def test_accounting_never_answers_5xx(fuzz_stack: Stack, admin: AdminCredentials) -> None:
    _fuzz(fuzz_stack, "accounting", headers=admin.bearer(admin.management_token))


def test_ui_never_answers_5xx(fuzz_stack: Stack, admin: AdminCredentials) -> None:
    _fuzz(
        fuzz_stack,
        "ui",
        headers={"X-CSRF-Token": admin.ui_csrf},
        cookies=admin.ui_cookies,
        allow_redirects=False,
    )


def test_auth_never_answers_5xx(fuzz_stack: Stack, admin: AdminCredentials) -> None:
    _fuzz(fuzz_stack, "auth", headers=admin.bearer(admin.session))


def test_directory_never_answers_5xx(fuzz_stack: Stack, admin: AdminCredentials) -> None:
    _fuzz(fuzz_stack, "directory", headers=admin.bearer(admin.session))
