"""Database: tables, sessions, migrations and one query module per aggregate."""
