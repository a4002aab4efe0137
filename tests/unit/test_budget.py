"""The byte budget's rules: FIFO waiting, a bounded wait ending in 503, cancellation that
gives back what it got, and sizes that can never fit."""

from __future__ import annotations

import asyncio

import pytest

from resnet_serve.api.limits.budget import ByteBudget, Grant
from resnet_serve.shared.errors import PayloadTooLarge, QueueFull


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_waiters_are_served_in_order_and_the_wait_is_bounded() -> None:
    async def scenario() -> list[str]:
        budget = ByteBudget("test", 100, wait_s=5)
        order: list[str] = []
        await budget.acquire(80)

        async def take(name: str, size: int) -> None:
            await budget.acquire(size)
            order.append(name)

        first = asyncio.create_task(take("first", 50))
        await asyncio.sleep(0)
        second = asyncio.create_task(take("second", 10))  # fits, but waits its turn
        await asyncio.sleep(0.01)
        assert order == []
        budget.release(80)
        await asyncio.gather(first, second)
        assert budget.used == 60
        return order

    assert run(scenario()) == ["first", "second"]


def test_a_full_budget_answers_503_after_its_wait() -> None:
    async def scenario() -> None:
        budget = ByteBudget("test", 100, wait_s=0.05)
        await budget.acquire(100)
        with pytest.raises(QueueFull) as refused:
            await budget.acquire(1)
        assert refused.value.retry_after_s == 1
        assert budget.waiting == 0
        budget.release(100)
        await budget.acquire(100)  # nothing leaked

    run(scenario())


def test_a_cancelled_waiter_gives_back_what_it_was_granted() -> None:
    async def scenario() -> None:
        budget = ByteBudget("test", 100, wait_s=5)
        await budget.acquire(100)
        waiter = asyncio.create_task(budget.acquire(40))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        budget.release(100)
        assert budget.used == 0
        assert budget.waiting == 0

    run(scenario())


def test_a_grant_grows_in_steps_and_refuses_what_can_never_fit() -> None:
    async def scenario() -> None:
        budget = ByteBudget("bodies", 8 * Grant.STEP_BYTES, wait_s=0.05)
        grant = Grant(budget)
        await grant.grow_to(10)
        assert grant.held == Grant.STEP_BYTES
        await grant.grow_to(3 * Grant.STEP_BYTES + 1)
        assert grant.held == 4 * Grant.STEP_BYTES
        with pytest.raises(PayloadTooLarge):
            await grant.grow_to(9 * Grant.STEP_BYTES)
        grant.close()
        assert budget.used == 0

    run(scenario())
