"""`python -m ohpub` runs the same entry point as the `ohpub` console script."""

from ohpub.cli.main import main

main()
