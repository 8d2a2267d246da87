"""The wording of deploy output, as pure functions: numbers, verdicts, history lines."""

from __future__ import annotations

import io

from rich.console import Console

from workbench.cli._deploy_view import history_view, number, verdict_text, verdicts
from workbench.deploy.history import HistoryEntry


def test_numbers_never_read_in_exponent_notation() -> None:
    assert number(208_400.0) == "208,400"
    assert number(412.3) == "412"
    assert number(12.34) == "12.3"
    assert number(0.0123) == "0.0123"
    assert number(3.0) == "3"
    assert number(0.0) == "0"
    assert "e+" not in number(2.084e5)


def test_a_fail_says_whether_it_rolls_back_now_or_holds() -> None:
    assert verdict_text("fail", True) == "fail → rollback"  # a decisive first failure, too
    assert verdict_text("fail", False) == "fail, holding"
    assert verdict_text("pass", False) == "pass"
    assert "sustained" not in verdict_text("fail", True)


def test_history_shows_who_acted_and_the_verdict_numbers() -> None:
    results = [
        {"rule": "error_rate", "verdict": "pass", "value": 0.004, "threshold": 0.03,
         "sustained": False},
        {"rule": "agreement", "verdict": "fail", "value": 0.744, "threshold": 0.8,
         "sustained": True},
    ]
    assert verdicts(results) == ("error_rate pass 0.004 (threshold 0.03); "
                                 "agreement fail → rollback 0.744 (threshold 0.8)")
    entries = [
        HistoryEntry(1.0e9, "weight", "ok", "1.0.0", "1.1.0", "canary",
                     {"blue": 5, "green": 95}, "step 1/3: 5% to the candidate", by="controller",
                     stable_color="green", details={"canary": "advance", "results": results[:1]}),
        HistoryEntry(1.0e9 + 30, "rollback", "failed", "1.0.0", None, "rolled_back",
                     {"green": 100}, "rule agreement failed", by="controller",
                     stable_color="green", details={"canary": "rollback", "results": results}),
    ]
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(history_view("web", entries, 80))
    text = out.getvalue()
    lines = text.splitlines()
    weight = next(line for line in lines if "  weight " in line)
    assert " 95/5 " in weight  # stable (green) 95, candidate 5: roles, not colours
    rollback = next(line for line in lines if "  rollback " in line)
    assert " 100/0 " in rollback
    assert "by controller: step 1/3: 5% to the candidate" in text
    assert "agreement fail → rollback 0.744" in " ".join(text.split())
    assert lines.index(weight) < lines.index(rollback)  # oldest first
    assert text.endswith("\n")
