"""The usage page's own pieces: SVG charts, time windows and series built from accounting's answers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

import pytest

from aqueduct_ui.application.usage import _series, resolve_query
from aqueduct_ui.domain.charts import Series, bar_chart, format_usd, line_chart, nice_ceiling
from aqueduct_ui.domain.forms import FormError
from aqueduct_ui.domain.viewer import Viewer

NOW = datetime(2026, 11, 22, 16, 30, 12, tzinfo=UTC)
USER = Viewer("u1", "Uma", "uma@example.org", "org-1")
ADMIN = Viewer("a1", "Ada", "ada@example.org", "org-1", admin=True)


def parse(svg: str) -> ElementTree.Element:
    return ElementTree.fromstring(svg)  # well-formed XML, or this raises


def test_axis_maxima_are_round_numbers() -> None:
    assert [nice_ceiling(v) for v in (0, 0.7, 1, 3, 7, 13, 2400, 0.031)] == [1, 1, 1, 5, 10, 20, 2500, 0.05]


def test_line_chart_draws_one_line_per_series_inside_the_plot() -> None:
    start = NOW - timedelta(hours=3)
    hours = [start + timedelta(hours=i) for i in range(4)]
    svg = line_chart(
        [
            Series("gpt-x", [(h, v) for h, v in zip(hours, (0, 5, 10, 2), strict=True)]),
            Series("llama", [(h, 1) for h in hours]),
        ],
        start,
        NOW,
        "Requests per hour",
    )
    root = parse(svg)
    ns = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f"{ns}polyline") or root.findall("polyline")
    assert len(lines) == 2
    assert root.get("role") == "img"
    assert "Requests per hour" in svg and "gpt-x: 17 in total" in svg
    for line in lines:
        for pair in line.get("points", "").split():
            x, y = map(float, pair.split(","))
            assert 56 <= x <= 600 - 12 and 12 <= y <= 240 - 28
    # The highest point (10) sits on the top grid line, whose axis label is the rounded maximum.
    assert ">10</text>" in svg


def test_labels_are_escaped() -> None:
    svg = line_chart(
        [Series("<script>x</script>", [(NOW, 1.0), (NOW, 2.0)])], NOW - timedelta(hours=1), NOW, "t"
    )
    assert "<script>" not in svg
    parse(svg)
    bars = bar_chart([("a&b <c>", 2.0)], "Cost by model", format_usd)
    assert "a&amp;b &lt;c&gt;" in bars
    parse(bars)


def test_money_keeps_two_significant_digits() -> None:
    assert [format_usd(v) for v in (0, 0.00003, 0.0042, 0.5, 1234.5)] == [
        "$0",
        "$0.000030",
        "$0.0042",
        "$0.50",
        "$1,234.50",
    ]


def test_empty_charts_say_so() -> None:
    assert "No usage in this period" in line_chart([], NOW - timedelta(days=1), NOW, "Requests")
    assert "No usage in this period" in bar_chart([], "Cost")


def test_bars_are_proportional() -> None:
    svg = bar_chart([("big", 4.0), ("small", 1.0)], "Requests")
    widths = [float(w) for w in re.findall(r'<rect [^>]*width="([\d.]+)"', svg)]
    assert widths[0] == pytest.approx(4 * widths[1])


def test_time_ranges_and_buckets() -> None:
    day = resolve_query(USER, "24h", None, None, None, now=NOW)
    assert (day.bucket, day.group_by, day.until) == ("hour", "model", NOW)
    assert day.since == datetime(2026, 11, 21, 16, 0, tzinfo=UTC)
    month = resolve_query(USER, "30d", None, None, "token", now=NOW)
    assert month.bucket == "day" and month.group_by == "token"
    custom = resolve_query(ADMIN, "custom", "2026-11-01", "2026-11-02", "org", now=NOW)
    assert (custom.since, custom.until, custom.bucket) == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 11, 3, tzinfo=UTC),
        "hour",
    )
    assert custom.group_by == "org"


def test_a_plain_user_cannot_group_by_other_people() -> None:
    assert resolve_query(USER, "7d", None, None, "user", now=NOW).group_by == "model"
    assert resolve_query(ADMIN, "7d", None, None, "user", now=NOW).group_by == "user"


def test_bad_dates_are_a_form_error() -> None:
    with pytest.raises(FormError):
        resolve_query(USER, "custom", "yesterday", None, None, now=NOW)
    with pytest.raises(FormError):
        resolve_query(USER, "custom", "2026-11-05", "2026-11-01", None, now=NOW)


def test_series_fill_empty_buckets_and_fold_small_groups_into_other() -> None:
    query = resolve_query(ADMIN, "24h", None, None, "model", now=NOW)
    points = [
        {"bucket": "2026-11-22T10:00:00Z", "key": "a", "requests": 3, "input_tokens": 10, "output_tokens": 5},
        {"bucket": "2026-11-22T12:00:00Z", "key": "a", "requests": 1, "input_tokens": 1, "output_tokens": 1},
        {"bucket": "2026-11-22T12:00:00Z", "key": "z", "requests": 2, "input_tokens": 0, "output_tokens": 0},
    ]
    requests = _series(points, ["a"], {"a": "Model A"}, query, "requests")
    assert [s.label for s in requests] == ["Model A", "other"]
    assert len(requests[0].points) == 25  # every hour of the window, zeros included
    assert requests[0].total == 4 and requests[1].total == 2
    tokens = _series(points, ["a"], {}, query, "tokens")
    assert tokens[0].total == 17
