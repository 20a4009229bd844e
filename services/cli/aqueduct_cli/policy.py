"""Limits, budgets, model exclusions and per-model limits: the same four commands on orgs, teams and users.

Each command replaces what is set at that level with what is given (``--clear`` removes it all, so the
level inherits from the one above again); the answer shows the object as it is now.
"""

# No ``from __future__ import annotations`` here: the commands' help texts are built inside a function
# and typer reads the annotations, which must then be real objects, not strings.
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

import typer

from aqueduct_cli.client import CliError
from aqueduct_cli.common import AsJson, call, compact, emit_one

__all__ = ["add_policy_commands"]

Rpm = Annotated[int | None, typer.Option("--rpm", help="Requests per minute", min=1)]
Itpm = Annotated[int | None, typer.Option("--itpm", help="Input tokens per minute", min=1)]
Otpm = Annotated[int | None, typer.Option("--otpm", help="Output tokens per minute", min=1)]
Clear = Annotated[bool, typer.Option("--clear", help="Remove everything set at this level (inherit)")]


def limits_body(rpm: int | None, itpm: int | None, otpm: int | None) -> dict[str, int]:
    return compact(
        {"requests_per_minute": rpm, "input_tokens_per_minute": itpm, "output_tokens_per_minute": otpm}
    )


def add_policy_commands(
    app: typer.Typer, noun: str, resolve: Callable[[str], dict[str, Any]], path: str
) -> None:
    """``limits``, ``budgets``, ``exclude`` and ``model-limits`` on ``app``; ``path`` is the PATCH route
    with ``{id}``."""

    def patch(ref: str, body: dict[str, Any], as_json: bool, what: str) -> None:
        target = resolve(ref)
        answer = call("PATCH", path.format(id=target["id"]), json=body)
        name = target.get("name") or target.get("email") or target["id"]
        emit_one(answer, f"{what} of {noun} {name} set: {_describe(body)}", as_json)

    @app.command("limits")
    def limits(
        ref: Annotated[str, typer.Argument(help=f"The {noun} (id or name)")],
        rpm: Rpm = None,
        itpm: Itpm = None,
        otpm: Otpm = None,
        clear: Clear = False,
        as_json: AsJson = False,
    ) -> None:
        """Set requests and tokens per minute at this level (unset ones are inherited)."""
        body = {} if clear else limits_body(rpm, itpm, otpm)
        if not body and not clear:
            raise CliError("give --rpm, --itpm or --otpm (or --clear)")
        patch(ref, {"limits": body}, as_json, "Limits")

    @app.command("budgets")
    def budgets(
        ref: Annotated[str, typer.Argument(help=f"The {noun} (id or name)")],
        daily_usd: Annotated[str | None, typer.Option(help="Dollars per UTC day, e.g. 5 or 0.25")] = None,
        monthly_usd: Annotated[str | None, typer.Option(help="Dollars per calendar month (UTC)")] = None,
        daily_tokens: Annotated[int | None, typer.Option(help="Tokens per UTC day", min=1)] = None,
        monthly_tokens: Annotated[int | None, typer.Option(help="Tokens per calendar month", min=1)] = None,
        clear: Clear = False,
        as_json: AsJson = False,
    ) -> None:
        """Set spending budgets at this level, replacing those set here before (give every budget to keep);
        a request that would cross one is refused."""
        body = compact(
            {
                "daily_usd": _money(daily_usd, "--daily-usd"),
                "monthly_usd": _money(monthly_usd, "--monthly-usd"),
                "daily_tokens": daily_tokens,
                "monthly_tokens": monthly_tokens,
            }
        )
        if not body and not clear:
            raise CliError("give --daily-usd, --monthly-usd, --daily-tokens or --monthly-tokens (or --clear)")
        sent = {} if clear else body
        target = resolve(ref)
        answer = call("PATCH", path.format(id=target["id"]), json={"budgets": sent})
        name = target.get("name") or target.get("email") or target["id"]
        message = f"Budgets of {noun} {name} set: {_describe({'budgets': sent})}"
        # A budget is a spending cap: one this call removes is named, never dropped silently.
        removed = {k: v for k, v in (target.get("budgets") or {}).items() if k not in sent}
        if removed and sent:
            message += f" (removed: {_describe({'budgets': removed})}; give every budget to keep)"
        emit_one(answer, message, as_json)

    @app.command("exclude")
    def exclude(
        ref: Annotated[str, typer.Argument(help=f"The {noun} (id or name)")],
        models: Annotated[
            list[str] | None, typer.Argument(help="Models to exclude (replaces the list; none: clear it)")
        ] = None,
        as_json: AsJson = False,
    ) -> None:
        """Exclude models at this level (a model excluded higher up can't be allowed lower down)."""
        patch(ref, {"excluded_models": list(models or [])}, as_json, "Excluded models")

    @app.command("model-limits")
    def model_limits(
        ref: Annotated[str, typer.Argument(help=f"The {noun} (id or name)")],
        model: Annotated[str, typer.Argument(help="The model these limits apply to")],
        rpm: Rpm = None,
        itpm: Itpm = None,
        otpm: Otpm = None,
        clear: Clear = False,
        as_json: AsJson = False,
    ) -> None:
        """Set limits for one model at this level (on top of the general limits)."""
        target = resolve(ref)
        current = dict(target.get("model_limits") or {})
        if clear:
            current.pop(model, None)
        else:
            body = limits_body(rpm, itpm, otpm)
            if not body:
                raise CliError("give --rpm, --itpm or --otpm (or --clear)")
            current[model] = body
        patch(target["id"], {"model_limits": current}, as_json, f"Limits for {model}")


def _money(value: str | None, flag: str) -> str | None:
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except ArithmeticError as exc:
        raise CliError(f"{flag}: {value!r} is not an amount of dollars") from exc
    if not amount.is_finite() or amount <= 0:
        raise CliError(f"{flag}: must be a positive amount of dollars")
    return format(amount, "f")  # 1e-9 is sent and shown as 0.000000001


def _describe(body: dict[str, Any]) -> str:
    value = next(iter(body.values()))
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "cleared (inherited)"
    if isinstance(value, list):
        return ", ".join(value) or "none"
    return str(value)
