-- Every usage row was written into five B-trees (table, primary key and
-- three indexes) on the request path's write-behind. Since 000004,
-- /manage/usage reads whole hours and days from usage_rollup and raw rows
-- only for the ragged minutes at a range's ends (under an hour at each),
-- which the created_at index finds; retention uses the same index. The
-- per-project and per-token indexes only served those ragged edges, so
-- they go: each insert touches three B-trees instead of five.
DROP INDEX usage_project_id_created_at_idx;
DROP INDEX usage_token_id_created_at_idx;
