-- Roster schema version 11: roster.lower_items without a subquery (issue 11; docs/postgres.md,
-- Speed).
--
-- The GIN index of lower-cased groups (migration 4) calls roster.lower_items once per row. As
-- a SQL function over `unnest` and `array_agg` each call ran a small query of its own: building
-- that index on a first import of 1,000,000 users took 2.2 s, where the same index of `groups`
-- as it is took 0.26 s. The function now lower-cases the array's text form and reads it back:
-- lower() changes letters only, never the braces, commas, quotes and backslashes that frame the
-- items, and an unquoted NULL item is read back as NULL whatever its case. The cast to text is
-- not allowed in an index expression itself (stable for arrays in general, fixed for text[]),
-- hence a function; PL/pgSQL, whose one-expression body runs faster than a SQL function's
-- (index build 0.8 s against 1.4 s).
--
-- Every array gives what it gave before but the empty one ('{}' now, NULL from array_agg),
-- which Roster never stores: a list field is stored as at least one item
-- (store::postgres::rows).
--
-- The index is dropped and built again: an index does not follow a replaced function.
DROP INDEX roster.user_rows_lower_groups;
CREATE OR REPLACE FUNCTION roster.lower_items(items text[]) RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ BEGIN RETURN lower(items::text)::text[]; END $$;
CREATE INDEX user_rows_lower_groups ON roster.user_rows USING gin (roster.lower_items(groups));

