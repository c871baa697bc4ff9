"""Compatibility name: the transfer layer lives in ``ohpub.transfer`` (one file, sequential
or as parallel ranges), ``ohpub.ranges``, ``ohpub.storage`` and ``ohpub.bytepath``."""

from __future__ import annotations

from ohpub.transfer import SMALL_OBJECT, Downloaded, Downloader, TooLargeError

__all__ = ["Downloaded", "Downloader", "TooLargeError", "SMALL_OBJECT"]
