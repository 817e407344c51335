-- routeplane core schema, version 1.
-- The migration history table (routeplane_migrations) is created by the
-- migrator itself before any migration runs; this file holds the rest.
-- Numbered files apply in order; sql/<dialect>/NNNN_name.sql replaces a file
-- for one dialect (sqlite, postgresql, mysql) only where the SQL differs.
-- Never edit a file that has been released: add the next number instead.

-- Facts about this database (schema creation time, instance id, ...),
-- shared by every worker and host that uses it.
CREATE TABLE routeplane_meta (
    name VARCHAR(200) NOT NULL PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
