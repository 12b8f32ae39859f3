"""streamanon: real-time face anonymization for video.

Public API::

    from streamanon import Anonymizer, AnonymizerConfig, anonymize_file
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import AnonymizerConfig, load_config
from .errors import ModelUnavailable, UserError

__version__ = "0.1.0"
__all__ = ["Anonymizer", "AnonymizerConfig", "anonymize_file", "load_config", "UserError", "ModelUnavailable"]

if TYPE_CHECKING:  # pragma: no cover
    from .files import anonymize_file
    from .pipeline import Anonymizer


def __getattr__(name: str):
    # The pipeline pulls in onnxruntime, dlib and PyAV; import it only when asked for.
    if name == "Anonymizer":
        from .pipeline import Anonymizer

        return Anonymizer
    if name == "anonymize_file":
        from .files import anonymize_file

        return anonymize_file
    raise AttributeError(name)
