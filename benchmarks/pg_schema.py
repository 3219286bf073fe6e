"""A PostgreSQL schema of a benchmark's own, so that its tables never meet the tests' or
another benchmark's (imported by the benchmarks beside it)."""

from __future__ import annotations

from sqlalchemy import create_engine, text


def fresh_schema(base: str, schema: str) -> str:
    """An empty `schema`; returns a URL whose search_path is it."""
    engine = create_engine(base)
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


def drop_schema(base: str, schema: str) -> None:
    engine = create_engine(base)
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    engine.dispose()
