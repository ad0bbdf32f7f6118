DELETE FROM state_revisions WHERE area IN ('auth', 'models');
DROP TABLE revoked_tokens;
DROP TABLE models;
DROP TABLE group_members;
DROP TABLE groups;
DROP TABLE api_keys;
DROP TABLE auths;
DROP TABLE users;
