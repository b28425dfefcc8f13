"""Exceptions raised by the engine.

Every error a user can cause (bad file, bad prompt, missing weights, unavailable
device) derives from :class:`SAMSegmenterError`, so front ends (CLI, Slicer) can
show its message as one line instead of a traceback.
"""


class SAMSegmenterError(Exception):
    """Base class of all user-facing engine errors."""


class InputError(SAMSegmenterError):
    """An input file or array cannot be used (missing, unreadable, wrong shape)."""


class OutputError(SAMSegmenterError):
    """An output file or folder cannot be written (missing or read-only folder, a folder in the way, full disk)."""


class PromptError(SAMSegmenterError):
    """A prompt is empty, malformed or lies outside the image."""


class ModelError(SAMSegmenterError):
    """An unknown model name or a model that cannot be built."""


class CheckpointError(ModelError):
    """Model weights are missing, truncated, or fail their checksum."""


class DeviceError(SAMSegmenterError):
    """The requested compute device or precision is not available."""


class Cancelled(SAMSegmenterError):
    """Long work stopped because the caller asked it to."""


class ServiceError(SAMSegmenterError):
    """The inference service cannot be reached, stopped, or failed a request it should have served."""


class AuthError(ServiceError):
    """The inference service refused the access token (missing, wrong, or unreadable token file)."""
