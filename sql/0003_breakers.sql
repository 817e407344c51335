-- The circuit breakers that are not closed, per worker (routeplane/breaker_view.py):
-- each gunicorn worker of each host replaces its rows with its periodic stats
-- flush while any of its breakers is open or half-open, and removes them when
-- they close or it stops. One row per worker and (provider, model, scope), the
-- per-credential breakers counted, never named (no fingerprints). Readers skip
-- rows whose updated_at is older than a few flush intervals: a worker that died
-- must not show an open breaker forever. `n` numbers a worker's rows: MySQL
-- compares names case-insensitively, so they cannot be part of the key.
CREATE TABLE routeplane_breakers (
    worker VARCHAR(64) NOT NULL,
    n INTEGER NOT NULL,
    host VARCHAR(255) NOT NULL,
    pid INTEGER NOT NULL,
    provider VARCHAR(100) NOT NULL,
    model VARCHAR(255) NOT NULL,
    scope VARCHAR(16) NOT NULL,
    open_breakers INTEGER NOT NULL,
    half_open_breakers INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    open_until DOUBLE PRECISION NOT NULL,
    reason VARCHAR(100) NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (worker, n)
);
CREATE INDEX routeplane_breakers_updated ON routeplane_breakers (updated_at);
