-- Roster schema version 4: indexes for SCIM reads done by the database (issue 12,
-- store::postgres::users_query). Version 3 is the change log's (h-changes).
--
-- Pages are ordered by the key in byte order (COLLATE "C", as sled orders them); this index
-- lets `ORDER BY key COLLATE "C" LIMIT n` walk the tenant's keys instead of sorting them.
CREATE INDEX user_rows_tenant_key_c ON roster.user_rows (tenant, key COLLATE "C");
-- userName eq "…" (SCIM's most common lookup: username, else email, else the key).
CREATE INDEX user_rows_tenant_user_name
    ON roster.user_rows (tenant, lower(coalesce(username, email, key)));
-- emails.value eq "…"
CREATE INDEX user_rows_tenant_lower_email ON roster.user_rows (tenant, lower(email));
-- externalId / employeeNumber eq "…" (case-exact)
CREATE INDEX user_rows_tenant_mapping_code ON roster.user_rows (tenant, mapping_code);
-- meta.lastModified gt "…" (a consumer fetching what changed)
CREATE INDEX user_rows_tenant_updated_at ON roster.user_rows (tenant, updated_at);
-- /Groups: the members of one group (groups @> ARRAY[name])
CREATE INDEX user_rows_groups ON roster.user_rows USING gin (groups);
-- /Users?filter=groups eq "…" (case-insensitive): the items of `groups` lower-cased, so a GIN
-- index can answer `roster.lower_items(groups) @> ARRAY[lower($1)]`.
CREATE FUNCTION roster.lower_items(items text[]) RETURNS text[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT array_agg(lower(item)) FROM unnest(items) AS item $$;
CREATE INDEX user_rows_lower_groups ON roster.user_rows USING gin (roster.lower_items(groups));
