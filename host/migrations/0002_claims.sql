-- Claims: which host works a delivery (see host/src/ledger/postgres.rs).

-- Every host that shares the ledger, with its lease: its claims are its own
-- while greatest(renewed_at, the server's start) + lease_ms is ahead of now().
CREATE TABLE notify_hosts (
    owner      text        PRIMARY KEY,
    renewed_at timestamptz NOT NULL,
    lease_ms   bigint      NOT NULL,
    started_at timestamptz NOT NULL
);

-- One row per delivery being worked: taken before the send, given up with
-- the delivery's final record, taken over once its owner's lease ran out.
CREATE TABLE notify_claims (
    key        text        PRIMARY KEY,
    owner      text        NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notify_claims_owner ON notify_claims (owner);
