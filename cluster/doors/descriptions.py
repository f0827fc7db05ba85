"""A certificate's Description(friendly name), the same for every door.

The upload dialog of the pages, the REST API's ``description`` and ``certsim cert upload
--description`` all check the text first (``node.certops.check_description``: a refused
description changes nothing) and, once the node accepted the upload, record it with the node's
``cert_describe`` operation. Every door's list reads it back with ``cert_descriptions``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cluster.doors.auth import RequestFn
from node.catalog import UNITS


def describe_args(purpose: str, result: Mapping[str, Any], description: str) -> dict[str, Any] | None:
    """The ``cert_describe`` request that follows an upload to ``purpose`` (None: nothing to record)."""
    if not description:
        return None
    if purpose in UNITS:
        return {"store": purpose, "description": description}
    names = [*result.get("added", []), *result.get("replaced", []), *result.get("unchanged", [])]
    return {"store": purpose, "names": names, "description": description} if names else None


async def describe_upload(call: RequestFn, purpose: str, result: Mapping[str, Any], description: str) -> None:
    """Record ``description`` for what an upload to ``purpose`` (a trust store or a unit) put there."""
    args = describe_args(purpose, result, description)
    if args is not None:
        await call("cert_describe", args)
