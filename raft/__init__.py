"""The replicated record store: pysyncobj made safe (see docs/architecture.md)."""
