"""The PostgreSQL schema (SQL migrations) and its Piccolo tables, shared by the services."""
