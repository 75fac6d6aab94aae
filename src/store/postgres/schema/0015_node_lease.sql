-- Each node's own lease_secs, written by its heartbeats: other nodes judge it alive by its
-- own value, not theirs (a rolling change of [cluster] lease_secs from 60 to 10 made the new
-- nodes take the old ones, beating every 20 s, for dead half of the time: review s26). A row
-- of a node that does not write it (an older binary) is judged by the reader's own value.
ALTER TABLE roster.nodes ADD COLUMN lease_secs double precision;

-- The process that holds each lease (a random token each process makes at start): a lease is
-- this node's own only when this very process took it. A second process started under a live
-- node's id (a frozen VM's replacement) had its twin's lease at once and unfenced, and the
-- frozen process, resumed, could still commit under it (review s26). Rows of older binaries
-- have none.
ALTER TABLE roster.leases ADD COLUMN holder text;
