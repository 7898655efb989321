"""The organisation (``sandbox/state.py``): the arithmetic of the controls, their validation, locking."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import requests
from sandbox_support import AUTH, NOW

from airflow_provider_localleads.sandbox import BALANCE_PATH, Fault, InsufficientCredits, SandboxState


def test_spend_records_a_deduction_and_uses_credits(fixed_sandbox):
    txn = fixed_sandbox.spend(12, "Lead search: Dentists in Austin, TX (97 results)")

    assert txn["type"] == "DEDUCTION"
    assert txn["amount"] == -12
    assert txn["createdAt"] == "2026-05-20T12:30:15.123Z"
    assert fixed_sandbox.state.used_credits == 55
    assert fixed_sandbox.state.available_credits == 70
    assert fixed_sandbox.state.all_transactions()[0] == txn


def test_spend_can_use_exactly_what_is_left_but_not_more(localleads_sandbox):
    with pytest.raises(InsufficientCredits, match="only 82 available"):
        localleads_sandbox.spend(83)
    assert localleads_sandbox.state.used_credits == 43  # a refused spend changes nothing
    localleads_sandbox.spend(82)
    assert localleads_sandbox.state.available_credits == 0
    with pytest.raises(ValueError, match="only 0 available"):  # InsufficientCredits is a ValueError
        localleads_sandbox.spend(1)


def test_top_up_adds_bonus_credits(localleads_sandbox):
    txn = localleads_sandbox.top_up(30)
    assert (txn["type"], txn["amount"], txn["description"]) == ("TOP_UP", 30, "Bonus credits")
    assert localleads_sandbox.state.bonus_credits == 55
    assert localleads_sandbox.state.available_credits == 112


@pytest.mark.parametrize(
    ("bonus", "used", "bonus_after"),
    [
        (25, 43, 0),  # the month used more than the bonus: bonus is gone
        (25, 10, 15),  # bonus spent first, the rest carries forward
        (25, 0, 25),
        (0, 60, 0),
        (40, 140, 0),
    ],
)
def test_reset_month_carries_unspent_bonus_forward(bonus, used, bonus_after):
    state = SandboxState(monthly_credits=100, bonus_credits=bonus, used_credits=used, clock=lambda: NOW)
    txn = state.reset_month(at="2026-06-01T00:00:00Z")

    assert state.bonus_credits == bonus_after
    assert state.used_credits == 0
    assert state.available_credits == 100 + bonus_after
    assert state.balance()["lastResetAt"] == "2026-06-01T00:00:00.000Z"
    assert (txn["type"], txn["amount"], txn["createdAt"]) == ("MONTHLY_RESET", 100, "2026-06-01T00:00:00.000Z")


def test_reset_month_defaults_to_now(fixed_sandbox):
    fixed_sandbox.reset_month()
    assert fixed_sandbox.balance()["lastResetAt"] == "2026-05-20T12:30:15.123Z"


def test_set_balance_changes_only_the_given_fields(localleads_sandbox):
    before = localleads_sandbox.balance()
    after = localleads_sandbox.set_balance(used=10)
    assert after == {**before, "usedCredits": 10, "availableCredits": 115}
    after = localleads_sandbox.set_balance(last_reset_at=datetime(2026, 4, 15, tzinfo=UTC), reset_day=15)
    assert after["lastResetAt"] == "2026-04-15T00:00:00.000Z"
    assert after["resetDay"] == 15
    assert after["usedCredits"] == 10


def test_used_beyond_the_allowance_reports_negative_available(localleads_sandbox):
    assert localleads_sandbox.set_balance(monthly=10, bonus=0, used=15)["availableCredits"] == -5


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.spend(0), "amount"),
        (lambda s: s.spend(-5), "amount"),
        (lambda s: s.spend(1.5), "amount"),
        (lambda s: s.spend("12"), "amount"),
        (lambda s: s.spend(True), "amount"),
        (lambda s: s.spend(1, description=5), "description"),
        (lambda s: s.top_up(-1), "amount"),
        (lambda s: s.set_balance(monthly=-1), "monthly"),
        (lambda s: s.set_balance(bonus="3"), "bonus"),
        (lambda s: s.set_balance(used=-2), "used"),
        (lambda s: s.set_balance(reset_day=0), "reset_day"),
        (lambda s: s.set_balance(reset_day=32), "reset_day"),
        (lambda s: s.set_balance(last_reset_at="yesterday"), "last_reset_at"),
        (lambda s: s.set_balance(last_reset_at=datetime(2026, 5, 1)), "last_reset_at"),  # naive
        (lambda s: s.reset_month(at="2026-06-01T00:00:00"), "at"),
        (lambda s: s.add_transaction("REFUND", 1), "type"),
        (lambda s: s.insert_transactions(0), "count"),
        (lambda s: s.fail_next(200), "status"),
        (lambda s: s.fail_next(503, times=0), "times"),
        (lambda s: s.slow_next(-1), "delay_seconds"),
        (lambda s: s.slow_next(float("inf")), "delay_seconds"),
        (lambda s: s.malformed_next("xml"), "kind"),
        (lambda s: s.inject(Fault("explode")), "kind"),
        (lambda s: s.inject(Fault("html", status=500)), "status"),
        (lambda s: s.inject(Fault("slow", retry_after="1")), "retry_after"),
        (lambda s: s.fail_next(path="/_sandbox/state"), "path"),
        (lambda s: s.rate_limit_next("1\r\nX-Evil: 1"), "retry_after"),
    ],
)
def test_bad_control_input_raises_value_error_naming_the_field(localleads_sandbox, call, field):
    with pytest.raises(ValueError, match=field):
        call(localleads_sandbox)


def test_state_constructor_validates():
    with pytest.raises(ValueError, match="monthly_credits"):
        SandboxState(monthly_credits=-1)
    with pytest.raises(ValueError, match="seed_transactions"):
        SandboxState(seed_transactions=-1)


def test_concurrent_spends_and_reads_stay_consistent(localleads_sandbox):
    localleads_sandbox.set_balance(monthly=10_000, bonus=0, used=0)
    errors: list[BaseException] = []

    def spender() -> None:
        try:
            for _ in range(50):
                localleads_sandbox.spend(1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        with requests.Session() as session:
            session.trust_env = False
            for _ in range(20):
                data = session.get(localleads_sandbox.url + BALANCE_PATH, headers=AUTH, timeout=5).json()["data"]
                if data["availableCredits"] != data["monthlyCredits"] + data["bonusCredits"] - data["usedCredits"]:
                    errors.append(AssertionError(data))

    threads = [threading.Thread(target=spender) for _ in range(8)] + [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert localleads_sandbox.state.used_credits == 400
    assert localleads_sandbox.request_count(BALANCE_PATH) == 80
