"""The database's schema, as numbered migrations: `NNNN_name.sql`, applied in order.

Applied by `controlroom.adapters.postgres.migrations` at every start and by `controlroom db upgrade`.
A migration is never edited once released: a change is a new file with the next number.
"""
