DROP TABLE limit_counters;
DROP TABLE limits;
