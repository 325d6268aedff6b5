-- The two steps of every first attempt, each with a path for the common case that writes one row
-- version and takes no lock before it: a begin of a key with no row inserts the in-flight row (002
-- inserted a placeholder, locked it and updated it); a complete by the attempt that owns the record
-- is one UPDATE (002 locked the row with SELECT ... FOR UPDATE first, a write of its own). Every other
-- case goes the way 002 went. On a local PostgreSQL this is about 30% more begin + complete pairs a
-- second.

CREATE OR REPLACE FUNCTION idem_begin(k text, tok text, fingerprint text, lease bigint, ttl bigint, settle bigint, take_over boolean)
RETURNS idem_reply LANGUAGE plpgsql AS $$
DECLARE
  r idempotency_records;
  t bigint;
  v text;
  took_how text := 'fresh';
  settles bigint := 0;
  kept_attempts integer;
BEGIN
  -- A replay, or a duplicate of an attempt in flight, only reads: a completed or in-flight record is
  -- answered as it is, without a lock or a write.
  SELECT * INTO r FROM idempotency_records WHERE key = k;
  t := idem_now();
  v := idem_classify(r, t);
  IF v IN ('completed', 'in_flight') OR (v = 'unknown' AND NOT take_over) THEN
    RETURN idem_view(r, v, t);
  END IF;
  -- A key with no row: the in-flight row is inserted as it is. A begin of the same key that inserted
  -- it meanwhile (this INSERT waits for it, then does nothing) sends this one down the locked path.
  IF r.key IS NULL THEN
    INSERT INTO idempotency_records (key, state, token, fp, created, expires, purge_at, took, lease_token,
                                     lease_until, settle_until)
    VALUES (k, 'in_flight', tok, fingerprint, t, t + lease + ttl, t + lease + 2 * ttl, 'fresh', tok, t + lease,
            CASE WHEN settle > 0 THEN t + lease + settle END)
    ON CONFLICT (key) DO NOTHING;
    IF FOUND THEN
      RETURN ROW('acquired', NULL, 'fresh', 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, t)::idem_reply;
    END IF;
  END IF;
  -- The row exists (a placeholder if need be) and is locked: begins of one key run one at a time.
  INSERT INTO idempotency_records (key, state) VALUES (k, 'free') ON CONFLICT (key) DO NOTHING;
  SELECT * INTO r FROM idempotency_records WHERE key = k FOR UPDATE;
  t := idem_now();
  v := idem_classify(r, t);
  IF v = 'expired' THEN
    took_how := 'expired';
  ELSIF v = 'unknown' AND take_over AND r.fp = fingerprint THEN
    took_how := 'unknown';
    settles := idem_settle_ms(r, t);
  ELSIF v NOT IN ('free', 'released') THEN
    RETURN idem_view(r, v, t);
  END IF;
  kept_attempts := CASE WHEN r.purge_at > t THEN r.attempts END;
  UPDATE idempotency_records SET
    state = 'in_flight', token = tok, fp = fingerprint, created = t, expires = t + lease + ttl,
    purge_at = t + lease + 2 * ttl, took = took_how, status = NULL, headers = NULL, body = NULL, recon = false,
    attempts = kept_attempts, lease_token = tok, lease_until = t + lease,
    -- A take-over has sent nothing yet: the earlier request's settle time stands as it was.
    settle_until = CASE
      WHEN took_how = 'unknown' THEN (CASE WHEN r.settle_until > t THEN r.settle_until END)
      WHEN settle > 0 THEN t + lease + settle
    END
  WHERE key = k;
  RETURN ROW('acquired', NULL, took_how, settles, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, t)::idem_reply;
END $$;

CREATE OR REPLACE FUNCTION idem_complete(k text, tok text, st integer, hdrs text, bdy bytea, ttl bigint, reconciled boolean)
RETURNS idem_reply LANGUAGE plpgsql AS $$
DECLARE
  r idempotency_records;
  t bigint;
BEGIN
  -- The attempt that owns the record, as nearly every one does: one UPDATE, whose WHERE is
  -- idem_owned's first test. Any other attempt takes the fencing path below.
  t := idem_now();
  UPDATE idempotency_records SET
    state = 'completed', status = st, headers = hdrs, body = bdy, expires = t + ttl, purge_at = t + ttl,
    recon = reconciled, lease_token = NULL, lease_until = NULL, settle_until = NULL
  WHERE key = k AND token = tok AND state = 'in_flight' AND purge_at > t AND expires > t;
  IF FOUND THEN
    PERFORM pg_notify('idem_done', k);
    RETURN idem_ok(1);
  END IF;
  SELECT * INTO r FROM idempotency_records WHERE key = k FOR UPDATE;
  t := idem_now();
  IF NOT idem_owned(k, tok, r, t) THEN RETURN idem_ok(0); END IF;
  UPDATE idempotency_records SET
    state = 'completed', status = st, headers = hdrs, body = bdy, expires = t + ttl, purge_at = t + ttl,
    recon = reconciled, lease_token = NULL, lease_until = NULL, settle_until = NULL
  WHERE key = k;
  PERFORM pg_notify('idem_done', k);
  RETURN idem_ok(1);
END $$;
