"""``rq:QUEUE?func=…`` enqueues an RQ job that a real RQ worker runs."""

from __future__ import annotations

import json

import redis
from rq import Queue, SimpleWorker

from tests.conftest import BrokerFactory
from tests.helpers import wait_until
from tests.servers import RedisServer

H = "python:tests.handlers.async_handlers"


async def test_rq_worker_runs_a_job_with_the_record(
    make_broker: BrokerFactory, redis_server: RedisServer
) -> None:
    broker = await make_broker()
    await broker.put_function("orders", f"{H}:ok")
    await broker.put_event_invoke_config(
        "orders",
        {
            "DestinationConfig": {
                "OnSuccess": {"Destination": "rq:results?func=tests.handlers.rq_jobs.keep"}
            }
        },
    )
    request_id = await broker.invoke_async("orders", {"n": 1})
    sync = redis.Redis(port=redis_server.port)
    queue = Queue("results", connection=sync)

    async def enqueued() -> bool:
        return queue.count == 1

    await wait_until(enqueued)
    (job,) = queue.get_jobs()
    assert job.meta["sluice_request_id"] == request_id
    SimpleWorker([queue], connection=sync).work(burst=True)  # an existing RQ worker
    (raw,) = sync.lrange("rq-received", 0, -1)
    record = json.loads(raw)
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "Success"
    sync.close()
