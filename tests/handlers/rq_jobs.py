"""An existing RQ worker's job: keeps what Sluice sent it."""

from __future__ import annotations

import json
from typing import Any

from rq import get_current_job


def keep(record: Any) -> None:
    job = get_current_job()
    assert job is not None
    job.connection.rpush("rq-received", json.dumps(record))
