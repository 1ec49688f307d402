"""Event-source-mapping service on a real redis-server: defaults per source type, states,
duplicates, paging and the poller hooks (spec §7, §12 items 35-51)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from broker import ManualClock
from broker.errors import (
    InvalidParameterValueError,
    ResourceConflictError,
    ResourceNotFoundError,
    ValidationError,
)
from broker.functions import FunctionStore
from broker.keys import Keys
from broker.mappings import (
    NO_POLLER_RESULT,
    MappingConfig,
    MappingService,
    ResourceInUseError,
    SourceKind,
    State,
    function_checker,
)
from broker.models import FunctionConfig

REGION, ACCOUNT = "us-east-1", "000000000000"
FN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function"
SQS = f"arn:aws:sqs:{REGION}:{ACCOUNT}:orders-in"
FIFO = f"arn:aws:sqs:{REGION}:{ACCOUNT}:orders-in.fifo"
KINESIS = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/clicks"
DDB = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/t/stream/2025-01-01T00:00:00.000"
MQ = f"arn:aws:mq:{REGION}:{ACCOUNT}:broker:jobs:b-0a1b2c3d-4e5f-6789-abcd-ef0123456789"
NOT_FOUND = "The resource you requested does not exist."


def make_service(
    client: aioredis.Redis, clock: ManualClock, **options: Any
) -> tuple[MappingService, Keys]:
    keys = Keys(prefix=f"t{uuid.uuid4().hex[:6]}")
    functions = {"orders", "orders:$LATEST", "orders:1", "orders:live", "click-agg", "audit"}

    async def exists(reference: str) -> bool:
        return reference in functions

    options.setdefault("function_exists", exists)
    service = MappingService(client, keys, clock, region=REGION, account_id=ACCOUNT, **options)
    return service, keys


@pytest.fixture
def service(redis_client: aioredis.Redis, clock: ManualClock) -> MappingService:
    return make_service(redis_client, clock)[0]


@pytest.fixture
def slow(redis_client: aioredis.Redis, clock: ManualClock) -> MappingService:
    """Transitions take 1 s of (manual) clock time, so the transitional states can be seen."""
    return make_service(redis_client, clock, transition_delay_s=1.0)[0]


def esm_arn(mapping_uuid: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:event-source-mapping:{mapping_uuid}"


# -- defaults per source type (items 35, 36, 37) ---------------------------------------------


async def test_sqs_defaults_have_aws_shape_and_the_no_poller_problem(
    service: MappingService,
) -> None:
    body = await service.create({"EventSourceArn": SQS, "FunctionName": "orders"})
    # Sluice deviation: AWS shows no LastProcessingResult for SQS (item 35); nothing polls yet.
    assert body == {
        "UUID": body["UUID"],
        "EventSourceMappingArn": esm_arn(body["UUID"]),
        "EventSourceArn": SQS,
        "FunctionArn": f"{FN}:orders",
        "BatchSize": 10,
        "MaximumBatchingWindowInSeconds": 0,
        "FunctionResponseTypes": [],
        "LastModified": 1_741_083_072.0,
        "LastProcessingResult": NO_POLLER_RESULT,
        "State": "Creating",
        "StateTransitionReason": "USER_INITIATED",
    }
    assert len(body["UUID"]) == 36


async def test_kinesis_defaults_with_only_required_fields(service: MappingService) -> None:
    body = await service.create(
        {"EventSourceArn": KINESIS, "FunctionName": "click-agg", "StartingPosition": "TRIM_HORIZON"}
    )
    assert body == {
        "UUID": body["UUID"],
        "EventSourceMappingArn": esm_arn(body["UUID"]),
        "EventSourceArn": KINESIS,
        "FunctionArn": f"{FN}:click-agg",
        "BatchSize": 100,
        "MaximumBatchingWindowInSeconds": 0,
        "ParallelizationFactor": 1,
        "StartingPosition": "TRIM_HORIZON",
        "BisectBatchOnFunctionError": False,
        "MaximumRecordAgeInSeconds": -1,
        "MaximumRetryAttempts": -1,
        "TumblingWindowInSeconds": 0,
        "FunctionResponseTypes": [],
        "DestinationConfig": {"OnFailure": {}},
        "LastModified": 1_741_083_072.0,
        "LastProcessingResult": NO_POLLER_RESULT,
        "State": "Creating",
        "StateTransitionReason": "User action",
    }


@pytest.mark.parametrize(
    ("source", "extra", "expected"),
    [
        (FIFO, {}, {"BatchSize": 10, "MaximumBatchingWindowInSeconds": 0}),
        (DDB, {"StartingPosition": "LATEST"}, {"BatchSize": 100, "ParallelizationFactor": 1}),
        (
            "redis-stream:clicks",
            {"StartingPosition": "LATEST"},
            {"BatchSize": 100, "MaximumRetryAttempts": -1, "DestinationConfig": {"OnFailure": {}}},
        ),
        (MQ, {"Queues": ["render"]}, {"BatchSize": 100, "Queues": ["render"]}),
        (
            "amqp://guest:guest@127.0.0.1:5672/%2F",
            {"Queues": ["render"]},
            {"BatchSize": 100, "Queues": ["render"]},
        ),
    ],
)
async def test_defaults_per_source_type(
    service: MappingService, source: str, extra: dict[str, Any], expected: dict[str, Any]
) -> None:
    body = await service.create({"EventSourceArn": source, "FunctionName": "orders", **extra})
    assert {k: body[k] for k in expected} == expected
    assert body["LastProcessingResult"] == NO_POLLER_RESULT


async def test_mq_batching_window_default_is_absent_and_no_stream_fields(
    service: MappingService,
) -> None:
    body = await service.create({"EventSourceArn": MQ, "FunctionName": "orders", "Queues": ["q"]})
    assert "MaximumBatchingWindowInSeconds" not in body
    assert "FunctionResponseTypes" not in body and "DestinationConfig" not in body
    assert body["StateTransitionReason"] == "USER_INITIATED"


async def test_with_a_poller_new_mappings_start_with_aws_first_result(
    redis_client: aioredis.Redis, clock: ManualClock
) -> None:
    polled = frozenset({SourceKind.SQS, SourceKind.KINESIS})
    service, _ = make_service(redis_client, clock, polled_kinds=polled)
    sqs = await service.create({"EventSourceArn": SQS, "FunctionName": "orders"})
    kin = await service.create(
        {"EventSourceArn": KINESIS, "FunctionName": "orders", "StartingPosition": "LATEST"}
    )
    ddb = await service.create(
        {"EventSourceArn": DDB, "FunctionName": "orders", "StartingPosition": "LATEST"}
    )
    assert "LastProcessingResult" not in sqs
    assert kin["LastProcessingResult"] == "No records processed"
    assert ddb["LastProcessingResult"] == NO_POLLER_RESULT


async def test_create_disabled_is_disabled_at_once(service: MappingService) -> None:
    body = await service.create({"EventSourceArn": SQS, "FunctionName": "orders", "Enabled": False})
    assert body["State"] == "Disabled"
    assert (await service.get(body["UUID"]))["State"] == "Disabled"
    assert "Enabled" not in body


# -- states (items 38, 39, 40) ---------------------------------------------------------------


async def test_create_settles_to_enabled_by_the_next_read(service: MappingService) -> None:
    body = await service.create({"EventSourceArn": SQS, "FunctionName": "orders"})
    assert body["State"] == "Creating"
    assert (await service.get(body["UUID"]))["State"] == "Enabled"


async def test_update_transitions_disabling_enabling_updating(service: MappingService) -> None:
    mapping_uuid = (await service.create({"EventSourceArn": SQS, "FunctionName": "orders"}))["UUID"]
    assert (await service.update(mapping_uuid, {"Enabled": False}))["State"] == "Disabling"
    assert (await service.get(mapping_uuid))["State"] == "Disabled"
    assert (await service.update(mapping_uuid, {"BatchSize": 5}))["State"] == "Updating"
    assert (await service.get(mapping_uuid))["State"] == "Disabled"
    assert (await service.update(mapping_uuid, {"Enabled": True}))["State"] == "Enabling"
    assert (await service.get(mapping_uuid))["State"] == "Enabled"
    updated = await service.update(mapping_uuid, {"Enabled": True, "BatchSize": 7})
    assert updated["State"] == "Updating" and updated["BatchSize"] == 7
    assert (await service.get(mapping_uuid))["State"] == "Enabled"


async def test_transitions_follow_the_clock_with_a_delay(
    slow: MappingService, clock: ManualClock
) -> None:
    body = await slow.create({"EventSourceArn": SQS, "FunctionName": "orders"})
    assert (await slow.get(body["UUID"]))["State"] == "Creating"
    clock.advance(1.0)
    settled = await slow.get(body["UUID"])
    assert settled["State"] == "Enabled"
    assert settled["LastModified"] == pytest.approx(body["LastModified"] + 1.0)


async def test_advance_states_settles_due_mappings_for_a_background_loop(
    slow: MappingService, clock: ManualClock, redis_client: aioredis.Redis
) -> None:
    one = await slow.create({"EventSourceArn": SQS, "FunctionName": "orders"})
    await slow.create({"EventSourceArn": SQS, "FunctionName": "audit", "Enabled": False})
    assert await slow.advance_states() == 0
    clock.advance(1.5)
    assert await slow.advance_states() == 1
    assert (await slow.mapping(one["UUID"])).state is State.ENABLED
    assert await redis_client.zcard(slow.keys.mapping_transitions) == 0


async def test_update_while_creating_and_delete_while_updating_are_in_use(
    slow: MappingService, clock: ManualClock
) -> None:
    mapping_uuid = (await slow.create({"EventSourceArn": SQS, "FunctionName": "orders"}))["UUID"]
    with pytest.raises(ResourceInUseError) as err:
        await slow.update(mapping_uuid, {"BatchSize": 5})
    assert err.value.message == "Cannot update the event source mapping because it is in use."
    assert err.value.status == 400 and err.value.code == "ResourceInUseException"
    assert "Message" in err.value.body()
    clock.advance(1.0)
    assert (await slow.update(mapping_uuid, {"BatchSize": 5}))["State"] == "Updating"
    with pytest.raises(ResourceInUseError) as err:
        await slow.delete(mapping_uuid)
    assert err.value.message == "Cannot delete the event source mapping because it is in use."
    clock.advance(1.0)
    assert (await slow.delete(mapping_uuid))["State"] == "Deleting"
    with pytest.raises(ResourceInUseError):
        await slow.update(mapping_uuid, {"BatchSize": 6})
    assert (await slow.delete(mapping_uuid))["State"] == "Deleting"  # repeated delete
    assert (await slow.get(mapping_uuid))["State"] == "Deleting"
    clock.advance(1.0)
    with pytest.raises(ResourceNotFoundError):
        await slow.get(mapping_uuid)


async def test_delete_answers_deleting_then_get_is_not_found(service: MappingService) -> None:
    created = await service.create({"EventSourceArn": SQS, "FunctionName": "orders"})
    deleted = await service.delete(created["UUID"])
    assert deleted["State"] == "Deleting" and deleted["BatchSize"] == 10
    with pytest.raises(ResourceNotFoundError) as err:
        await service.get(created["UUID"])
    assert err.value.message == NOT_FOUND
    assert (await service.list())["EventSourceMappings"] == []


@pytest.mark.parametrize("operation", ["get", "update", "delete"])
async def test_unknown_uuid_is_not_found_with_aws_message(
    service: MappingService, operation: str
) -> None:
    random_uuid = str(uuid.uuid4())
    with pytest.raises(ResourceNotFoundError) as err:
        if operation == "update":
            await service.update(random_uuid, {"BatchSize": 5})
        else:
            await getattr(service, operation)(random_uuid)
    assert err.value.status == 404
    assert err.value.body() == {"Type": "User", "Message": NOT_FOUND}


# -- function names (items 41, 49, 50) --------------------------------------------------------


@pytest.mark.parametrize(
    ("function_name", "function_arn"),
    [
        ("orders", f"{FN}:orders"),
        ("orders:$LATEST", f"{FN}:orders:$LATEST"),
        ("orders:1", f"{FN}:orders:1"),
        (f"{FN}:orders:live", f"{FN}:orders:live"),
        (f"{ACCOUNT}:function:orders", f"{FN}:orders"),
    ],
)
async def test_function_name_variants_keep_their_qualification(
    service: MappingService, function_name: str, function_arn: str
) -> None:
    body = await service.create({"EventSourceArn": SQS, "FunctionName": function_name})
    assert body["FunctionArn"] == function_arn


async def test_unknown_function_is_400_function_does_not_exist(service: MappingService) -> None:
    with pytest.raises(InvalidParameterValueError) as err:
        await service.create({"EventSourceArn": SQS, "FunctionName": "nope"})
    assert (err.value.status, err.value.message) == (400, "Function does not exist")
    with pytest.raises(InvalidParameterValueError, match=r"^Function does not exist$"):
        await service.create({"EventSourceArn": SQS, "FunctionName": "orders:7"})


async def test_function_checker_resolves_versions_and_aliases_from_the_store(
    redis_client: aioredis.Redis, clock: ManualClock
) -> None:
    keys = Keys(prefix=f"t{uuid.uuid4().hex[:6]}")
    store = FunctionStore(redis_client, keys)
    await store.put(
        FunctionConfig(name="orders", target="python:x:y", aliases={"live": "1"}, versions=["1"])
    )
    service = MappingService(
        redis_client,
        keys,
        clock,
        region=REGION,
        account_id=ACCOUNT,
        function_exists=function_checker(store),
    )
    for name in ("orders", "orders:$LATEST", "orders:1", "orders:live"):
        await service.create({"EventSourceArn": SQS, "FunctionName": name})
    for name in ("orders:2", "orders:dev", "missing"):
        with pytest.raises(InvalidParameterValueError, match="Function does not exist"):
            await service.create({"EventSourceArn": SQS, "FunctionName": name})
    # Item 50: deleting the function leaves its mappings Enabled and listable.
    await store.delete("orders")
    listed = (await service.list(function_name="orders"))["EventSourceMappings"]
    assert len(listed) == 4 and {m["State"] for m in listed} == {"Enabled"}


# -- duplicates (item 47) ---------------------------------------------------------------------


async def test_duplicate_sqs_mapping_is_409_with_the_sqs_message(service: MappingService) -> None:
    first = await service.create({"EventSourceArn": SQS, "FunctionName": "orders"})
    with pytest.raises(ResourceConflictError) as err:
        await service.create({"EventSourceArn": SQS, "FunctionName": "orders", "BatchSize": 5})
    assert err.value.status == 409
    assert err.value.message == (
        f'An event source mapping with SQS arn (" {SQS} ") and function (" orders ") already '
        f"exists. Please update or delete the existing mapping with UUID {first['UUID']}"
    )
    # Another qualifier is another FunctionArn: not a duplicate.
    await service.create({"EventSourceArn": SQS, "FunctionName": "orders:1"})


@pytest.mark.parametrize(
    ("source", "extra"),
    [
        (KINESIS, {"StartingPosition": "LATEST"}),
        (DDB, {"StartingPosition": "LATEST"}),
        ("redis-stream:clicks", {"StartingPosition": "LATEST"}),
        (MQ, {"Queues": ["q"]}),
    ],
)
async def test_duplicate_stream_mapping_is_409_with_the_stream_message(
    service: MappingService, source: str, extra: dict[str, Any]
) -> None:
    first = await service.create({"EventSourceArn": source, "FunctionName": "orders", **extra})
    with pytest.raises(ResourceConflictError) as err:
        await service.create({"EventSourceArn": source, "FunctionName": f"{FN}:orders", **extra})
    assert err.value.message == (
        f'The event source arn (" {source} ") and function (" orders ") provided mapping already '
        f"exists. Please update or delete the existing mapping with UUID {first['UUID']}"
    )


async def test_concurrent_creates_of_one_pair_make_exactly_one_mapping(
    service: MappingService,
) -> None:
    results = await asyncio.gather(
        *(service.create({"EventSourceArn": SQS, "FunctionName": "orders"}) for _ in range(8)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, dict) for r in results) == 1
    assert sum(isinstance(r, ResourceConflictError) for r in results) == 7
    assert len((await service.list())["EventSourceMappings"]) == 1


async def test_deleted_pair_can_be_created_again(service: MappingService) -> None:
    first = await service.create({"EventSourceArn": SQS, "FunctionName": "orders"})
    await service.delete(first["UUID"])
    second = await service.create({"EventSourceArn": SQS, "FunctionName": "orders"})
    assert second["UUID"] != first["UUID"]


async def test_update_onto_an_existing_pair_is_409_and_a_free_pair_moves_the_index(
    service: MappingService,
) -> None:
    first = await service.create({"EventSourceArn": SQS, "FunctionName": "orders"})
    second = await service.create({"EventSourceArn": SQS, "FunctionName": "audit"})
    with pytest.raises(ResourceConflictError):
        await service.update(second["UUID"], {"FunctionName": "orders"})
    moved = await service.update(second["UUID"], {"FunctionName": "click-agg"})
    assert moved["FunctionArn"] == f"{FN}:click-agg"
    await service.create({"EventSourceArn": SQS, "FunctionName": "audit"})  # freed
    with pytest.raises(InvalidParameterValueError, match="Function does not exist"):
        await service.update(first["UUID"], {"FunctionName": "nope"})


# -- update semantics ----------------------------------------------------------------------


async def test_update_validates_the_merged_result(service: MappingService) -> None:
    mapping_uuid = (
        await service.create(
            {"EventSourceArn": SQS, "FunctionName": "orders", "MaximumBatchingWindowInSeconds": 5}
        )
    )["UUID"]
    assert (await service.update(mapping_uuid, {"BatchSize": 100}))["BatchSize"] == 100
    with pytest.raises(InvalidParameterValueError, match="must be greater than 0 if maximum"):
        await service.update(mapping_uuid, {"MaximumBatchingWindowInSeconds": 0})
    assert (await service.get(mapping_uuid))["MaximumBatchingWindowInSeconds"] == 5


async def test_update_removes_filters_scaling_and_destination_with_empty_values(
    service: MappingService,
) -> None:
    pattern = '{"body": {"kind": ["refund"]}}'
    sqs = await service.create(
        {
            "EventSourceArn": SQS,
            "FunctionName": "orders",
            "FilterCriteria": {"Filters": [{"Pattern": pattern}]},
            "ScalingConfig": {"MaximumConcurrency": 5},
        }
    )
    assert sqs["FilterCriteria"] == {"Filters": [{"Pattern": pattern}]}
    assert sqs["ScalingConfig"] == {"MaximumConcurrency": 5}
    cleared = await service.update(sqs["UUID"], {"FilterCriteria": {}, "ScalingConfig": {}})
    assert "FilterCriteria" not in cleared and "ScalingConfig" not in cleared
    target = f"arn:aws:sqs:{REGION}:{ACCOUNT}:failed"
    kin = await service.create(
        {
            "EventSourceArn": KINESIS,
            "FunctionName": "orders",
            "StartingPosition": "LATEST",
            "DestinationConfig": {"OnFailure": {"Destination": target}},
        }
    )
    assert kin["DestinationConfig"] == {"OnFailure": {"Destination": target}}
    cleared = await service.update(
        kin["UUID"], {"DestinationConfig": {"OnFailure": {"Destination": ""}}}
    )
    assert cleared["DestinationConfig"] == {"OnFailure": {}}


@pytest.mark.parametrize(
    "change",
    [
        {"EventSourceArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:other"},
        {"StartingPosition": "TRIM_HORIZON"},
        {"Tags": {"team": "a"}},
    ],
)
async def test_update_refuses_immutable_fields(
    service: MappingService, change: dict[str, Any]
) -> None:
    body = await service.create(
        {"EventSourceArn": KINESIS, "FunctionName": "orders", "StartingPosition": "LATEST"}
    )
    with pytest.raises(InvalidParameterValueError, match="cannot be changed"):
        await service.update(body["UUID"], change)
    # The same value again is not a change.
    same = await service.update(body["UUID"], {"EventSourceArn": KINESIS, "BatchSize": 9})
    assert same["BatchSize"] == 9


async def test_update_refuses_unknown_fields_and_bad_values(service: MappingService) -> None:
    mapping_uuid = (await service.create({"EventSourceArn": SQS, "FunctionName": "orders"}))["UUID"]
    with pytest.raises(InvalidParameterValueError, match="Unknown parameter Bogus"):
        await service.update(mapping_uuid, {"Bogus": 1})
    with pytest.raises(ValidationError, match="at 'batchSize'"):
        await service.update(mapping_uuid, {"BatchSize": 0})
    with pytest.raises(InvalidParameterValueError, match="Unsupported ParallelizationFactor"):
        await service.update(mapping_uuid, {"ParallelizationFactor": 2})


async def test_virtual_host_cannot_be_updated(service: MappingService) -> None:
    vhost = [{"Type": "VIRTUAL_HOST", "URI": "/prod"}]
    body = await service.create(
        {
            "EventSourceArn": MQ,
            "FunctionName": "orders",
            "Queues": ["q"],
            "SourceAccessConfigurations": vhost,
        }
    )
    assert body["SourceAccessConfigurations"] == vhost
    with pytest.raises(InvalidParameterValueError, match="VIRTUAL_HOST"):
        await service.update(
            body["UUID"],
            {"SourceAccessConfigurations": [{"Type": "VIRTUAL_HOST", "URI": "/dev"}]},
        )
    auth = {"Type": "BASIC_AUTH", "URI": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:s"}
    updated = await service.update(body["UUID"], {"SourceAccessConfigurations": [*vhost, auth]})
    assert updated["SourceAccessConfigurations"] == [*vhost, auth]


# -- List (item 51, spec §7.5) -----------------------------------------------------------------


async def test_list_filters_by_source_and_function_with_qualifier(service: MappingService) -> None:
    await service.create({"EventSourceArn": SQS, "FunctionName": "orders"})
    await service.create({"EventSourceArn": SQS, "FunctionName": "orders:live"})
    await service.create({"EventSourceArn": FIFO, "FunctionName": "audit"})

    async def arns(**filters: Any) -> list[str]:
        listed = (await service.list(**filters))["EventSourceMappings"]
        return sorted(m["FunctionArn"] for m in listed)

    assert await arns(event_source_arn=SQS) == [f"{FN}:orders", f"{FN}:orders:live"]
    assert await arns(function_name="orders") == [f"{FN}:orders", f"{FN}:orders:live"]
    assert await arns(function_name=f"{FN}:orders:live") == [f"{FN}:orders:live"]
    assert await arns(event_source_arn=FIFO, function_name="orders") == []
    assert await service.list(function_name="unknown") == {"EventSourceMappings": []}
    assert await service.list(event_source_arn=f"{SQS}-nope") == {"EventSourceMappings": []}


async def test_list_pages_at_most_100_with_an_opaque_marker(
    service: MappingService, clock: ManualClock
) -> None:
    created = []
    for i in range(105):
        clock.advance(0.001)
        body = await service.create({"EventSourceArn": f"{SQS}-{i}", "FunctionName": "orders"})
        created.append(body["UUID"])
    first = await service.list(max_items=500)
    assert len(first["EventSourceMappings"]) == 100 and "NextMarker" in first
    second = await service.list(marker=first["NextMarker"], max_items=500)
    assert "NextMarker" not in second
    seen = [m["UUID"] for m in first["EventSourceMappings"] + second["EventSourceMappings"]]
    assert seen == created
    small = await service.list(max_items=2)
    assert len(small["EventSourceMappings"]) == 2
    rest = await service.list(marker=small["NextMarker"], max_items=2)
    assert [m["UUID"] for m in rest["EventSourceMappings"]] == created[2:4]


@pytest.mark.parametrize(
    ("max_items", "constraint"),
    [
        (0, "greater than or equal to 1"),
        (10_001, "less than or equal to 10000"),
    ],
)
async def test_list_max_items_range(
    service: MappingService, max_items: int, constraint: str
) -> None:
    with pytest.raises(ValidationError) as err:
        await service.list(max_items=max_items)
    assert err.value.message == (
        f"1 validation error detected: Value '{max_items}' at 'maxItems' failed to satisfy "
        f"constraint: Member must have value {constraint}"
    )


async def test_list_rejects_a_marker_it_did_not_issue(service: MappingService) -> None:
    with pytest.raises(InvalidParameterValueError, match="Invalid Marker"):
        await service.list(marker="not-a-marker")


async def test_list_hides_kms_encrypted_filters_but_get_shows_them(
    service: MappingService,
) -> None:
    body = await service.create(
        {
            "EventSourceArn": SQS,
            "FunctionName": "orders",
            "FilterCriteria": {"Filters": [{"Pattern": '{"body": ["x"]}'}]},
            "KMSKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/k",
        }
    )
    assert body["FilterCriteria"] == {"Filters": [{"Pattern": '{"body": ["x"]}'}]}
    listed = (await service.list())["EventSourceMappings"][0]
    assert listed["FilterCriteria"] is None
    assert (await service.get(body["UUID"]))["FilterCriteria"] == body["FilterCriteria"]


# -- poller hooks ------------------------------------------------------------------------------


async def test_record_processing_result_is_shown_and_keeps_last_modified(
    service: MappingService, clock: ManualClock
) -> None:
    body = await service.create({"EventSourceArn": SQS, "FunctionName": "orders"})
    await service.get(body["UUID"])
    clock.advance(5)
    assert await service.record_processing_result(body["UUID"], "OK") is True
    got = await service.get(body["UUID"])
    assert got["LastProcessingResult"] == "OK" and got["LastModified"] == body["LastModified"]
    assert await service.record_processing_result(str(uuid.uuid4()), "OK") is False


async def test_set_state_disables_with_a_reason_and_a_user_can_re_enable(
    service: MappingService,
) -> None:
    mapping_uuid = (
        await service.create({"EventSourceArn": MQ, "FunctionName": "orders", "Queues": ["q"]})
    )["UUID"]
    body = await service.set_state(mapping_uuid, "Disabled", "EVENT_SOURCE_AUTHN_ERROR")
    assert (body["State"], body["StateTransitionReason"]) == (
        "Disabled",
        "EVENT_SOURCE_AUTHN_ERROR",
    )
    mapping = await service.mapping(mapping_uuid)
    assert mapping.enabled is False and mapping.state is State.DISABLED
    assert (await service.update(mapping_uuid, {"Enabled": True}))["State"] == "Enabling"
    assert (await service.get(mapping_uuid))["StateTransitionReason"] == "USER_INITIATED"
    with pytest.raises(ValueError):
        await service.set_state(mapping_uuid, "Updating", "x")


async def test_mappings_gives_pollers_typed_settled_configs(service: MappingService) -> None:
    await service.create(
        {
            "EventSourceArn": "redis-stream:clicks",
            "FunctionName": "orders:1",
            "StartingPosition": "TRIM_HORIZON",
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": 2,
            "DestinationConfig": {"OnFailure": {"Destination": "redis-stream:failed"}},
        }
    )
    (mapping,) = await service.mappings()
    assert mapping.source_kind is SourceKind.REDIS_STREAM and mapping.state is State.ENABLED
    assert (mapping.function_name, mapping.qualifier) == ("orders", "1")
    assert mapping.bisect_batch_on_function_error is True
    assert mapping.maximum_retry_attempts == 2
    assert mapping.on_failure_destination == "redis-stream:failed"


async def test_source_check_runs_after_function_existence(
    redis_client: aioredis.Redis, clock: ManualClock
) -> None:
    seen: list[MappingConfig] = []

    async def visibility_check(config: MappingConfig) -> None:
        seen.append(config)
        raise InvalidParameterValueError(
            "Queue visibility timeout: 30 seconds is less than Function timeout: 60 seconds"
        )

    service, _ = make_service(redis_client, clock, source_check=visibility_check)
    with pytest.raises(InvalidParameterValueError, match="Function does not exist"):
        await service.create({"EventSourceArn": SQS, "FunctionName": "nope"})
    assert seen == []
    with pytest.raises(InvalidParameterValueError, match="Queue visibility timeout: 30 seconds"):
        await service.create({"EventSourceArn": SQS, "FunctionName": "orders"})
    assert seen[0].event_source_arn == SQS
    assert (await service.list())["EventSourceMappings"] == []


def test_max_filters_is_capped_at_the_aws_hard_limit(
    redis_client: aioredis.Redis, clock: ManualClock
) -> None:
    with pytest.raises(ValueError):
        make_service(redis_client, clock, max_filters=11)
