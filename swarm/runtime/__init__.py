"""Container runtime layer of a node: the image store and the runtime backends.

`ImageStore` keeps images under STATE_DIR/images; `Runtime` (runc backend)
runs one container per task under STATE_DIR/tasks. The agent talks to a
backend only through the `ContainerRuntime` protocol (base.py).
"""
from swarm.runtime.base import ContainerRuntime, ContainerState, LogEntry
from swarm.runtime.errors import ContainerError, ImageError, SpecError
from swarm.runtime.images import Image, ImageStore, normalize_ref

__all__ = ["ContainerError", "ContainerRuntime", "ContainerState", "Image", "ImageError", "ImageStore",
           "LogEntry", "SpecError", "normalize_ref"]
