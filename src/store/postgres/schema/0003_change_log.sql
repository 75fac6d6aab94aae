-- Roster schema version 3: the change log, the event log and delivery cursors (issue 12,
-- docs/delivery.md). Applied by store::postgres::migrate; never edit once applied.

-- The last change-log and event-log seq of each tenant, advanced by the commit that writes
-- the entries, under the tenant_state row lock (so seq has no gaps a reader could see fill).
ALTER TABLE roster.tenant_state
    ADD COLUMN change_seq bigint NOT NULL DEFAULT 0,
    ADD COLUMN event_seq  bigint NOT NULL DEFAULT 0;

-- Changes an import staged with a bucket generation (Directory::stage_changes), numbered and
-- moved into roster.changes by the commit that names the generation, or discarded with it.
CREATE TABLE roster.staged_changes (
    gen     bigint  NOT NULL,
    ord     integer NOT NULL,
    node_id text    NOT NULL,
    tenant  text    NOT NULL,
    key     text    NOT NULL,
    kind    text    NOT NULL,
    fields  jsonb   NOT NULL,
    PRIMARY KEY (gen, ord)
);

-- One entry per changed user (model::changelog::LoggedChange).
CREATE TABLE roster.changes (
    tenant    text        NOT NULL,
    seq       bigint      NOT NULL,
    at        timestamptz NOT NULL,
    import_id text,
    key       text        NOT NULL,
    kind      text        NOT NULL,
    fields    jsonb       NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE INDEX changes_by_key ON roster.changes (tenant, key, seq);

-- One entry per announcement (model::changelog::Event).
CREATE TABLE roster.events (
    tenant       text        NOT NULL,
    seq          bigint      NOT NULL,
    at           timestamptz NOT NULL,
    kind         text        NOT NULL,
    import_id    text,
    first_change bigint,
    last_change  bigint,
    PRIMARY KEY (tenant, seq)
);

-- How far each delivery consumer got (model::changelog::Cursor, as JSON).
CREATE TABLE roster.cursors (
    tenant   text  NOT NULL,
    consumer text  NOT NULL,
    cursor   jsonb NOT NULL,
    PRIMARY KEY (tenant, consumer)
);
