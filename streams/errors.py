"""Errors raised while turning a Kafka message into a decision."""

from __future__ import annotations

from encoders.errors import DupstreamError

__all__ = ["EventError", "FetchError"]


class EventError(DupstreamError):
    """The message is not a valid image event (bad JSON, missing id, bad field...)."""

    reason = "invalid_event"


class FetchError(DupstreamError):
    """The image bytes behind a URI could not be read, or reading them is not allowed."""

    reason = "fetch_failed"

    def __init__(self, message: str, *, reason: str | None = None, retriable: bool = False) -> None:
        super().__init__(message, reason=reason)
        self.retriable = retriable
