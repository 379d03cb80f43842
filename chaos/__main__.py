"""`python -m chaos ...`: the same commands as `swarm chaos ...` (list, run).

It runs the `swarm` command line as a new program rather than importing it:
chaos/ sits below the CLI (the CLI's chaos group imports chaos/), never above.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "swarm", "chaos", *sys.argv[1:]])
