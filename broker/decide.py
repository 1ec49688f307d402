"""What happens to an async event next: a pure function of result, state, policy and time.

Implements spec §2.3. No I/O here; the dispatcher applies the decision to Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker import defaults
from broker.models import Condition, Envelope, InvokeResult


@dataclass(frozen=True)
class RetryPolicy:
    maximum_retry_attempts: int = defaults.MAXIMUM_RETRY_ATTEMPTS
    maximum_event_age_s: float = defaults.MAXIMUM_EVENT_AGE_S
    retry_base_delay_s: float = defaults.RETRY_BASE_DELAY_S
    throttle_base_delay_s: float = defaults.THROTTLE_BASE_DELAY_S
    throttle_max_delay_s: float = defaults.THROTTLE_MAX_DELAY_S
    throttle_jitter: float = defaults.THROTTLE_JITTER


@dataclass(frozen=True)
class Finish:
    """The event ends here with ``condition``; ``envelope`` carries the final counters."""

    condition: Condition
    envelope: Envelope


@dataclass(frozen=True)
class Retry:
    """Run the event again at ``due_at`` (epoch seconds) with the updated ``envelope``."""

    due_at: float
    envelope: Envelope


Decision = Finish | Retry


def before_attempt(
    envelope: Envelope, policy: RetryPolicy, reserved_concurrency: int | None, now: float
) -> Finish | None:
    """Checks made on dequeue, before the function is called."""
    if reserved_concurrency == 0:
        return Finish("ZeroReservedConcurrency", envelope)
    if now - envelope.enqueued_at >= policy.maximum_event_age_s:
        return Finish("EventAgeExceeded", envelope)
    return None


def throttle_delay_s(consecutive_throttles: int, policy: RetryPolicy, jitter: float) -> float:
    """``min(base * 2^k, cap)`` scaled by ``1 + jitter * policy.throttle_jitter``.

    ``jitter`` is drawn by the caller from [-1, 1] so that this stays deterministic.
    """
    base = min(
        policy.throttle_base_delay_s * 2.0 ** min(consecutive_throttles, 64),
        policy.throttle_max_delay_s,
    )
    return max(0.0, base * (1.0 + jitter * policy.throttle_jitter))


def after_attempt(
    envelope: Envelope,
    result: InvokeResult,
    policy: RetryPolicy,
    now: float,
    jitter: float = 0.0,
) -> Decision:
    """Given one attempt's result, decide: finish with a condition, or retry at a time."""
    if result.executed:
        envelope = envelope.model_copy(
            update={
                "executed_attempts": envelope.executed_attempts + 1,
                "consecutive_throttles": 0,
                "last_result": result,
            }
        )
    if result.outcome == "success":
        return Finish("Success", envelope)
    if result.outcome == "function_error":
        if envelope.function_error_retries >= policy.maximum_retry_attempts:
            return Finish("RetriesExhausted", envelope)
        delay = policy.retry_base_delay_s * (envelope.function_error_retries + 1)
        if now + delay - envelope.enqueued_at > policy.maximum_event_age_s:
            return Finish("EventAgeExceeded", envelope)
        retried = envelope.model_copy(
            update={
                "function_error_retries": envelope.function_error_retries + 1,
                "not_before": now + delay,
            }
        )
        return Retry(now + delay, retried)
    # Throttle or system error: rejected before running; does not use up retries.
    delay = throttle_delay_s(envelope.consecutive_throttles, policy, jitter)
    if result.retry_after_s is not None:
        delay = max(delay, min(result.retry_after_s, policy.throttle_max_delay_s))
    envelope = envelope.model_copy(
        update={
            "last_rejection": result,
            "consecutive_throttles": envelope.consecutive_throttles + 1,
        }
    )
    if now + delay - envelope.enqueued_at > policy.maximum_event_age_s:
        return Finish("EventAgeExceeded", envelope)
    return Retry(now + delay, envelope.model_copy(update={"not_before": now + delay}))
