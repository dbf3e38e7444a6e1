"""API surface: Strawberry types and schema, request context, the Starlette app."""

from graph.app import create_app
from graph.query import schema
from graph.settings import Settings

__all__ = ["Settings", "create_app", "schema"]
