"""DEST in object storage (``s3://bucket/prefix``), beside ``local/`` and ``remote/``.

Imports only ``model/``; the object-store library (obstore) is imported lazily, when an
``s3://`` DEST is used, so ``import ohpub`` and every local command work without it.
"""
