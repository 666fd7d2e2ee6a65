"""The exception hierarchy of gunshot_core: each failure kind is a class callers can catch."""


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
