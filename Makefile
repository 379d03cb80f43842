# Shortcuts for the commands of README.md and docs/chaos.md (as root).
.PHONY: setup test demo chaos chaos-quick

setup:
	scripts/setup.sh

test: setup
	.venv/bin/python -m pytest -q -p no:cacheprovider

demo:
	scripts/demo.sh

# Every scenario, full length (about 15 minutes); SEED=... replays a run.
chaos: setup
	.venv/bin/python -m swarm chaos run all --nodes 4 --managers 3 --duration 60 $(if $(SEED),--seed $(SEED)) --report chaos-report.json

# The CI subset: short runs of leader-kill, worker-kill, partition-leader, the self-test and two attacks.
chaos-quick: setup
	.venv/bin/python -m swarm chaos run leader-kill worker-kill partition-leader memory-journal-restart-all poison-worker big-service --quick --nodes 4 --managers 3 $(if $(SEED),--seed $(SEED))
