-- The idempotency store (store.kind: postgres): one row per stored key, and one function per atomic
-- step, the same steps as the Redis store's scripts. Each function runs as one statement, so each
-- step is one round trip and atomic; concurrent steps on a key serialize on its row lock. Times are
-- milliseconds on the database's clock, one clock for every gateway.
--
-- A row's `expires` is its logical end; `purge_at` its physical end (a row past it counts as absent
-- and is swept). The lease is `lease_token` until `lease_until`; the settle marker (a request sent
-- under the key may still commit) lasts until `settle_until`.
CREATE TABLE idempotency_records (
  key          text PRIMARY KEY,
  state        text NOT NULL,
  token        text NOT NULL DEFAULT '',
  fp           text NOT NULL DEFAULT '',
  created      bigint NOT NULL DEFAULT 0,
  expires      bigint NOT NULL DEFAULT 0,
  purge_at     bigint NOT NULL DEFAULT 0,
  lease_token  text,
  lease_until  bigint,
  settle_until bigint,
  took         text,
  status       integer,
  headers      text,
  body         bytea,
  recon        boolean NOT NULL DEFAULT false,
  attempts     integer
);
CREATE INDEX idempotency_records_purge_at ON idempotency_records (purge_at);

-- The store's attempt log (audit.sink: store), capped by the gateway.
CREATE TABLE idempotency_attempts (
  id    bigserial PRIMARY KEY,
  entry jsonb NOT NULL
);

CREATE FUNCTION idem_now() RETURNS bigint LANGUAGE sql VOLATILE AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

-- What a step answers: the view of the key ('free', 'expired', 'released', 'unknown', 'in_flight',
-- 'completed'; or 'acquired' for a begin that took it, or a step's 1 / 0 in `ok`), and the record.
CREATE TYPE idem_reply AS (
  view text, ok integer, took text, settles bigint,
  fp text, created bigint, expires bigint, status integer, headers text, body bytea, recon boolean,
  attempts integer, settle_ms bigint, server_now bigint
);

-- What the key holds at time t (as the Redis store's classify()).
CREATE FUNCTION idem_classify(r idempotency_records, t bigint) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  is_unknown boolean;
BEGIN
  IF r.key IS NULL OR r.purge_at <= t OR r.state = 'free' THEN RETURN 'free'; END IF;
  is_unknown := r.state = 'unknown'
    OR (r.state = 'in_flight' AND (r.lease_token IS NULL OR r.lease_until <= t));
  IF r.expires <= t THEN
    IF is_unknown THEN RETURN 'expired'; END IF;
    RETURN 'free';
  END IF;
  IF is_unknown THEN RETURN 'unknown'; END IF;
  RETURN r.state;
END $$;

CREATE FUNCTION idem_settle_ms(r idempotency_records, t bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS
$$ SELECT greatest(0, coalesce(r.settle_until, 0) - t) $$;

CREATE FUNCTION idem_view(r idempotency_records, v text, t bigint) RETURNS idem_reply LANGUAGE sql IMMUTABLE AS
$$ SELECT ROW(v, NULL, NULL, NULL, r.fp, r.created, r.expires, r.status, r.headers, r.body, r.recon,
              r.attempts, idem_settle_ms(r, t), t)::idem_reply $$;

CREATE FUNCTION idem_ok(n integer) RETURNS idem_reply LANGUAGE sql IMMUTABLE AS
$$ SELECT ROW(NULL, n, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::idem_reply $$;

CREATE FUNCTION idem_get(k text) RETURNS idem_reply LANGUAGE plpgsql AS $$
DECLARE
  r idempotency_records;
  t bigint := idem_now();
  v text;
BEGIN
  SELECT * INTO r FROM idempotency_records WHERE key = k;
  v := idem_classify(r, t);
  IF v IN ('free', 'expired') THEN RETURN ROW(v, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, t)::idem_reply; END IF;
  RETURN idem_view(r, v, t);
END $$;

-- The lease and the in-flight mark in one step, and all a replay costs.
CREATE FUNCTION idem_begin(k text, tok text, fingerprint text, lease bigint, ttl bigint, settle bigint, take_over boolean)
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

-- A lease that ran out is not revived.
CREATE FUNCTION idem_extend(k text, tok text, lease bigint, ttl bigint, settle bigint) RETURNS idem_reply LANGUAGE plpgsql AS $$
DECLARE
  r idempotency_records;
  t bigint;
BEGIN
  SELECT * INTO r FROM idempotency_records WHERE key = k FOR UPDATE;
  t := idem_now();
  IF r.key IS NULL OR r.purge_at <= t OR r.lease_token IS DISTINCT FROM tok OR r.lease_until <= t
     OR r.token <> tok OR r.state <> 'in_flight' THEN
    RETURN idem_ok(0);
  END IF;
  UPDATE idempotency_records SET
    lease_until = t + lease, expires = t + lease + ttl, purge_at = t + lease + 2 * ttl,
    -- An extension only ever lengthens the settle marker.
    settle_until = CASE
      WHEN settle > 0 AND coalesce(r.settle_until - t, -1) < lease + settle THEN t + lease + settle
      ELSE r.settle_until
    END
  WHERE key = k;
  RETURN idem_ok(1);
END $$;

-- Fencing, at the head of every step that ends an attempt: only the attempt whose token the
-- in-flight record carries may write. One that is fenced out gives back a lease it still holds and
-- wakes waiters, so that nothing is left hanging.
CREATE FUNCTION idem_owned(k text, tok text, r idempotency_records, t bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF r.key IS NOT NULL AND r.purge_at > t AND r.token = tok AND r.state = 'in_flight' AND r.expires > t THEN
    RETURN true;
  END IF;
  IF r.key IS NOT NULL AND r.lease_token = tok AND r.lease_until > t THEN
    UPDATE idempotency_records SET lease_token = NULL, lease_until = NULL WHERE key = k;
    PERFORM pg_notify('idem_done', k);
  END IF;
  RETURN false;
END $$;

CREATE FUNCTION idem_complete(k text, tok text, st integer, hdrs text, bdy bytea, ttl bigint, reconciled boolean)
RETURNS idem_reply LANGUAGE plpgsql AS $$
DECLARE
  r idempotency_records;
  t bigint;
BEGIN
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

CREATE FUNCTION idem_unknown(k text, tok text, ttl bigint, settle bigint) RETURNS idem_reply LANGUAGE plpgsql AS $$
DECLARE
  r idempotency_records;
  t bigint;
BEGIN
  SELECT * INTO r FROM idempotency_records WHERE key = k FOR UPDATE;
  t := idem_now();
  IF NOT idem_owned(k, tok, r, t) THEN RETURN idem_ok(0); END IF;
  UPDATE idempotency_records SET
    state = 'unknown', expires = t + ttl, purge_at = t + 2 * ttl,
    lease_token = CASE WHEN lease_token = tok THEN NULL ELSE lease_token END,
    lease_until = CASE WHEN lease_token = tok THEN NULL ELSE lease_until END,
    -- Now it is known when the attempt stopped waiting: that starts the settle time.
    settle_until = CASE WHEN settle > 0 THEN t + settle ELSE settle_until END
  WHERE key = k;
  PERFORM pg_notify('idem_done', k);
  RETURN idem_ok(1);
END $$;

-- Without an answer to hold, nothing was sent: a key taken over from 'unknown' goes back to it;
-- any other key is freed.
CREATE FUNCTION idem_release(k text, tok text, hold_it boolean, st integer, hdrs text, bdy bytea, hold bigint)
RETURNS idem_reply LANGUAGE plpgsql AS $$
DECLARE
  r idempotency_records;
  t bigint;
BEGIN
  SELECT * INTO r FROM idempotency_records WHERE key = k FOR UPDATE;
  t := idem_now();
  IF NOT idem_owned(k, tok, r, t) THEN RETURN idem_ok(0); END IF;
  UPDATE idempotency_records SET lease_token = NULL, lease_until = NULL WHERE key = k AND lease_token = tok;
  IF NOT hold_it AND r.took = 'unknown' THEN
    UPDATE idempotency_records SET state = 'unknown', token = '' WHERE key = k;
  ELSIF hold_it THEN
    UPDATE idempotency_records SET
      state = 'released', status = st, headers = hdrs, body = bdy, expires = t + hold, purge_at = t + hold,
      recon = false, settle_until = NULL
    WHERE key = k;
  ELSE
    DELETE FROM idempotency_records WHERE key = k;
  END IF;
  PERFORM pg_notify('idem_done', k);
  RETURN idem_ok(1);
END $$;

-- Operator resolution of an unknown key: store the given answer, or free the key.
CREATE FUNCTION idem_resolve(k text, store_it boolean, st integer, hdrs text, bdy bytea, ttl bigint)
RETURNS idem_reply LANGUAGE plpgsql AS $$
DECLARE
  r idempotency_records;
  t bigint;
BEGIN
  SELECT * INTO r FROM idempotency_records WHERE key = k FOR UPDATE;
  t := idem_now();
  IF idem_classify(r, t) <> 'unknown' THEN RETURN idem_ok(0); END IF;
  IF store_it THEN
    UPDATE idempotency_records SET
      state = 'completed', token = '', status = st, headers = hdrs, body = bdy, expires = t + ttl,
      purge_at = t + ttl, recon = false, lease_token = NULL, lease_until = NULL, settle_until = NULL
    WHERE key = k;
  ELSE
    DELETE FROM idempotency_records WHERE key = k;
  END IF;
  PERFORM pg_notify('idem_done', k);
  RETURN idem_ok(1);
END $$;

CREATE FUNCTION idem_purge(k text) RETURNS idem_reply LANGUAGE plpgsql AS $$
DECLARE
  n integer;
BEGIN
  DELETE FROM idempotency_records WHERE key = k AND purge_at > idem_now();
  GET DIAGNOSTICS n = ROW_COUNT;
  DELETE FROM idempotency_records WHERE key = k;
  PERFORM pg_notify('idem_done', k);
  RETURN idem_ok(n);
END $$;
