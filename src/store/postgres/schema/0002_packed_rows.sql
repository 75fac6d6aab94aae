-- Roster schema version 2: user rows carry their packed record, and imports stage changed rows
-- instead of whole buckets (issue 11, the store traits on PostgreSQL).
--
-- The import engine plans on packed records (model::packed). Keeping each user's packed record
-- in a private column makes a bucket read one indexed range scan with no decoding, and a round
-- trip exact, while the typed columns stay what applications read (roster.users). The private
-- columns the record already holds (password hash and fingerprint, row digest, flags) go.

ALTER TABLE roster.user_rows
    ADD COLUMN record bytea NOT NULL,
    DROP COLUMN password_hash,
    DROP COLUMN password_fp,
    DROP COLUMN row_digest,
    DROP COLUMN flags;

-- Directory::stage_bucket compares a staged bucket with the committed rows of that bucket and
-- keeps only the difference here, under the staged generation: a row to write (`record` set,
-- typed columns filled) or a key to remove (`record` NULL). The commit applies the generations
-- it names with two set statements and deletes them; `node_id` lets a node sweep what it staged
-- before it restarted, and lets a survivor sweep what a dead node staged.
DROP TABLE roster.staged_buckets;
CREATE UNLOGGED TABLE roster.staged_rows (
    gen           bigint      NOT NULL,
    node_id       text        NOT NULL,
    tenant        text        NOT NULL,
    key           text        NOT NULL,
    bucket        smallint    NOT NULL,
    status        text,
    email         text,
    username      text,
    mapping_code  text,
    first_name    text,
    last_name     text,
    manager_email text,
    date_of_birth date,
    start_date    date,
    sex           text,
    language      text,
    national_id   text,
    phone         text,
    job_title     text,
    role          text,
    timezone      text,
    org_unit      text,
    location      text,
    workplace     text,
    groups        text[],
    teams         text[],
    attributes    jsonb,
    created_at    timestamptz,
    updated_at    timestamptz,
    deleted_at    timestamptz,
    record        bytea
);
CREATE INDEX staged_rows_gen ON roster.staged_rows (gen);
CREATE SEQUENCE roster.staged_gen;
