-- Roster schema version 10: a staged bucket generation's changes are one row of arrays
-- (issue 11; docs/postgres.md, Speed; store::postgres::changes).
--
-- Version 3 staged one row per change: a first import of 1,000,000 users staged 1,000,000
-- rows (2.2 s of server time in COPY, each row a tuple and an entry of the primary key), only
-- for its commit to read them once. Now the changes of one staged generation (one bucket, a
-- few hundred users) are one row holding their keys, kinds and fields as arrays in the order
-- staged; the commit unnests them, numbering each by its position.
--
-- Staged rows and changes are scratch (unlogged). Those of plans staged before this version
-- are dropped with their table, and so are the staged rows' markers: a commit that names
-- such a generation is refused ("the rows this import staged ... are gone") and planned
-- again, never applied with its changes missing.
DELETE FROM roster.staged_rows;
DROP TABLE roster.staged_changes;
CREATE UNLOGGED TABLE roster.staged_changes (
    gen     bigint  PRIMARY KEY,
    node_id text    NOT NULL,
    tenant  text    NOT NULL,
    keys    text[]  NOT NULL,
    kinds   text[]  NOT NULL,
    fields  jsonb[] NOT NULL
);
-- Read once, by the commit: not worth compressing.
ALTER TABLE roster.staged_changes
    ALTER COLUMN keys SET STORAGE EXTERNAL,
    ALTER COLUMN kinds SET STORAGE EXTERNAL,
    ALTER COLUMN fields SET STORAGE EXTERNAL;
