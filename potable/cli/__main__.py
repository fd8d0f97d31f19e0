"""`python -m potable.cli …` runs the same CLI as the `potable` console script."""

from potable.cli import main

main()
