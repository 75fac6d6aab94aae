-- Roster schema version 5: cheaper imports (h-pgspeed; docs/postgres.md, Speed). Every index of
-- roster.user_rows costs each written row an index entry (about 1.8 s per btree index for a
-- first import of 1,000,000 users, measured); these two duplicated others.
--
-- (tenant, lower(email)): stored emails are already lower-case (the importer lower-cases every
-- `email` value, import::fields::email, and nothing else writes the field), so lower(email) is
-- email and `emails.value eq "…"` is answered as `email = lower($1)` by the read contract's
-- index (tenant, email).
DROP INDEX roster.user_rows_tenant_lower_email;
-- GIN (groups): the members of one group are found through the GIN index of lower-cased items
-- (`roster.lower_items(groups) @> ARRAY[lower($1)]`), then checked exactly (`groups @> …`).
DROP INDEX roster.user_rows_groups;
-- Staged changes, like staged rows, are worth nothing after a crash (the commit that would
-- move them refuses when the staged rows' marker is gone), so they need no WAL either.
ALTER TABLE roster.staged_changes SET UNLOGGED;
