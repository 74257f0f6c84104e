"""PostgreSQL: tables, repositories (all SQL lives here), the unit of work and locks."""
