"""`python -m chaos ...`: the same commands as `swarm chaos ...` (list, run)."""
import sys

from swarm.cli.main import main

if __name__ == "__main__":
    main(["chaos", *sys.argv[1:]])
