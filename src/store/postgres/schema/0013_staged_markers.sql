-- Each staged generation has one marker row in staged_rows. This partial index lists the
-- markers by node, so a node's heartbeat finds, without reading the staged rows themselves,
-- the generations of nodes that are no longer alive (a run that lost the database mid-commit
-- and could not discard them, on a node that then died or restarted under another id), and
-- deletes them through staged_rows_gen.
CREATE INDEX staged_rows_markers ON roster.staged_rows (node_id, gen)
    WHERE status = 'staged' AND key = '';
