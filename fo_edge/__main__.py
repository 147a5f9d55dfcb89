"""``python -m fo_edge`` is ``fo-edge``."""
from .cli import main

main()
