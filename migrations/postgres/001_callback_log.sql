-- The CallbackLog: one row per request on a protected route, and per request refused before a
-- route was decided. Rows are written in batches by every gateway; `id` is made by the gateway, so
-- that a batch replayed from the spool after a lost acknowledgement inserts nothing twice.
CREATE TABLE callback_log (
  id          uuid PRIMARY KEY,
  at          timestamptz NOT NULL,
  route       text NOT NULL,
  -- The key fields by name, e.g. {"invoiceNumber": "4711", "transactionId": "T-1"}.
  key_fields  jsonb,
  scope       jsonb,
  -- The stored key (a hash), to join with the store's record.
  store_key   text,
  request_id  text NOT NULL,
  method      text NOT NULL,
  path        text NOT NULL,
  outcome     text NOT NULL,
  status      smallint NOT NULL,
  upstream_ms real,
  error_code  text,
  instance    text NOT NULL,
  -- Only with audit.payloads: true.
  payload     text
);

CREATE INDEX callback_log_at ON callback_log (at);
CREATE INDEX callback_log_key_fields ON callback_log USING gin (key_fields jsonb_path_ops);
CREATE INDEX callback_log_store_key ON callback_log (store_key, at);
CREATE INDEX callback_log_route_at ON callback_log (route, at);
