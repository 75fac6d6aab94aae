-- Roster schema version 12: case-insensitive comparisons fold every letter, not only ASCII
-- (review of 2026-11-30, SCIM F1; docs/postgres.md, Migrations).
--
-- SCIM's case-insensitive attributes (userName, emails, names, groups, ...) and the console's
-- search compared lower() of both sides. lower() follows the database's collation: under the
-- C locale (what `initdb --locale=C` and many managed servers give) it changes A-Z only, so
-- `userName eq "ŠIME.IVIĆ"` or `groups eq "ПРОДАЖИ"` found the user on sled, which lower-cases
-- every letter (Rust's to_lowercase, Unicode's default case mapping), and nobody here.
-- roster.fold() lower-cases with ICU's root locale, the same default case mapping, whatever the
-- database's collation; its result keeps the default collation, so indexes and comparisons
-- behave as before (text_pattern_ops compares bytes). A server built without ICU keeps lower(),
-- as before this version.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu') THEN
        CREATE FUNCTION roster.fold(t text) RETURNS text
            LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
            AS $f$ SELECT lower(t COLLATE "und-x-icu") COLLATE "default" $f$;
    ELSE
        CREATE FUNCTION roster.fold(t text) RETURNS text
            LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
            AS $f$ SELECT lower(t) $f$;
    END IF;
END $$;

-- Indexes do not follow a replaced function: dropped, and built again below.
DROP INDEX roster.user_rows_lower_groups, roster.user_rows_search_email,
    roster.user_rows_search_user_name, roster.user_rows_search_last_name,
    roster.user_rows_search_full_name;

CREATE OR REPLACE FUNCTION roster.lower_items(items text[]) RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ BEGIN RETURN roster.fold(items::text)::text[]; END $$;

-- Each expression exactly as store::postgres::users_query renders the attribute.
CREATE INDEX user_rows_lower_groups ON roster.user_rows USING gin (roster.lower_items(groups));
CREATE INDEX user_rows_search_email ON roster.user_rows (roster.fold(email) text_pattern_ops);
CREATE INDEX user_rows_search_user_name
    ON roster.user_rows (roster.fold(coalesce(username, email, key)) text_pattern_ops);
CREATE INDEX user_rows_search_last_name
    ON roster.user_rows (roster.fold(last_name) text_pattern_ops);
CREATE INDEX user_rows_search_full_name
    ON roster.user_rows (
        roster.fold(nullif(btrim(coalesce(first_name, '') || ' ' || coalesce(last_name, '')), ''))
        text_pattern_ops);
