"""How a tick sizes the chunks it claims: whole chunks within ``queue.batch_size``, and
never more than an equal share of what is left in the pool."""

from __future__ import annotations

import pytest

from apps.dispatch.conf import DispatchSettings
from apps.dispatch.engine import tick
from apps.dispatch.tests.helpers import queue_task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_shares():
    tick._shares.clear()
    yield
    tick._shares.clear()


@pytest.fixture
def queued(user, make_contacts, make_service, set_config):
    """A task of ``recipients`` queued on a pool of ``services`` fast services (each could
    take a chunk of MAX_CHUNK, 200 messages); returns the configuration to tick with."""

    def make(*, recipients: int, services: int, **config) -> DispatchSettings:
        set_config(**config)
        make_contacts(user, recipients)
        for _ in range(services):
            make_service(port=1, avg_response_time=0.001)
        queue_task(user)
        return DispatchSettings.load()

    return make


def test_a_service_gets_its_whole_chunk_and_the_others_wait_for_the_next_tick(queued):
    conf = queued(recipients=2000, services=4, queue__batch_size=200)

    first = tick.tick(conf, free=4)
    second = tick.tick(conf, free=4)

    assert [len(chunk.subtasks) for chunk in first] == [200]
    assert [len(chunk.subtasks) for chunk in second] == [200]
    assert first[0].service.id != second[0].service.id


def test_a_small_task_spreads_over_every_service_of_its_pool(queued):
    conf = queued(recipients=40, services=4, queue__batch_size=200)

    chunks = tick.tick(conf, free=4)

    # 40 left over 4 services: 10 each, not one chunk of 40 and three idle connections.
    assert sorted(len(chunk.subtasks) for chunk in chunks) == [10, 10, 10, 10]
    assert len({chunk.service.id for chunk in chunks}) == 4


def test_the_share_counts_the_connections_when_they_are_fewer_than_the_services(queued):
    # 2 connections over 20 services send 2 chunks at a time: 400 left is 200 each, not
    # 20 (an equal share among services that cannot all send at once).
    conf = queued(recipients=400, services=20, queue__concurrency=2, queue__dispatchers=1)

    chunks = tick.tick(conf, free=2)

    assert [len(chunk.subtasks) for chunk in chunks] == [200, 200]
