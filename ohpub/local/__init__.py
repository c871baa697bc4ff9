"""The destination on disk: writes that never follow a symlink (``tree``), the lock
(``lock``), the SQLite bookkeeping (``state``) and ``index.jsonl`` (``index``).
"""
