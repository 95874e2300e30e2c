"""The live page of `cmmsf-run stream --view` (Starlette on uvicorn, Server-Sent Events)."""

from .server import ViewServer

__all__ = ["ViewServer"]
