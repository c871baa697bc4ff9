"""The command line: the Typer app and its commands (``app``), conventions, exit codes
(``exits``), renderers (``render``), the progress display (``progress``). The only layer
that prints, imports typer, rich or tqdm, and knows exit codes.
"""
