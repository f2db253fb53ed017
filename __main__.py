"""`python -m gpumix ...` runs the CLI (torchrun -m gpumix ... too)."""
from gpumix.cli.app import main

main()
