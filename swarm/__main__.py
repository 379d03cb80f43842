"""`python -m swarm`: the same command line as the `swarm` script."""
from swarm.cli.main import main

if __name__ == "__main__":
    main()
