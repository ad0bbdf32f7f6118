DROP TABLE state_revisions;
DROP TABLE ollama_connections;
DROP TABLE settings;
