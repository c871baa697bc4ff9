"""ohpub: download and mirror the public data files of Open Humans."""

__version__ = "0.2.0"
