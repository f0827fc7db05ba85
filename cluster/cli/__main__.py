"""``python -m cluster.cli``: the same command line as ``certsim`` (``lab up`` starts its server this way)."""

from cluster.cli import main

if __name__ == "__main__":
    main()
