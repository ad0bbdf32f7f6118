ALTER TABLE usage_records DROP CONSTRAINT usage_records_pkey;
ALTER TABLE usage_records ADD PRIMARY KEY (id);
CREATE INDEX usage_records_at ON usage_records (at_ms);
CREATE INDEX usage_records_user_at ON usage_records (user_id, at_ms);
CREATE INDEX usage_groups_group ON usage_groups (group_id, at_ms);
