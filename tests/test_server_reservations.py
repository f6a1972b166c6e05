"""``/v1/reserve``: a decision that holds its budget, so concurrent callers cannot all pass one budget check.

A real ``policyengine serve`` on 127.0.0.1 with each kind of ledger (in memory,
a DuckDB file, PostgreSQL), 32 threads of real HTTP clients.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from server_process import BUDGET_RACE, BUDGETED_CALL, Server, audit_records, verify



def at_once(count: int, work: Any) -> list[Any]:
    """``work()`` in ``count`` threads started together; the results in no particular order."""
    results: list[Any] = []
    lock = threading.Lock()
    start = threading.Barrier(count)

    def one() -> None:
        start.wait()
        result = work()
        with lock:
            results.append(result)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.fixture(params=["memory", "duckdb", "postgres"])
def ledger_args(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, ...]:
    if request.param == "memory":
        return ()
    if request.param == "duckdb":
        return ("--ledger", str(tmp_path / "budgets.duckdb"))
    return ("--state", request.getfixturevalue("postgres_url"))


def test_concurrent_reservations_never_hold_more_than_the_budget(tmp_path: Path, ledger_args: tuple[str, ...]) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "race.policy").write_text(BUDGET_RACE)
    with Server(tmp_path, "--rules", str(tmp_path / "rules"), *ledger_args) as server:
        decided = at_once(32, lambda: server.post("/v1/decide", BUDGETED_CALL).json()["effect"])
        assert decided == ["allow"] * 32  # a decision alone holds nothing: every one passes the same check

        def reserve() -> dict[str, Any]:
            return server.post("/v1/reserve", {"request": BUDGETED_CALL}).json()

        answers = at_once(32, reserve)
        assert Counter(a["decision"]["effect"] for a in answers) == {"allow": 25, "deny": 7}  # 25 x 400 = 10,000
        held = [a["reservation"] for a in answers if a["decision"]["effect"] == "allow"]
        refused = [a for a in answers if a["decision"]["effect"] == "deny"]
        assert all(isinstance(token, str) for token in held)
        assert all(a["reservation"] is None and a["decision"]["reasons"][0]["rule"] == "race.shared" and
                   "calls in flight" in a["decision"]["reasons"][0]["message"] for a in refused)

        for token in held[:5]:  # five calls did not happen: their holds come back
            assert server.post("/v1/release", {"reservation": token}).status_code == 200
        again = at_once(8, reserve)
        assert Counter(a["decision"]["effect"] for a in again) == {"allow": 5, "deny": 3}
        held = held[5:] + [a["reservation"] for a in again if a["reservation"]]

        for token in held:  # the calls happened and used what they estimated
            charged = server.post("/v1/charge", {"reservation": token, "tokens": 400})
            assert charged.status_code == 200 and charged.json()["charged"] == ["role:caller"], charged.text
        after = server.post("/v1/decide", BUDGETED_CALL).json()
        assert after["effect"] == "deny" and after["reasons"][0]["rule"] == "race.shared"  # 10,000 spent

        for body, path in (({"reservation": "not-a-token"}, "/v1/charge"), ({"reservation": 5}, "/v1/release"),
                           ({"reservation": held[0], "request": BUDGETED_CALL}, "/v1/charge"),
                           ({"request": 1}, "/v1/reserve")):
            assert server.post(path, body).status_code == 400, (path, body)
    decisions = [p for event, p in audit_records(server.db).values() if event == "decision"]
    assert len(decisions) == 32 + 32 + 8 + 1  # every reservation's decision is recorded, refusals included
    result = verify(tmp_path, server.db, server.key)
    assert result.returncode == 0, result.stdout + result.stderr


def _edited(token: str, change: Any) -> str:
    """``token`` with its content changed by ``change`` and its signature kept."""
    body, _, signature = token.rpartition(".")
    doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    change(doc)
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=") + "." + signature


def _moved_to_2020(doc: dict[str, Any]) -> None:
    doc["at"] = "2020-01-15T00:00:00+00:00"
    doc["r"][0][4] = "2020-01-15T00:00:00+00:00"


def _someone_elses(doc: dict[str, Any]) -> None:
    doc["r"][0][1] = "role:someone_else"


def test_a_reservation_token_is_sealed_a_client_cannot_edit_or_make_one_up(tmp_path: Path) -> None:
    """Settling charges where the token says: an edited one could move its charge to 2020 (the month's
    budget then spent twice) or release or charge holds of another scope."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "race.policy").write_text(BUDGET_RACE)
    with Server(tmp_path, "--rules", str(tmp_path / "rules")) as server:
        token = server.post("/v1/reserve", {"request": BUDGETED_CALL}).json()["reservation"]
        forged = {
            "moved to 2020": _edited(token, _moved_to_2020),
            "another scope": _edited(token, _someone_elses),
            "signature dropped": token.rpartition(".")[0],
            "signature of other bytes": token.rpartition(".")[0] + "." + token.rpartition(".")[2][::-1],
            "not ASCII": token + "é",
        }
        for name, bad in forged.items():
            for path, body in (("/v1/charge", {"reservation": bad, "tokens": 400}), ("/v1/release", {"reservation": bad})):
                refused = server.post(path, body)
                assert refused.status_code == 400 and "not a reservation this server issued" in refused.text, \
                    (name, path, refused.text)
        charged = server.post("/v1/charge", {"reservation": token, "tokens": 400})
        assert charged.status_code == 200 and charged.json()["charged"] == ["role:caller"], charged.text


def test_a_request_no_budget_covers_is_decided_without_a_reservation(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "race.policy").write_text(BUDGET_RACE)
    with Server(tmp_path, "--rules", str(tmp_path / "rules")) as server:
        other = {**BUDGETED_CALL, "principal": {"id": "eve", "roles": []}}
        answer = server.post("/v1/reserve", {"request": other}).json()
        malformed = server.post("/v1/reserve", {"request": {**BUDGETED_CALL, "action": "INVOKE"}})
    assert answer["decision"]["effect"] == "deny" and answer["reservation"] is None
    assert malformed.status_code == 400 and malformed.json()["decision"]["errors"]


def test_a_charge_of_a_released_reservation_still_counts(tmp_path: Path, ledger_args: tuple[str, ...]) -> None:
    """Release, then charge (a caller that gave the hold back and made the call after all): the usage counts,
    on every ledger; PostgreSQL answered ``charged`` and counted nothing, so the next call passed the budget."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "race.policy").write_text(BUDGET_RACE)
    with Server(tmp_path, "--rules", str(tmp_path / "rules"), *ledger_args) as server:
        token = server.post("/v1/reserve", {"request": BUDGETED_CALL}).json()["reservation"]
        assert server.post("/v1/release", {"reservation": token}).status_code == 200
        charged = server.post("/v1/charge", {"reservation": token, "tokens": 9_900})
        assert charged.status_code == 200 and charged.json()["charged"] == ["role:caller"], charged.text
        after = server.post("/v1/decide", BUDGETED_CALL).json()  # 9,900 + 400 > 10,000
        assert after["effect"] == "deny" and after["reasons"][0]["rule"] == "race.shared", after
