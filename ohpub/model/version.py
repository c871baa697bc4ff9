"""The release, in one place (read by the build and the User-Agent)."""

__version__ = "0.3.0"
