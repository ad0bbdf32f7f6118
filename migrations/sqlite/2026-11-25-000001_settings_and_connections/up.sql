-- Admin-saved settings, one JSON value per key.
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The Ollama connections, each with its own settings (Open WebUI's OLLAMA_API_CONFIGS entry).
CREATE TABLE ollama_connections (
    idx INTEGER PRIMARY KEY CHECK (idx >= 0),
    url TEXT NOT NULL CHECK (url <> ''),
    config TEXT NOT NULL DEFAULT '{}'
);

-- One counter per area, bumped in the same transaction as every write, so replicas notice
-- changes by polling a single row.
CREATE TABLE state_revisions (
    area TEXT PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO state_revisions (area, revision) VALUES ('config', 0);
