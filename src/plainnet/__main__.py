"""``python -m plainnet`` (also what ``torchrun -m plainnet`` runs)."""

from .cli import main

if __name__ == "__main__":
    main()
