-- Roster schema version 8: roster.user_rows is partitioned by tenant, one table per tenant
-- (issue 11; docs/postgres.md, Speed; store::postgres::partitions).
--
-- A first import of 1,000,000 users spent 20 s of its 31 s adding each row to the table's
-- thirteen indexes one entry at a time. A tenant with a table of its own lets its first commit
-- fill a new, unindexed table, build each index in one sorted pass, and attach the table as
-- the tenant's partition: 8 s for the same rows, measured. Applications still read
-- roster.users (and may read roster.user_rows): the partitions are an implementation detail.
--
-- The name of a tenant's partition of `base` ('user_rows'): derived from the tenant so that
-- any node finds it without a catalog of its own (64 bits of md5: a collision would make the
-- attach fail with an error, never mix tenants, since each partition holds one tenant value).
CREATE FUNCTION roster.tenant_partition(base text, tenant text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT base || '_' || left(md5(tenant), 16) $$;

-- The view depends on the table; it is made again below, unchanged.
DROP VIEW roster.users;
ALTER TABLE roster.user_rows RENAME TO user_rows_unpartitioned;
-- The old primary key stays (renamed) for reading each tenant's rows in key order below.
ALTER TABLE roster.user_rows_unpartitioned
    RENAME CONSTRAINT user_rows_pkey TO user_rows_unpartitioned_pkey;
DROP INDEX roster.user_rows_tenant_email, roster.user_rows_tenant_status,
    roster.user_rows_tenant_bucket, roster.user_rows_tenant_user_name,
    roster.user_rows_tenant_mapping_code, roster.user_rows_lower_groups,
    roster.user_rows_search_email, roster.user_rows_search_user_name,
    roster.user_rows_search_last_name, roster.user_rows_search_full_name,
    roster.user_rows_tenant_key_c, roster.user_rows_tenant_updated_at;

CREATE TABLE roster.user_rows (
    LIKE roster.user_rows_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS
) PARTITION BY LIST (tenant);

-- The indexes of version 7, on every partition. One is gone: (tenant, lower(coalesce(
-- username, email, key))) duplicated user_rows_search_user_name, whose text_pattern_ops
-- serves equality too (EXPLAIN: `userName eq` is an index scan of it).
ALTER TABLE roster.user_rows ADD PRIMARY KEY (tenant, key);
CREATE INDEX user_rows_tenant_email  ON roster.user_rows (tenant, email);
CREATE INDEX user_rows_tenant_status ON roster.user_rows (tenant, status);
CREATE INDEX user_rows_tenant_bucket ON roster.user_rows (tenant, bucket, key);
CREATE INDEX user_rows_tenant_mapping_code ON roster.user_rows (tenant, mapping_code);
CREATE INDEX user_rows_lower_groups ON roster.user_rows USING gin (roster.lower_items(groups));
CREATE INDEX user_rows_search_email
    ON roster.user_rows (tenant, lower(email) text_pattern_ops);
CREATE INDEX user_rows_search_user_name
    ON roster.user_rows (tenant, lower(coalesce(username, email, key)) text_pattern_ops);
CREATE INDEX user_rows_search_last_name
    ON roster.user_rows (tenant, lower(last_name) text_pattern_ops);
CREATE INDEX user_rows_search_full_name
    ON roster.user_rows (tenant,
        lower(nullif(btrim(coalesce(first_name, '') || ' ' || coalesce(last_name, '')), ''))
        text_pattern_ops);
CREATE INDEX user_rows_tenant_key_c ON roster.user_rows (tenant, key COLLATE "C") INCLUDE (status);
CREATE INDEX user_rows_tenant_updated_at ON roster.user_rows (tenant, updated_at) INCLUDE (status);

-- A table for each tenant with users, made as a tenant's first commit makes it
-- (store::postgres::partitions): filled in key order with the CHECK that attaching would
-- otherwise verify by a scan, then attached, which builds its indexes in one pass each.
DO $$
DECLARE t text;
DECLARE p text;
BEGIN
    FOR t IN SELECT DISTINCT tenant FROM roster.user_rows_unpartitioned LOOP
        p := roster.tenant_partition('user_rows', t);
        EXECUTE format('CREATE TABLE roster.%1$I (LIKE roster.user_rows INCLUDING DEFAULTS '
                       'INCLUDING CONSTRAINTS, CONSTRAINT %1$I CHECK (tenant = %2$L))', p, t);
        EXECUTE format('INSERT INTO roster.%I SELECT * FROM roster.user_rows_unpartitioned '
                       'WHERE tenant = %L ORDER BY key', p, t);
        EXECUTE format('ALTER TABLE roster.user_rows ATTACH PARTITION roster.%I '
                       'FOR VALUES IN (%L)', p, t);
    END LOOP;
END $$;
DROP TABLE roster.user_rows_unpartitioned;

CREATE VIEW roster.users AS
SELECT tenant, key, status, email, username, mapping_code, first_name, last_name,
       manager_email, date_of_birth, start_date, sex, language, national_id, phone,
       job_title, role, timezone, org_unit, location, workplace, groups, teams,
       attributes, created_at, updated_at, deleted_at
  FROM roster.user_rows;
