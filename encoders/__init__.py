"""Image encoders: decoding, preprocessing and pretrained models behind one registry.

>>> import encoders
>>> encoder = encoders.create("sscd-mini", device="auto")
>>> vectors = encoder.embed([image])   # float32 (N, 512), L2-normalised
"""

from encoders.base import Encoder, EncoderInfo, l2_normalize
from encoders.errors import DecodeError, DupstreamError, EncoderError, UnknownEncoderError
from encoders.preprocess import PreprocessConfig, prepare_batch, prepare_image
from encoders.registry import available, create, register_encoder

__all__ = [
    "DecodeError",
    "DupstreamError",
    "Encoder",
    "EncoderError",
    "EncoderInfo",
    "PreprocessConfig",
    "UnknownEncoderError",
    "available",
    "create",
    "l2_normalize",
    "prepare_batch",
    "prepare_image",
    "register_encoder",
]
