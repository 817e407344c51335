-- Per-worker plugin statistics, flushed by every gunicorn worker of every host
-- (routeplane/metrics.py); GET /admin/metrics sums them. Counters are the
-- totals since that worker process started: `worker` is drawn once per
-- process, so a recycled worker that reuses a pid never overwrites the row
-- of the one before it.
CREATE TABLE routeplane_plugin_stats (
    worker VARCHAR(64) NOT NULL,
    host VARCHAR(255) NOT NULL,
    pid INTEGER NOT NULL,
    plugin VARCHAR(100) NOT NULL,
    stage VARCHAR(32) NOT NULL,
    hook VARCHAR(200) NOT NULL,
    invocations BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    denies BIGINT NOT NULL,
    timeouts BIGINT NOT NULL,
    total_ms DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (worker, plugin, stage, hook)
);
CREATE INDEX routeplane_plugin_stats_updated ON routeplane_plugin_stats (updated_at);

-- Plugins' own counters (a plugin's `stats()` flattened to dotted names), same rules.
CREATE TABLE routeplane_plugin_counters (
    worker VARCHAR(64) NOT NULL,
    host VARCHAR(255) NOT NULL,
    pid INTEGER NOT NULL,
    plugin VARCHAR(100) NOT NULL,
    name VARCHAR(255) NOT NULL,
    value BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (worker, plugin, name)
);
