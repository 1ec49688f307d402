"""Function, version, alias and concurrency operations with Lambda's shapes and errors.

The HTTP API calls these with AWS-shaped bodies and returns what they return. Functions
live in Redis (:class:`~broker.functions.FunctionStore`); every change goes through a
read-modify-write of the function's JSON.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from broker.arns import execution_role_arn, function_arn, parse_function_name
from broker.clock import Clock
from broker.errors import (
    InvalidParameterValueError,
    ResourceConflictError,
    ResourceNotFoundError,
    ValidationError,
)
from broker.event_config import range_error, validate_dead_letter_target
from broker.functions import FunctionCache, FunctionStore
from broker.models import LATEST, FunctionConfig, PublishedVersion

ALIAS_NAME = re.compile(r"^(?!^[0-9]+$)([a-zA-Z0-9-_]+)$")
UPDATABLE = {"Timeout", "MemorySize", "DeadLetterConfig", "Description", "RevisionId"}


def lambda_time(epoch_s: float) -> str:
    """Lambda's function ``LastModified``: ``2025-03-04T10:11:12.345+0000``."""
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def paginate(items: list[Any], marker: str | None, max_items: int | None) -> tuple[list[Any], str]:
    if max_items is not None and (err := range_error(max_items, "maxItems", 1, 10_000)):
        raise err
    start = 0
    if marker:
        try:
            start = int(base64.urlsafe_b64decode(marker.encode()).decode())
        except ValueError as exc:
            raise InvalidParameterValueError("Invalid marker.") from exc
    size = max_items or 50
    page = items[start : start + size]
    following = start + size
    next_marker = (
        base64.urlsafe_b64encode(str(following).encode()).decode() if following < len(items) else ""
    )
    return page, next_marker


class FunctionAdmin:
    def __init__(
        self,
        store: FunctionStore,
        cache: FunctionCache,
        clock: Clock,
        *,
        region: str,
        account_id: str,
        destination_schemes: Collection[str] = (),
    ) -> None:
        self.store = store
        self.cache = cache
        self.clock = clock
        self.region = region
        self.account_id = account_id
        self.destination_schemes = destination_schemes  # registered ones: valid DLQ targets

    # -- lookups -----------------------------------------------------------------------------
    def arn(self, name: str, qualifier: str | None = None) -> str:
        return function_arn(self.region, self.account_id, name, qualifier)

    async def load(self, function: str, qualifier: str | None = None) -> tuple[FunctionConfig, str]:
        """The function and the version the qualifier names ($LATEST when none)."""
        ref = parse_function_name(function, qualifier)
        config = await self.store.get(ref.name)
        if config is None:
            raise ResourceNotFoundError(f"Function not found: {self.arn(ref.name, ref.qualifier)}")
        if ref.qualifier is None:
            return config, LATEST
        version = config.resolve(ref.qualifier)
        if version is None:
            raise ResourceNotFoundError(f"Function not found: {self.arn(ref.name, ref.qualifier)}")
        return config, version

    async def _save(self, config: FunctionConfig) -> None:
        await self.store.put(config)
        self.cache.invalidate(config.name)

    def configuration(self, config: FunctionConfig, version: str = LATEST) -> dict[str, Any]:
        target, timeout_s, memory_mb = config.effective(version)
        frozen = config.published.get(version)
        modified = frozen.last_modified if frozen else config.last_modified
        body: dict[str, Any] = {
            "FunctionName": config.name,
            "FunctionArn": self.arn(config.name, None if version == LATEST else version),
            "Runtime": "python3.11" if target.startswith("python:") else "provided.al2023",
            "Role": execution_role_arn(self.account_id),
            "Handler": target,
            "CodeSize": len(target),
            "Description": frozen.description if frozen else config.description,
            "Timeout": timeout_s,
            "MemorySize": memory_mb,
            "LastModified": lambda_time(modified or self.clock.now()),
            "CodeSha256": base64.b64encode(hashlib.sha256(target.encode()).digest()).decode(),
            "Version": version,
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": ["x86_64"],
            "RevisionId": _revision(config, version),
        }
        if config.dead_letter_target:
            body["DeadLetterConfig"] = {"TargetArn": config.dead_letter_target}
        return body

    async def get_configuration(self, function: str, qualifier: str | None) -> dict[str, Any]:
        config, version = await self.load(function, qualifier)
        return self.configuration(config, version)

    async def get_function(self, function: str, qualifier: str | None) -> dict[str, Any]:
        config, version = await self.load(function, qualifier)
        body: dict[str, Any] = {
            "Configuration": self.configuration(config, version),
            "Code": {"RepositoryType": "S3", "Location": ""},
        }
        if config.reserved_concurrency is not None:
            body["Concurrency"] = {"ReservedConcurrentExecutions": config.reserved_concurrency}
        return body

    async def list_functions(
        self, marker: str | None = None, max_items: int | None = None
    ) -> dict[str, Any]:
        configs = [c for c in [await self.store.get(n) for n in await self.store.names()] if c]
        page, next_marker = paginate(configs, marker, max_items)
        body: dict[str, Any] = {"Functions": [self.configuration(c) for c in page]}
        if next_marker:
            body["NextMarker"] = next_marker
        return body

    async def update_configuration(self, function: str, body: dict[str, Any]) -> dict[str, Any]:
        config, _ = await self.load(function)
        unsupported = sorted(set(body) - UPDATABLE)
        if unsupported:
            raise InvalidParameterValueError(
                f"Sluice does not support updating {', '.join(unsupported)}; it supports "
                "Timeout, MemorySize, DeadLetterConfig and Description."
            )
        changes: dict[str, Any] = {"last_modified": self.clock.now()}
        if "Timeout" in body:
            if err := range_error(body["Timeout"], "timeout", 1, 900):
                raise err
            changes["timeout_s"] = body["Timeout"]
        if "MemorySize" in body:
            if err := range_error(body["MemorySize"], "memorySize", 128, 10_240):
                raise err
            changes["memory_mb"] = body["MemorySize"]
        if "DeadLetterConfig" in body:
            target = (body["DeadLetterConfig"] or {}).get("TargetArn")
            changes["dead_letter_target"] = validate_dead_letter_target(
                target, self.destination_schemes
            )
        if "Description" in body:
            changes["description"] = str(body["Description"])[:256]
        updated = config.model_copy(update=changes)
        await self._save(updated)
        return self.configuration(updated)

    # -- concurrency -------------------------------------------------------------------------
    async def put_concurrency(self, function: str, body: dict[str, Any]) -> dict[str, Any]:
        config, _ = await self.load(function)
        reserved = body.get("ReservedConcurrentExecutions")
        if reserved is None:
            raise ValidationError(
                "1 validation error detected: Value null at 'reservedConcurrentExecutions' "
                "failed to satisfy constraint: Member must not be null"
            )
        if err := range_error(reserved, "reservedConcurrentExecutions", 0, 1_000_000):
            raise err
        await self._save(config.model_copy(update={"reserved_concurrency": reserved}))
        return {"ReservedConcurrentExecutions": reserved}

    async def get_concurrency(self, function: str) -> dict[str, Any]:
        config, _ = await self.load(function)
        if config.reserved_concurrency is None:
            return {}
        return {"ReservedConcurrentExecutions": config.reserved_concurrency}

    async def delete_concurrency(self, function: str) -> None:
        config, _ = await self.load(function)
        await self._save(config.model_copy(update={"reserved_concurrency": None}))

    # -- versions ----------------------------------------------------------------------------
    async def publish_version(self, function: str, body: dict[str, Any]) -> dict[str, Any]:
        config, _ = await self.load(function)
        numbers = [int(v) for v in [*config.published, *config.versions] if v.isdigit()]
        version = str(max(numbers, default=0) + 1)
        frozen = PublishedVersion(
            target=config.target,
            timeout_s=config.timeout_s,
            memory_mb=config.memory_mb,
            description=str(body.get("Description", config.description)),
            last_modified=self.clock.now(),
        )
        updated = config.model_copy(update={"published": {**config.published, version: frozen}})
        await self._save(updated)
        return self.configuration(updated, version)

    async def list_versions(
        self, function: str, marker: str | None, max_items: int | None
    ) -> dict[str, Any]:
        config, _ = await self.load(function)
        known = sorted(
            {*config.published, *config.versions, *config.aliases.values()} - {LATEST},
            key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v),
        )
        page, next_marker = paginate([LATEST, *known], marker, max_items)
        body: dict[str, Any] = {"Versions": [self.configuration(config, v) for v in page]}
        if next_marker:
            body["NextMarker"] = next_marker
        return body

    # -- aliases -----------------------------------------------------------------------------
    def alias_body(self, config: FunctionConfig, name: str) -> dict[str, Any]:
        return {
            "AliasArn": self.arn(config.name, name),
            "Name": name,
            "FunctionVersion": config.aliases[name],
            "Description": config.alias_descriptions.get(name, ""),
            "RevisionId": _revision(config, name),
        }

    def _check_version(self, config: FunctionConfig, version: object) -> str:
        if not isinstance(version, str) or not version:
            raise ValidationError(
                "1 validation error detected: Value null at 'functionVersion' failed to "
                "satisfy constraint: Member must not be null"
            )
        if not config.has_version(version):
            raise ResourceNotFoundError(f"Function not found: {self.arn(config.name, version)}")
        return version

    async def create_alias(self, function: str, body: dict[str, Any]) -> dict[str, Any]:
        config, _ = await self.load(function)
        name = body.get("Name")
        if not isinstance(name, str) or not ALIAS_NAME.match(name) or len(name) > 128:
            raise ValidationError(
                f"1 validation error detected: Value '{name}' at 'name' failed to satisfy "
                r"constraint: Member must satisfy regular expression pattern: "
                r"(?!^[0-9]+$)([a-zA-Z0-9-_]+)"
            )
        version = self._check_version(config, body.get("FunctionVersion"))
        if name in config.aliases:
            raise ResourceConflictError(f"Alias already exists: {self.arn(config.name, name)}")
        updated = config.model_copy(
            update={
                "aliases": {**config.aliases, name: version},
                "alias_descriptions": {
                    **config.alias_descriptions,
                    name: str(body.get("Description", "")),
                },
            }
        )
        await self._save(updated)
        return self.alias_body(updated, name)

    async def _alias(self, function: str, name: str) -> FunctionConfig:
        config, _ = await self.load(function)
        if name not in config.aliases:
            raise ResourceNotFoundError(f"Cannot find alias arn: {self.arn(config.name, name)}")
        return config

    async def get_alias(self, function: str, name: str) -> dict[str, Any]:
        return self.alias_body(await self._alias(function, name), name)

    async def update_alias(self, function: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        config = await self._alias(function, name)
        aliases = dict(config.aliases)
        descriptions = dict(config.alias_descriptions)
        if body.get("FunctionVersion") is not None:
            aliases[name] = self._check_version(config, body["FunctionVersion"])
        if body.get("Description") is not None:
            descriptions[name] = str(body["Description"])
        updated = config.model_copy(update={"aliases": aliases, "alias_descriptions": descriptions})
        await self._save(updated)
        return self.alias_body(updated, name)

    async def delete_alias(self, function: str, name: str) -> None:
        config, _ = await self.load(function)
        if name not in config.aliases:
            return  # AWS answers 204 for an alias that is already gone
        aliases = {k: v for k, v in config.aliases.items() if k != name}
        descriptions = {k: v for k, v in config.alias_descriptions.items() if k != name}
        await self._save(
            config.model_copy(update={"aliases": aliases, "alias_descriptions": descriptions})
        )

    async def list_aliases(
        self,
        function: str,
        version: str | None,
        marker: str | None,
        max_items: int | None,
    ) -> dict[str, Any]:
        config, _ = await self.load(function)
        names = sorted(n for n, v in config.aliases.items() if version in (None, v))
        page, next_marker = paginate(names, marker, max_items)
        body: dict[str, Any] = {"Aliases": [self.alias_body(config, n) for n in page]}
        if next_marker:
            body["NextMarker"] = next_marker
        return body


def _revision(config: FunctionConfig, qualifier: str) -> str:
    """A stable revision id that changes whenever the function's configuration does."""
    digest = hashlib.sha256((config.model_dump_json() + qualifier).encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
