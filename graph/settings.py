"""Typed settings read from the environment (see the README's configuration table)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

LogLevel = Literal["debug", "info", "warning", "error"]


class Settings(BaseSettings):
    """Every knob of the service; each field is one environment variable of the same name."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    mongodb_uri: str | None = Field(
        default=None,
        description="MongoDB connection string; unset = start the embedded SecantusDB.",
    )
    mongodb_database: str = "message_metrics"
    mongodb_server_selection_timeout_ms: int = Field(default=2000, gt=0)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    embedded_data_dir: Path = Path(".data/secantus")
    embedded_port: int = Field(default=27117, ge=1, le=65535)
    demo_messages: int = Field(default=4000, ge=0)
    rate_limit_per_minute: int = Field(default=100, gt=0)
    rate_limit_storage_uri: str = "memory://"
    graphql_max_aliases: int = Field(default=10, ge=0)
    graphql_max_depth: int = Field(default=10, ge=1)
    graphql_max_tokens: int = Field(default=5_000, ge=1)
    graphql_max_cost: int = Field(default=20, ge=1)
    graphql_mutation_cost: int = Field(default=5, ge=1)
    graphql_public_introspection: bool = False
    max_body_bytes: int = Field(default=65_536, ge=1)
    body_read_timeout_ms: int = Field(default=10_000, gt=0)
    max_in_flight_per_token: int = Field(default=8, ge=1)
    max_in_flight: int = Field(default=16, ge=1)
    request_timeout_ms: int = Field(default=10_000, gt=0)
    forwarded_allow_ips: str | None = None
    rollups: bool = True
    rollups_wait_ms: int = Field(default=250, ge=0)
    rollups_source: Literal["auto", "change-stream", "watermark"] = "auto"
    rollups_warm_days: int = Field(
        default=35,
        ge=0,
        le=3660,
        description="Recent whole days whose distinct values are read ahead of ranges; 0 = off.",
    )
    rollups_cache_entries: int = Field(
        default=10_000,
        ge=0,
        description="Rollup reads the leader keeps until it writes to their instance; 0 = none.",
    )
    rollups_cache_values: int = Field(
        default=500_000,
        ge=0,
        description="Distinct values the leader keeps in unions of ended days and hours.",
    )
    rollups_reconcile_minutes: int | None = Field(
        default=None,
        ge=0,
        description="Minutes between reconciles; 0 = off; unset = 60, off on the embedded one.",
    )
    log_level: LogLevel = "info"
