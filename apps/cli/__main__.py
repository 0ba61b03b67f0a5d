"""`python -m apps.cli` runs the command line."""

from apps.cli.main import main

main()
