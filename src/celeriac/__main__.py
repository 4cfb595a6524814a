"""``python -m celeriac``: the ``celeriac`` command (edge layer)."""

from celeriac.cli import main

if __name__ == "__main__":
    main(prog_name="celeriac")
