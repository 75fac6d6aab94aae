-- Blocks an operator lifted (`roster login-blocks --lift`,
-- POST /api/login-blocks/{scope}/{subject}/lift). The lifting node deletes the subject's row
-- of auth_failures and adds one row here in the same transaction, holding a lock on this
-- table so that ids commit in order; every node reads the rows past the last id it saw
-- beside its heartbeats and forgets the subject's failures and block in its own memory too.
-- Rows older than a day are deleted by heartbeats.
CREATE TABLE roster.login_lifts (
    id        bigserial   PRIMARY KEY,
    scope     text        NOT NULL CHECK (scope IN ('address', 'tenant')),
    subject   text        NOT NULL,
    lifted_at timestamptz NOT NULL DEFAULT now()
);
