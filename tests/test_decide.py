"""The retry decision (spec §2.3) as a table: result, state, policy, time -> what next."""

from __future__ import annotations

import pytest

from broker.decide import (
    Finish,
    Retry,
    RetryPolicy,
    after_attempt,
    before_attempt,
    throttle_delay_s,
)
from broker.models import Envelope, InvokeResult

T0 = 1_000_000.0
OK = InvokeResult(outcome="success", payload="{}")
ERR = InvokeResult(outcome="function_error", function_error="Unhandled", payload="{}")
THROTTLE = InvokeResult(outcome="throttle", status_code=429, error_message="Rate Exceeded.")
SYSTEM = InvokeResult(outcome="system_error", status_code=502, error_message="bad gateway")


def envelope(**state: object) -> Envelope:
    values: dict[str, object] = {
        "request_id": "r-1",
        "function": "f",
        "function_arn": "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST",
        "payload": "{}",
        "enqueued_at": T0,
    }
    values.update(state)
    return Envelope.model_validate(values)


@pytest.mark.parametrize(
    ("retries_done", "max_retries", "now", "expected"),
    [
        (0, 2, T0, ("retry", T0 + 60)),  # first retry after 60 s
        (1, 2, T0 + 60, ("retry", T0 + 60 + 120)),  # second after 120 s
        (2, 2, T0 + 180, ("finish", "RetriesExhausted")),
        (0, 0, T0, ("finish", "RetriesExhausted")),
        (0, 1, T0, ("retry", T0 + 60)),
        (1, 1, T0 + 60, ("finish", "RetriesExhausted")),
    ],
)
def test_function_error_retries_follow_maximum_retry_attempts(
    retries_done: int, max_retries: int, now: float, expected: tuple[str, object]
) -> None:
    policy = RetryPolicy(maximum_retry_attempts=max_retries)
    decision = after_attempt(envelope(function_error_retries=retries_done), ERR, policy, now)
    if expected[0] == "retry":
        assert isinstance(decision, Retry)
        assert decision.due_at == expected[1]
        assert decision.envelope.function_error_retries == retries_done + 1
    else:
        assert isinstance(decision, Finish)
        assert decision.condition == expected[1]
    assert decision.envelope.executed_attempts == 1


@pytest.mark.parametrize(
    ("max_age", "retries_done", "now", "expected"),
    [
        (60, 0, T0 + 1, "EventAgeExceeded"),  # 1 + 60 > 60: futile retry, end now
        (90, 0, T0 + 1, None),  # 1 + 60 <= 90: retry
        (90, 1, T0 + 61, "EventAgeExceeded"),  # 61 + 120 > 90
        (180, 1, T0 + 60, None),  # exactly at the limit is still allowed
    ],
)
def test_look_ahead_ends_a_futile_retry_at_once(
    max_age: int, retries_done: int, now: float, expected: str | None
) -> None:
    policy = RetryPolicy(maximum_event_age_s=max_age)
    decision = after_attempt(envelope(function_error_retries=retries_done), ERR, policy, now)
    if expected is None:
        assert isinstance(decision, Retry)
    else:
        assert isinstance(decision, Finish) and decision.condition == expected


def test_retries_exhausted_is_checked_before_event_age() -> None:
    policy = RetryPolicy(maximum_retry_attempts=0, maximum_event_age_s=60)
    decision = after_attempt(envelope(), ERR, policy, T0 + 59)
    assert isinstance(decision, Finish) and decision.condition == "RetriesExhausted"


@pytest.mark.parametrize("rejection", [THROTTLE, SYSTEM])
def test_throttles_and_system_errors_do_not_use_up_retries(rejection: InvokeResult) -> None:
    policy = RetryPolicy(maximum_retry_attempts=0)
    state = envelope()
    for k in range(5):
        decision = after_attempt(state, rejection, policy, T0)
        assert isinstance(decision, Retry)
        assert decision.due_at == T0 + 2**k
        state = decision.envelope
    assert state.function_error_retries == 0 and state.executed_attempts == 0
    assert state.consecutive_throttles == 5
    assert isinstance(after_attempt(state, OK, policy, T0), Finish)


@pytest.mark.parametrize(
    ("k", "jitter", "expected"),
    [
        (0, 0.0, 1.0),
        (3, 0.0, 8.0),
        (8, 0.0, 256.0),
        (9, 0.0, 300.0),
        (20, 0.0, 300.0),
        (2, 1.0, 4.4),
        (2, -1.0, 3.6),
    ],
)
def test_throttle_backoff_doubles_to_a_five_minute_cap_with_jitter(
    k: int, jitter: float, expected: float
) -> None:
    assert throttle_delay_s(k, RetryPolicy(), jitter) == pytest.approx(expected)


def test_executed_attempt_resets_the_throttle_streak() -> None:
    decision = after_attempt(envelope(consecutive_throttles=4), ERR, RetryPolicy(), T0)
    assert isinstance(decision, Retry) and decision.envelope.consecutive_throttles == 0


def test_throttle_past_maximum_age_ends_with_event_age_exceeded() -> None:
    policy = RetryPolicy(maximum_event_age_s=60)
    decision = after_attempt(envelope(consecutive_throttles=6), THROTTLE, policy, T0 + 10)
    assert isinstance(decision, Finish) and decision.condition == "EventAgeExceeded"
    assert decision.envelope.last_rejection == THROTTLE


def test_retry_after_header_lengthens_the_backoff() -> None:
    throttle = THROTTLE.model_copy(update={"retry_after_s": 7.0})
    decision = after_attempt(envelope(), throttle, RetryPolicy(), T0)
    assert isinstance(decision, Retry) and decision.due_at == T0 + 7.0


@pytest.mark.parametrize(
    ("reserved", "age", "expected"),
    [
        (0, 0, "ZeroReservedConcurrency"),
        (None, 21_600, "EventAgeExceeded"),
        (5, 21_599, None),
        (0, 99_999, "ZeroReservedConcurrency"),
    ],
)
def test_checks_before_an_attempt(reserved: int | None, age: float, expected: str | None) -> None:
    decision = before_attempt(envelope(), RetryPolicy(), reserved, T0 + age)
    assert (decision.condition if decision else None) == expected


def test_retry_base_delay_is_configurable() -> None:
    policy = RetryPolicy(retry_base_delay_s=0.5)
    decision = after_attempt(envelope(function_error_retries=1), ERR, policy, T0)
    assert isinstance(decision, Retry) and decision.due_at == T0 + 1.0
