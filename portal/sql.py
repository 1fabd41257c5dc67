"""Helpers for the few statements written in SQL by hand: on the hot paths (an alarm raised, a
notification fanned out and sent) the ORM took longer to build a statement than the database took
to run it. Each helper gives back what the ORM would: model instances with its converters, rows
with the model's defaults."""

from __future__ import annotations

import functools

from django.db import DEFAULT_DB_ALIAS, connection, connections


def quoted_table(model) -> str:
    """A model's table name, quoted for SQL written by hand."""
    return connection.ops.quote_name(model._meta.db_table)


def for_update() -> str:
    """`` FOR UPDATE`` where the database has row locks (not SQLite, which locks the whole file)."""
    return " FOR UPDATE" if connection.features.has_select_for_update else ""


class Joined:
    """A SELECT of whole rows of one model, or several joined, read back into model instances as
    the ORM would (with its converters); a model an outer join did not find comes back as None.
    The column list and each column's converters are worked out once per process."""

    def __init__(self, first: tuple[type, str], *joins: tuple[str, type, str, str]):
        self.joins = joins  # (JOIN or LEFT JOIN, model, alias, ON condition)
        self.parts = [first, *((model, alias) for _, model, alias, _ in joins)]

    def sql(self, source: str | None = None) -> str:
        """``source``: a table (or WITH query) named as the first part's alias; by default the
        first model's table."""
        if source is None:
            model, alias = self.parts[0]
            source = f"{quoted_table(model)} AS {alias}"
        return f"SELECT {self._columns()} FROM {source} {self._joins()}"  # noqa: S608 (model tables)

    def first(self, where: str, params: list, *, locked: bool = False) -> list | None:
        """The instances of the first row ``where`` finds (row-locked if ``locked``), or None.
        ``where``: the condition, then an ORDER BY where more than one row may match."""
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute(f"{self.sql()} WHERE {where} LIMIT 1{for_update() if locked else ''}", params)
            row = cursor.fetchone()
        return None if row is None else self.instances(row)

    @functools.cache  # noqa: B019 (module-level instances, one per process)
    def _columns(self) -> str:
        quote = connection.ops.quote_name
        return ", ".join(
            f"{alias}.{quote(field.column)}" for model, alias in self.parts for field in model._meta.concrete_fields
        )

    @functools.cache  # noqa: B019
    def _joins(self) -> str:
        return " ".join(f"{kind} {quoted_table(model)} AS {alias} ON {on}" for kind, model, alias, on in self.joins)

    @functools.cache  # noqa: B019
    def _readers(self) -> list[tuple]:
        """Per model: its class, its fields' attribute names, and per field (column, converters)."""
        readers = []
        for model, _ in self.parts:
            fields = model._meta.concrete_fields
            converted = []
            for field in fields:
                column = field.get_col(model._meta.db_table)
                converters = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
                converted.append((column, tuple(converters)))
            readers.append((model, [field.attname for field in fields], converted))
        return readers

    def instances(self, row) -> list:
        db = connections[DEFAULT_DB_ALIAS]
        made, start = [], 0
        for model, attnames, converted in self._readers():
            values = row[start : start + len(attnames)]
            start += len(attnames)
            if values[0] is None:  # the primary key: an outer join that found nothing
                made.append(None)
                continue
            out = []
            for (column, converters), value in zip(converted, values, strict=True):
                for convert in converters:
                    value = convert(value, column, db)
                out.append(value)
            made.append(model.from_db(DEFAULT_DB_ALIAS, attnames, out))
        return made


def insert(obj):
    """``Model.objects.create`` for a hot path: the same row, its INSERT built once per model. For
    models whose primary key the database generates. Sends no signals: the models it is used for
    have no receivers."""
    db = connections[DEFAULT_DB_ALIAS]
    sql, params = insert_statement(obj, returning_pk=True)
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        if db.features.can_return_columns_from_insert:
            pk = cursor.fetchone()[0]
        else:
            pk = db.ops.last_insert_id(cursor, type(obj)._meta.db_table, type(obj)._meta.pk.column)
    obj.pk = pk
    obj._state.adding, obj._state.db = False, DEFAULT_DB_ALIAS
    return obj


def insert_statement(obj, *, returning_pk: bool = False) -> tuple[str, list]:
    """The INSERT that writes ``obj`` as a new row, as ``create`` would (defaults and auto-now
    fields filled in by the fields themselves), and its parameters; for ``insert`` or a statement
    that embeds it."""
    model = type(obj)
    db = connections[DEFAULT_DB_ALIAS]
    params = [field.get_db_prep_save(field.pre_save(obj, True), db) for field in _inserted_fields(model)]
    return _insert_sql(model, returning_pk and db.features.can_return_columns_from_insert), params


@functools.cache
def _inserted_fields(model) -> list:
    return [field for field in model._meta.concrete_fields if not field.primary_key]


@functools.cache
def _insert_sql(model, returning_pk: bool) -> str:
    quote = connection.ops.quote_name
    fields = _inserted_fields(model)
    columns = ", ".join(quote(field.column) for field in fields)
    values = ", ".join(["%s"] * len(fields))
    returning = f" RETURNING {quote(model._meta.pk.column)}" if returning_pk else ""
    return f"INSERT INTO {quoted_table(model)} ({columns}) VALUES ({values}){returning}"  # noqa: S608 (a model's table)
