"""``python -m openmix.train ...`` (also what torchrun runs with ``-m openmix.train``)."""
from .app import main

main()
