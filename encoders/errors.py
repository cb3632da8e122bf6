"""Errors raised by the encoders package.

Every error carries a machine-readable ``reason`` (used as the dead-letter reason and as a
bounded metric label) and a ``retriable`` flag that tells callers whether trying again can help.
"""

from __future__ import annotations

__all__ = ["DecodeError", "DupstreamError", "EncoderError", "UnknownEncoderError"]


class DupstreamError(Exception):
    """Base class of every error raised by dupstream."""

    reason: str = "error"
    retriable: bool = False

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self)


class EncoderError(DupstreamError):
    """An encoder could not be built or run."""

    reason = "encoder_error"


class UnknownEncoderError(EncoderError, KeyError):
    """The requested encoder name is not registered."""

    reason = "unknown_encoder"

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return self.args[0] if self.args else ""


class DecodeError(DupstreamError):
    """Bytes that cannot become an RGB image.

    Reasons: ``empty``, ``not_an_image``, ``unsupported_format``, ``truncated``, ``too_large``
    (bytes), ``too_many_pixels`` (decompression bomb), ``bad_dimensions``, ``corrupt``.
    """

    reason = "not_an_image"
