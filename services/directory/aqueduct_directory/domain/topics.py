"""Old topics of stored classes that were renamed or moved, so the events stored under them still replay.

eventsourcing stores each event with its class's topic (``module:Aggregate.Event``, and the aggregate's
``module:Aggregate`` in a created event) and finds the class by that topic when it reads the event back.
Renaming or moving an aggregate, one of its event classes or their module therefore stops every event
stored before from replaying, unless the class is registered here under the topic it had. An aggregate's
old topic covers its events' topics (``old:Aggregate.Event`` resolves to ``Aggregate.Event``); an event
class renamed on its own needs its own line. The stored fixtures of every past release
(``tests/fixtures/stored_events``) fail to replay when one is forgotten.
"""

from __future__ import annotations

from collections.abc import Mapping

from eventsourcing.utils import register_topic

__all__ = ["OLD_TOPICS", "keep_old_topics"]

# Old topic -> the class it names now. No stored class has been renamed or moved yet.
OLD_TOPICS: dict[str, type] = {}


def keep_old_topics(old_topics: Mapping[str, type] = OLD_TOPICS) -> None:
    for topic, cls in old_topics.items():
        register_topic(topic, cls)
