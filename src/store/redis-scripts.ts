/**
 * The Redis store's Lua scripts, one per atomic step. Every script touches one stored key's record
 * only, a hash whose name carries the key as a hash tag, so each runs in one cluster slot; the
 * completion message goes out on that key's channel, which shares the tag: PUBLISH on one server,
 * SPUBLISH (sharded, delivered only within the slot's shard) on a cluster.
 */
export type Publish = "PUBLISH" | "SPUBLISH";

export const FIELDS = "'state', 'fp', 'created', 'expires', 'status', 'headers', 'body', 'recon', 'attempts'";

/**
 * Shared by every script. KEYS[1] is the record, a hash that also holds the lease and the settle
 * time as server times in ms: 'lease', when the owning attempt's lease runs out (0 once it ended),
 * and 'settle', until when a request sent under this key may still commit on the backend (0: none).
 * Fields rather than keys of their own: a first attempt then creates and deletes one key, not three,
 * which is about a third of what Redis spends on it. Times come from the server's TIME: one clock
 * for every gateway, and no gateway's clock step can expire or revive a lease.
 */
function prelude(publish: Publish): string {
  return `
    local function now()
      local t = redis.call('TIME')
      return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    -- What the key holds at time t: 'free', 'expired' (unknown past its TTL: free, but reported),
    -- 'released', 'unknown' (marked so, or in flight with no lease left), 'in_flight' or 'completed';
    -- and whether there is a record at all (a begin on a new key then skips clearing one).
    local function classify(t)
      local f = redis.call('HMGET', KEYS[1], 'state', 'expires', 'lease')
      local state = f[1]
      if not state then return 'free', false end
      local unknown = state == 'unknown' or (state == 'in_flight' and (tonumber(f[3]) or 0) <= t)
      if (tonumber(f[2]) or 0) <= t then
        if unknown then return 'expired', true end
        return 'free', true
      end
      if unknown then return 'unknown', true end
      return state, true
    end
    local function record(view, t)
      local r = redis.call('HMGET', KEYS[1], ${FIELDS}, 'settle')
      local settle = tonumber(r[10]) or 0
      r[10] = view
      r[11] = math.max(0, settle - t)
      r[12] = t
      return r
    end
    -- Fencing, at the head of every script that ends an attempt: only the attempt whose token
    -- (ARGV[1]) the in-flight record carries may write. One that is fenced out while its lease still
    -- runs (its record passed its TTL) gives the lease back and wakes waiters, so that nothing is left
    -- hanging. While the record carries the token, no other attempt has begun on the key since (a
    -- begin rewrites it).
    local function owned(t)
      local cur = redis.call('HMGET', KEYS[1], 'token', 'state', 'expires', 'lease')
      if cur[1] ~= ARGV[1] then return false end
      -- A record past its TTL counts for no one, not even the attempt that wrote it.
      if cur[2] == 'in_flight' and (tonumber(cur[3]) or 0) > t then return true end
      if (tonumber(cur[4]) or 0) > t then
        redis.call('HSET', KEYS[1], 'lease', 0)
        redis.call('${publish}', ARGV[2], 'fenced')
      end
      return false
    end
    -- An extension only ever lengthens the settle time: no attempt may shorten another's.
    local function settleFor(t, ms)
      if ms > 0 and (tonumber(redis.call('HGET', KEYS[1], 'settle')) or 0) < t + ms then
        redis.call('HSET', KEYS[1], 'settle', t + ms)
      end
    end`;
}

/**
 * One Lua script per atomic step (ioredis defineCommand sends EVALSHA). Records that must be reported
 * when they expire (in flight, unknown) are kept a TTL longer than they count ('expires' is the
 * logical end, PEXPIRE the physical one); completed and released ones go when they end.
 */
export function storeScripts(publish: Publish) {
  const PRELUDE = prelude(publish);
  return withFlags({
    idemGet: `${PRELUDE}
    local t = now()
    local view = classify(t)
    if view == 'free' or view == 'expired' then return {view} end
    return record(view, t)`,
    // The lease and the in-flight mark in one step, and all a replay costs. ARGV: token, fingerprint,
    // leaseMs, ttlMs, settleMs, takeOverUnknown. Returns {took, settlesInMs}, or the record that is there.
    idemBegin: `${PRELUDE}
    local t = now()
    local view, exists = classify(t)
    local took, settles, kept = 'fresh', 0, 0
    if view == 'expired' then
      took = 'expired'
    elseif view == 'unknown' and ARGV[6] == '1' then
      local cur = redis.call('HMGET', KEYS[1], 'fp', 'settle')
      if cur[1] ~= ARGV[2] then return record(view, t) end
      -- A take-over has sent nothing yet: the earlier request's settle time stands as it was.
      took, kept = 'unknown', tonumber(cur[2]) or 0
      settles = math.max(0, kept - t)
    elseif view ~= 'free' and view ~= 'released' then
      return record(view, t)
    end
    local lease, ttl, settle = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
    -- Otherwise this attempt's settle time replaces any earlier one.
    if took ~= 'unknown' then kept = settle > 0 and t + lease + settle or 0 end
    -- A new key (no record) has nothing to clear: every write here is paid on every first attempt.
    local attempts = false
    if exists then
      attempts = redis.call('HGET', KEYS[1], 'attempts')
      redis.call('DEL', KEYS[1])
    end
    redis.call('HSET', KEYS[1], 'state', 'in_flight', 'token', ARGV[1], 'fp', ARGV[2], 'created', t,
      'expires', t + lease + ttl, 'took', took, 'lease', t + lease, 'settle', kept)
    if attempts then redis.call('HSET', KEYS[1], 'attempts', attempts) end
    redis.call('PEXPIRE', KEYS[1], lease + 2 * ttl)
    return {took, settles}`,
    // ARGV: token, leaseMs, ttlMs, settleMs. A lease that ran out is not revived.
    idemExtend: `${PRELUDE}
    local t = now()
    local cur = redis.call('HMGET', KEYS[1], 'token', 'state', 'lease')
    if cur[1] ~= ARGV[1] or cur[2] ~= 'in_flight' or (tonumber(cur[3]) or 0) <= t then return 0 end
    local lease, ttl, settle = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
    redis.call('HSET', KEYS[1], 'lease', t + lease, 'expires', t + lease + ttl)
    redis.call('PEXPIRE', KEYS[1], lease + 2 * ttl)
    if settle > 0 then settleFor(t, lease + settle) end
    return 1`,
    // ARGV: token, channel, status, headers, body, ttlMs, reconciled.
    idemComplete: `${PRELUDE}
    local t = now()
    if not owned(t) then return 0 end
    local ttl = tonumber(ARGV[6])
    -- The lease ends and the settle time with it: the answer is stored.
    redis.call('HSET', KEYS[1], 'state', 'completed', 'status', ARGV[3], 'headers', ARGV[4], 'body', ARGV[5],
      'expires', t + ttl, 'recon', ARGV[7], 'lease', 0, 'settle', 0)
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('${publish}', ARGV[2], 'completed')
    return 1`,
    // ARGV: token, channel, ttlMs, settleMs (0: nothing was sent).
    idemUnknown: `${PRELUDE}
    local t = now()
    if not owned(t) then return 0 end
    local ttl = tonumber(ARGV[3])
    redis.call('HSET', KEYS[1], 'state', 'unknown', 'expires', t + ttl, 'lease', 0)
    redis.call('PEXPIRE', KEYS[1], 2 * ttl)
    -- Now it is known when the attempt stopped waiting: that, not the lease's end, starts the settle time.
    -- (A later mark always ends later than any earlier one, so this never shortens another's.)
    local settle = tonumber(ARGV[4])
    if settle > 0 then redis.call('HSET', KEYS[1], 'settle', t + settle) end
    redis.call('${publish}', ARGV[2], 'unknown')
    return 1`,
    // ARGV: token, channel, 'hold' | 'drop', status, headers, body, holdMs. Without an answer to hold,
    // nothing was sent: a key taken over from 'unknown' goes back to it (the earlier request's outcome
    // is as unknown as before, settle time and all); any other key is freed.
    idemRelease: `${PRELUDE}
    local t = now()
    if not owned(t) then return 0 end
    if ARGV[3] ~= 'hold' and redis.call('HGET', KEYS[1], 'took') == 'unknown' then
      redis.call('HSET', KEYS[1], 'state', 'unknown', 'token', '', 'lease', 0)
      redis.call('${publish}', ARGV[2], 'unknown')
      return 1
    end
    if ARGV[3] == 'hold' then
      local hold = tonumber(ARGV[7])
      redis.call('HSET', KEYS[1], 'state', 'released', 'status', ARGV[4], 'headers', ARGV[5], 'body', ARGV[6],
        'expires', t + hold, 'recon', '0', 'lease', 0, 'settle', 0)
      redis.call('PEXPIRE', KEYS[1], hold)
    else
      redis.call('DEL', KEYS[1])
    end
    redis.call('${publish}', ARGV[2], 'released')
    return 1`,
    // Operator resolution of an unknown key. ARGV: 'store' | 'release', channel, status, headers, body, ttlMs.
    idemResolve: `${PRELUDE}
    local t = now()
    if classify(t) ~= 'unknown' then return 0 end
    if ARGV[1] == 'store' then
      local ttl = tonumber(ARGV[6])
      redis.call('HSET', KEYS[1], 'state', 'completed', 'token', '', 'status', ARGV[3], 'headers', ARGV[4],
        'body', ARGV[5], 'expires', t + ttl, 'recon', '0', 'lease', 0, 'settle', 0)
      redis.call('PEXPIRE', KEYS[1], ttl)
    else
      redis.call('DEL', KEYS[1])
    end
    redis.call('${publish}', ARGV[2], 'resolved')
    return 1`,
    // The attempt log, one batch per call: KEYS[1] is the capped stream, KEYS[i + 1] the record of
    // entry i (or the stream again when the entry has no key). Counts land only on existing records.
    // On a cluster a batch names its stream alone, and counts go through idemCount, slot by slot.
    idemAttempts: `
    for i = 2, #ARGV do
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i])
      local rec = KEYS[i]
      if rec and rec ~= KEYS[1] and redis.call('EXISTS', rec) == 1 then redis.call('HINCRBY', rec, 'attempts', 1) end
    end
    return #ARGV - 1`,
    // One more attempt on an existing record (KEYS[1]).
    idemCount: `
    if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
    return 0`,
    // ARGV: channel.
    idemPurge: `
    local n = redis.call('DEL', KEYS[1])
    redis.call('${publish}', ARGV[1], 'purged')
    return n`,
  });
}

/**
 * Redis 7 script flags on the first line. A script that may write is refused whole when the server is
 * at maxmemory, before it runs: without flags the refusal would come at its first write that needs
 * memory, after a DEL that frees some had already run, and leave a half-made record.
 */
const FLAGS: Record<string, string> = {
  idemGet: " flags=no-writes",
  // An operator's purge frees memory: it must work on a full server.
  idemPurge: " flags=allow-oom",
};

function withFlags<T extends Record<string, string>>(scripts: T): T {
  const out: Record<string, string> = {};
  for (const [name, lua] of Object.entries(scripts)) {
    out[name] = `#!lua${FLAGS[name] ?? ""}\n${lua}`;
  }
  return out as T;
}
