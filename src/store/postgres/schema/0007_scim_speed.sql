-- Roster schema version 7: SCIM reads under 100 ms on a 1,000,000-user tenant (issue 12,
-- h-scimspeed; docs/operators.md, SCIM). Measured with EXPLAIN (ANALYZE, BUFFERS) on the
-- benchmark's 1,000,000 users (bench/scim_read.sh).
--
-- Pages and counts of users that are not deleted: the two btree indexes that drive them carry
-- `status` (INCLUDE), so `status <> 'deleted'` is tested in the index and a page's keys (any
-- startIndex) or a count over `updated_at` is an index-only scan. Deep page (startIndex
-- 500,000): 344 ms (index scan reading the rows it skips) -> 49 ms (keys by an index-only
-- scan, then the page's 100 rows by key). meta.lastModified gt a time before everything,
-- count: 351 ms (sequential scan) -> 35-106 ms (parallel index-only scan). Each replaces an
-- index of migration 4 with the same key columns, so an import maintains no extra index.
DROP INDEX roster.user_rows_tenant_key_c;
CREATE INDEX user_rows_tenant_key_c ON roster.user_rows (tenant, key COLLATE "C") INCLUDE (status);
DROP INDEX roster.user_rows_tenant_updated_at;
CREATE INDEX user_rows_tenant_updated_at ON roster.user_rows (tenant, updated_at) INCLUDE (status);

-- The groups of each tenant with their member counts, for /Groups (every group: 1.6 s of
-- unnesting the `groups` column before), /Groups/{id} (counting a group of 100,000 through
-- its GIN index: 150-260 ms) and the totalResults of `groups eq "…"`. A member is a user that
-- is not deleted and lists the group (a non-empty name) in its `groups` field, counted once
-- however often it lists it. Kept by every commit in its own transaction
-- (store::postgres::group_counts: the staged rows' groups minus the replaced rows' groups),
-- and by the rewrite of one user; a group whose count reaches 0 has no row. `name` is
-- compared and ordered in byte order, as /Groups pages it.
CREATE TABLE roster.user_groups (
    tenant  text               NOT NULL,
    name    text COLLATE "C"   NOT NULL,
    members bigint             NOT NULL,
    PRIMARY KEY (tenant, name)
);
-- Groups of the users already in the directory.
INSERT INTO roster.user_groups (tenant, name, members)
SELECT u.tenant, g.name, count(*)
FROM roster.user_rows u
CROSS JOIN LATERAL (SELECT DISTINCT item FROM unnest(u.groups) AS item WHERE item <> '') AS g(name)
WHERE u.status <> 'deleted' AND u.groups IS NOT NULL
GROUP BY u.tenant, g.name;
