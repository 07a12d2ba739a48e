"""Queue lengths read through kombu, the same on both brokers (the repair step's "nothing
queued" checks rely on them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from marginwatch.base.settings import Settings
from marginwatch.cli.embedded_redis import RedisServer
from marginwatch.runtime.celery_app import make_celery, queue_length
from tests.servers import RabbitMQ, start_rabbitmq


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[RabbitMQ]:
    node = start_rabbitmq()
    yield node
    node.stop()


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_queue_counts_its_messages_and_a_missing_one_counts_zero(
    broker: str, request: pytest.FixtureRequest, redis_server: RedisServer
) -> None:
    """0 before anything is sent (twice: a failed passive declare leaves nothing broken), 2
    after two sends, on either broker."""
    url = redis_server.url if broker == "redis" else request.getfixturevalue("rabbitmq").url
    app = make_celery(Settings(redis_url=redis_server.url, partitions=1), url)
    queue = f"marginwatch.test-queue.{broker}"
    try:
        assert (queue_length(app, queue), queue_length(app, queue)) == (0, 0)
        for _ in range(2):
            app.send_task("marginwatch.test", args=[1], queue=queue)
        assert queue_length(app, queue) == 2
    finally:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue)
        app.close()
