"""The @lab controller: lab-wide requests over the bus (clock, faults, mails)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from cluster import controller
from cluster.control import LAB_TARGET
from cluster.controller import LabController
from cluster.lab import Lab
from node.errors import BadInput
from tests.conftest import LabFactory, small_lab


@pytest.mark.both_brokers
async def test_a_long_lab_request_runs_once_although_the_client_resends_it(
    make_lab: LabFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that outlasts the client's 1 s resend (a long clock jump, a broker restart) runs once."""
    lab = await make_lab(small_lab(nodes=1, imp=0))
    calls: list[float] = []

    async def slow(_lab: Lab, _args: dict[str, Any]) -> dict[str, Any]:
        calls.append(asyncio.get_running_loop().time())
        await asyncio.sleep(2.5)
        return {"done": True}

    monkeypatch.setitem(controller.OPS, "slow", slow)
    ctl = LabController(lab)
    await ctl.start()
    try:
        assert await lab.request(LAB_TARGET, "slow", {}, timeout=20) == {"done": True}
        assert len(calls) == 1
    finally:
        await ctl.stop()


async def test_advance_through_the_controller_moves_the_clock_exactly(make_lab: LabFactory) -> None:
    """R-TIME: `certsim clock advance` (the @lab advance) jumps once by exactly the duration asked."""
    lab = await make_lab(small_lab(nodes=2, imp=0))
    ctl = LabController(lab)
    await ctl.start()
    try:
        before = lab.clock.offset
        result = await lab.request(LAB_TARGET, "advance", {"by": "20d"}, timeout=120)
        assert lab.clock.offset - before == dt.timedelta(days=20)
        assert result["timer_steps"] >= 20 * 48
        shown = await lab.request(LAB_TARGET, "clock", {})
        assert shown["offset_s"] == pytest.approx((before + dt.timedelta(days=20)).total_seconds())
        with pytest.raises(BadInput, match="duration"):
            await lab.request(LAB_TARGET, "advance", {"by": "soon"})
        with pytest.raises(BadInput, match="advance needs"):
            await lab.request(LAB_TARGET, "advance", {})
        with pytest.raises(BadInput, match="at most 3650 days"):
            await lab.request(LAB_TARGET, "advance", {"by": "4000d"})
        assert lab.clock.offset - before == dt.timedelta(days=20)
    finally:
        await ctl.stop()
