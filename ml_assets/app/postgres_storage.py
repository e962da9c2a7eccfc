"""Dagster's PostgreSQL storage (dagster-postgres) on the driver it is built for, whatever the URL says.

dagster-postgres 0.29 installs psycopg2 and is tested on it, but SQLAlchemy 2.1 opens a bare
`postgresql://` URL with psycopg 3, which binds parameters on the server and fails dagster-postgres's
`NOTIFY ..., $1` with a syntax error on the first event. This class names psycopg2 in such a URL
(`postgresql+psycopg2://`) and is otherwise dagster-postgres's own: same config, tables and queries.
It is imported only when dagster.yaml names it (`[instance] storage = "postgres"`).
"""

from typing import Any

from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

BARE_SCHEMES = ("postgresql://", "postgres://")


def with_psycopg2(url: str) -> str:
    """`url` with psycopg2 as its driver when it names none; any other URL as given."""
    for scheme in BARE_SCHEMES:
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url.removeprefix(scheme)
    return url


class PostgresStorage(DagsterPostgresStorage):
    """`DagsterPostgresStorage` whose URL (`postgres_url`, or built from `postgres_db`) names psycopg2."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> "PostgresStorage":
        return cls(
            with_psycopg2(pg_url_from_config(config_value)),
            config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
            token_provider=get_token_provider_from_config(config_value),
        )
