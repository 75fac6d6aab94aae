-- Roster schema version 6: indexes for the console's user search (issue 13,
-- admin::console::users): key or mapping code equal to the query (served by the primary key
-- and user_rows_tenant_mapping_code), or email, userName, last name or "first last" starting
-- with it, any case (`lower(column) LIKE lower('q%')`). text_pattern_ops lets a btree serve a
-- LIKE prefix whatever the database's collation, so PostgreSQL answers the search as a
-- BitmapOr of index scans instead of a scan of the tenant's rows. Each expression is written
-- exactly as store::postgres::users_query renders the attribute.
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
