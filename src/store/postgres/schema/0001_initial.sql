-- Roster schema version 1: the tables of the PostgreSQL store (issue 11).
--
-- Applied by store::postgres::migrate inside one transaction, under the migration advisory
-- lock, after schema `roster` and `roster.schema_version` exist. Never edit an applied
-- migration: add the next file instead.
--
-- Read contract for applications (docs/postgres.md): the views `roster.users` and
-- `roster.imports`. Everything else is internal to Roster and may change in any version.

-- Per-tenant directory state (store::TenantState): the commit version plans check against,
-- and the sha256 of the last applied file (for `duplicate`).
CREATE TABLE roster.tenant_state (
    tenant              text        PRIMARY KEY,
    version             bigint      NOT NULL DEFAULT 0,
    last_applied_sha256 text,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Which version token each bucket has (store::TenantState::gens): bumped by every commit that
-- changes the bucket; a bucket with no row is empty (generation 0).
CREATE TABLE roster.bucket_gens (
    tenant text     NOT NULL,
    bucket smallint NOT NULL CHECK (bucket >= 0 AND bucket < 1024),
    gen    bigint   NOT NULL CHECK (gen > 0),
    PRIMARY KEY (tenant, bucket)
);

-- Buckets an import staged (Directory::stage_bucket) and has not committed yet: the packed
-- bucket (model::packed), turned into user rows by the commit's transaction, or swept.
CREATE TABLE roster.staged_buckets (
    tenant    text        NOT NULL,
    bucket    smallint    NOT NULL CHECK (bucket >= 0 AND bucket < 1024),
    gen       bigint      NOT NULL,
    packed    bytea       NOT NULL,
    staged_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, bucket, gen)
);

-- One row per user: every field of model::fields as its own typed column, `custom.*` fields in
-- `attributes`, and the engine's private columns (bucket, password hash and fingerprint, row
-- digest, flags). Applications read it through the view roster.users, which leaves the private
-- columns out.
CREATE TABLE roster.user_rows (
    tenant        text        NOT NULL,
    key           text        NOT NULL,
    status        text        NOT NULL CHECK (status IN ('active', 'inactive', 'deleted')),
    email         text,
    username      text,
    mapping_code  text,
    first_name    text,
    last_name     text,
    manager_email text,
    date_of_birth date,
    start_date    date,
    sex           text        CHECK (sex IN ('M', 'F')),
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
    attributes    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    deleted_at    timestamptz,
    -- private to Roster: never in roster.users
    bucket        smallint    NOT NULL CHECK (bucket >= 0 AND bucket < 1024),
    password_hash text,
    password_fp   bytea       CHECK (password_fp IS NULL OR length(password_fp) = 16),
    row_digest    bytea       NOT NULL CHECK (length(row_digest) = 16),
    flags         smallint    NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, key)
);
CREATE INDEX user_rows_tenant_email  ON roster.user_rows (tenant, email);
CREATE INDEX user_rows_tenant_status ON roster.user_rows (tenant, status);
CREATE INDEX user_rows_tenant_bucket ON roster.user_rows (tenant, bucket, key);

-- The read contract: one row per user, never a password hash.
CREATE VIEW roster.users AS
SELECT tenant, key, status, email, username, mapping_code, first_name, last_name,
       manager_email, date_of_birth, start_date, sex, language, national_id, phone,
       job_title, role, timezone, org_unit, location, workplace, groups, teams,
       attributes, created_at, updated_at, deleted_at
  FROM roster.user_rows;

-- The import history: one row per import record (model::ImportRecord), its fields as columns.
CREATE TABLE roster.import_records (
    tenant      text        NOT NULL,
    id          text        NOT NULL,
    file        text        NOT NULL,
    sha256      text        NOT NULL,
    bytes       bigint      NOT NULL,
    received_at timestamptz NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    status      text        NOT NULL
                CHECK (status IN ('success', 'partial', 'error', 'held', 'duplicate', 'missing')),
    rows        bigint      NOT NULL DEFAULT 0,
    inserted    bigint      NOT NULL DEFAULT 0,
    updated     bigint      NOT NULL DEFAULT 0,
    unchanged   bigint      NOT NULL DEFAULT 0,
    deactivated bigint      NOT NULL DEFAULT 0,
    deleted     bigint      NOT NULL DEFAULT 0,
    restored    bigint      NOT NULL DEFAULT 0,
    skipped     bigint      NOT NULL DEFAULT 0,
    errors      bigint      NOT NULL DEFAULT 0,
    messages    text[]      NOT NULL DEFAULT '{}',
    encoding    text        NOT NULL,
    delimiter   text        NOT NULL,
    archived_as text,
    report      text,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX import_records_tenant_finished ON roster.import_records (tenant, finished_at);

-- The read contract: one row per import record.
CREATE VIEW roster.imports AS
SELECT tenant, id, file, sha256, bytes, received_at, started_at, finished_at, status,
       rows, inserted, updated, unchanged, deactivated, deleted, restored, skipped, errors,
       messages, encoding, delimiter, archived_as, report
  FROM roster.import_records;

-- Held plans waiting for `approve` (RunLog::held_plan): the framed plan (store::frame).
CREATE TABLE roster.held_plans (
    tenant    text        NOT NULL,
    import_id text        NOT NULL,
    plan      bytea       NOT NULL,
    held_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, import_id)
);

-- The file ledger (store::LedgerEntry): the last run of each file name of a tenant.
CREATE TABLE roster.ledger (
    tenant     text        NOT NULL,
    file       text        NOT NULL,
    sha256     text        NOT NULL,
    state      text        NOT NULL CHECK (state IN ('done', 'failed')),
    import_id  text,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, file)
);

-- Intake claims: which claim (and node) is running a file, and the stamp a claim's run leaves
-- when it commits (RunLog::claim_running / claim_committed / claim_done).
CREATE TABLE roster.claims (
    tenant     text        NOT NULL,
    file       text        NOT NULL,
    claim      text        NOT NULL,
    node_id    text,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, file),
    UNIQUE (tenant, claim)
);
CREATE TABLE roster.claim_stamps (
    tenant     text        NOT NULL,
    claim      text        NOT NULL,
    import_id  text        NOT NULL,
    stamped_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, claim)
);

-- The durable mail outbox (store::OutboxItem). A node delivering a message holds it until
-- `claimed_until`, so each message is delivered by one node.
CREATE TABLE roster.outbox (
    id            bigserial   PRIMARY KEY,
    recipients    text[]      NOT NULL,
    message       bytea       NOT NULL,
    attempts      integer     NOT NULL DEFAULT 0,
    next_attempt  timestamptz NOT NULL DEFAULT now(),
    last_error    text,
    claimed_by    text,
    claimed_until timestamptz,
    queued_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_next_attempt ON roster.outbox (next_attempt);

-- Store-wide secrets and settings, e.g. `fingerprint_key` (the 32-byte key of password
-- fingerprints, Directory::fingerprint_key).
CREATE TABLE roster.meta (
    name  text  PRIMARY KEY,
    value bytea NOT NULL
);

-- Nodes of a cluster and their heartbeats ([cluster] lease_secs; GET /api/nodes).
CREATE TABLE roster.nodes (
    node_id      text        PRIMARY KEY,
    address      text,
    version      text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- Leases on named work ("tenant:<id>" for a tenant's imports, "schedule:<id>", ...): held by a
-- node until `expires_at`; `fencing` grows with every new holder so a late writer can be told.
CREATE TABLE roster.leases (
    name        text        PRIMARY KEY,
    node_id     text        NOT NULL,
    fencing     bigint      NOT NULL DEFAULT 1,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

-- Schedule ticks already fired, so a tick fires once across the cluster.
CREATE TABLE roster.schedule_ticks (
    tenant   text        NOT NULL,
    tick     timestamptz NOT NULL,
    node_id  text        NOT NULL,
    fired_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, tick)
);

-- Failed-login counters and blocks shared by all nodes (scope: 'address' or 'tenant').
CREATE TABLE roster.auth_failures (
    scope         text        NOT NULL CHECK (scope IN ('address', 'tenant')),
    subject       text        NOT NULL,
    failures      integer     NOT NULL DEFAULT 0,
    window_start  timestamptz NOT NULL DEFAULT now(),
    blocked_until timestamptz,
    PRIMARY KEY (scope, subject)
);
