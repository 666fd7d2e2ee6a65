"""The exception hierarchy of gunshot_core: each failure kind is a class callers can catch.

`describe(e)` turns any exception into the deterministic text an error row holds.
"""

import os
import re
import tempfile


class GunshotError(Exception):
    """Base class of every error gunshot_core raises on purpose."""


class AudioDecodeError(GunshotError):
    """A recording could not be decoded: corrupt, empty, unsupported or unreadable."""

    def __init__(self, message: str, *, reason: str = "corrupt"):
        super().__init__(message)
        #: short machine-readable kind: corrupt | empty | unsupported | unreadable | too_short
        self.reason = reason


class ModelFileError(GunshotError):
    """A model file (checkpoint, PCA parameters, head) is missing, corrupt or of an unknown kind."""


class DownloadError(GunshotError):
    """A model download failed after all retries, or its checksum did not match."""


class InputError(GunshotError):
    """A command's input as a whole is missing, empty or unreadable (nothing to work on).

    The message names the input and says what to give instead; `gunshot` prints it as one line and
    exits with status 2. Single bad recordings inside a good input are error rows, not this.
    """


class EmbeddingModelError(GunshotError):
    """An embedding model is unknown, or its optional package is not installed."""


class EmbeddingModelMismatchError(EmbeddingModelError):
    """A head (or table) made on one embedding model's frames was given another model's frames."""


# ---- Error text for tables ------------------------------------------------------------------------

# `<_io.BytesIO object at 0x7fa207f549f0>` -> `<_io.BytesIO object>`; other long hex numbers -> `0x?`.
_OBJECT_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")
_HEX_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{8,}\b")
# Paths inside this process's temporary folder (a worker's spool or download, a tempfile name).
_TEMP_NAME = r"(?:tmp|pymp-)[A-Za-z0-9_]+"


def sanitize(text: str) -> str:
    """Removes what differs between runs from an error text: memory addresses and temporary paths.

    Args:
      text: a message, usually built from an exception.
    Returns:
      the text with `<X object at 0x...>` shortened to `<X object>`, other long hex addresses replaced
      by `0x?`, and paths in the temporary folder (`/tmp/tmpab12cd/...`) replaced by `<temporary file>`.
    """
    text = _HEX_ADDRESS.sub("0x?", _OBJECT_ADDRESS.sub(">", text))
    temp = re.escape(tempfile.gettempdir().rstrip(os.sep))
    return re.sub(rf"{temp}{re.escape(os.sep)}{_TEMP_NAME}[^\s'\":,)]*", "<temporary file>", text)


def describe(e: BaseException) -> str:
    """The deterministic one-line text of an exception for an error row or a printed error.

    A GunshotError's own message (which names its input) as is; any other exception as
    `TypeName: message`; both passed through `sanitize`.
    """
    text = str(e) if isinstance(e, GunshotError) else f"{type(e).__name__}: {e}"
    return sanitize(text)
