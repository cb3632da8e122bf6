"""The Kafka side of dupstream: event contract, pipeline, faust worker and CLI.

Importing this package is cheap; faust, torch and pymilvus load when a command needs them.
"""

from streams.decide import ThresholdBook, Thresholds
from streams.events import DeleteEvent, ImageEvent, InboundMessage, Source, parse_event

__all__ = [
    "DeleteEvent",
    "ImageEvent",
    "InboundMessage",
    "Source",
    "ThresholdBook",
    "Thresholds",
    "parse_event",
]
