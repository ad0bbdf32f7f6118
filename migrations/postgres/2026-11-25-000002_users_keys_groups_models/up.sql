-- People who sign in. Emails are stored lower-cased (the store lower-cases them).
CREATE TABLE users (
    id TEXT NOT NULL PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'user', 'pending')),
    profile_image_url TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_active_at BIGINT NOT NULL
);

-- Password hashes live apart from users, so listing users never reads them and SSO users have none.
CREATE TABLE auths (
    user_id TEXT NOT NULL PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    password_hash TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- API keys: only the SHA-256 of a key is stored, with a short prefix for display.
CREATE TABLE api_keys (
    id TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    key_prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE CHECK (length(key_hash) = 64),
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_user_id ON api_keys (user_id);

CREATE TABLE groups (
    id TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user_id ON group_members (user_id);

-- Model records (Open WebUI's models table): a NULL access_control means public.
-- A deleted owner leaves the model ownerless rather than deleting it.
CREATE TABLE models (
    id TEXT NOT NULL PRIMARY KEY,
    base_model_id TEXT,
    name TEXT NOT NULL,
    user_id TEXT REFERENCES users (id) ON DELETE SET NULL,
    params TEXT NOT NULL DEFAULT '{}',
    meta TEXT NOT NULL DEFAULT '{}',
    access_control TEXT,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX models_user_id ON models (user_id);

-- Signed-out JWTs, shared by every replica until they would have expired anyway.
CREATE TABLE revoked_tokens (
    jti TEXT NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);

INSERT INTO state_revisions (area, revision) VALUES ('auth', 0);
INSERT INTO state_revisions (area, revision) VALUES ('models', 0);
