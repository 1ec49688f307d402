"""Invokers: how Sluice calls a function, chosen by the target's scheme.

``python:pkg.module:func`` runs a handler in Sluice's worker processes; ``http(s)://`` POSTs
to a Lambda Invoke URL; ``lambda:NAME_OR_ARN`` calls boto3's Lambda Invoke (the ``aws``
extra, imported at the first call). An invoker returns an
:class:`~broker.models.InvokeResult` for every call; a function error is a result, never an
exception.
"""

from __future__ import annotations

from broker.invokers.base import Invocation, Invoker, InvokerRegistry

__all__ = ["Invocation", "Invoker", "InvokerRegistry"]
