"""Create the service's topics when they do not exist (faust does not create source topics)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

__all__ = ["ensure_topics"]

logger = logging.getLogger(__name__)


async def ensure_topics(
    bootstrap: str, names: Sequence[str], *, partitions: int, replication: int = 1
) -> None:
    """Create each missing topic with ``partitions`` partitions; existing topics are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="dupstream-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in dict.fromkeys(names) if name not in existing]
        if not missing:
            return
        new_topics = [NewTopic(t, num_partitions=partitions, replication_factor=replication) for t in missing]
        with contextlib.suppress(TopicAlreadyExistsError):  # another worker may have just created it
            await admin.create_topics(new_topics)
        logger.info("created topics %s with %d partitions", ", ".join(missing), partitions)
    finally:
        await admin.close()
