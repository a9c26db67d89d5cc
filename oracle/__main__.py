"""``python -m oracle``: the same command line as the ``oracle`` script."""

from oracle.cli import main

if __name__ == "__main__":
    main()
