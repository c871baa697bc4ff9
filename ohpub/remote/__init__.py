"""Talking to Open Humans: the retry engine and redactor (``http``), the API client
(``client``) and the complete listing (``listing``). Knows nothing of DEST.
"""
