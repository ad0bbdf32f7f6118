DROP TABLE usage_groups;
DROP TABLE usage_records;
