"""Fixtures of the tests run once per stream source (Kinesis, DynamoDB Streams): the
``source`` (a stream or a table in moto), the ``function`` under test and a ``broker`` with
pollers on. Registered in ``tests/conftest.py``; a test module's own fixture of the same
name wins."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broker import Broker
from tests.conftest import BrokerFactory
from tests.stream_helpers import Source, Stream, StreamFunction, Table, stream_broker


@pytest.fixture(params=["kinesis", "dynamodb"])
def source(request: pytest.FixtureRequest, aws: str) -> Source:
    kind: type[Stream] | type[Table] = {"kinesis": Stream, "dynamodb": Table}[request.param]
    return kind(aws)


@pytest.fixture
def function(source: Source) -> Iterator[StreamFunction]:
    fn = StreamFunction(sequence=source.sequence, key=source.key)
    yield fn
    fn.server.stop()


@pytest.fixture
async def broker(make_broker: BrokerFactory, function: StreamFunction) -> Broker:
    return await stream_broker(make_broker, function)
