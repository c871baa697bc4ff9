"""Operations on one file or one mirror beside the mirror run: fetch by id (``fetch``),
``verify`` and ``status``.
"""
