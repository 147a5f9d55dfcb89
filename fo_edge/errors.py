"""The one exception tree of fo-edge.

Every error a user can cause derives from :class:`FoEdgeError`; the CLI turns it into one line on
stderr and exit code 2. Messages say what failed and how to fix it.
"""

__all__ = ["FoEdgeError", "ConfigError", "DeviceProfileError", "DeviceMemoryError", "DataError", "RunError",
           "RunInterrupted"]


class FoEdgeError(Exception):
    """Base class of every user-facing fo-edge error."""


class ConfigError(FoEdgeError):
    """A run configuration value is invalid (unknown rule, malformed model spec, lr <= 0, ...)."""


class DeviceProfileError(FoEdgeError):
    """A device profile file is missing, malformed, or holds an impossible value."""


class DeviceMemoryError(FoEdgeError):
    """A buffer does not fit in the device's memory capacity; the message lists the breakdown."""


class DataError(FoEdgeError):
    """A dataset is missing, corrupt, or of the wrong shape."""


class RunError(FoEdgeError):
    """A run directory cannot be written or read."""


class RunInterrupted(RunError):
    """A run was stopped by SIGINT or SIGTERM; it is recorded as ``interrupted`` and can be resumed (exit 130)."""
