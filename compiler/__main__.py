"""`python -m tlc ...` is the same as the `tlc` command."""
from .cli import main

main()
