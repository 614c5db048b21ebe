DROP TABLE audit_events;
DROP TABLE usage;
DROP TABLE tokens;
DROP TABLE projects;
