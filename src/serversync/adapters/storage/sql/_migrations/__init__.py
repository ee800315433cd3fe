"""Alembic migrations of the serversync SQL schema (run by ``serversync db upgrade``)."""
