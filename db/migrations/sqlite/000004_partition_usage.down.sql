DROP TABLE usage_rollup;
