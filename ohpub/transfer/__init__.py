"""One file's bytes: the signed-URL source (``storage``), the byte path (``bytepath``),
the job and its sinks (``job``), one stream (``sequential``), parallel ranges (``ranges``)
and the face the layers above use (``downloader``).
"""
