"""The Lua scripts of the Redis store: every step that must be atomic across replicas is one script.

Each script encodes rules of store/rules.py (named where they are applied), the rules memory and SQLite
call; numbers both sides use are interpolated from rules.py's constants, and the differential test
(tests/test_store_differential.py) pins the two encodings to each other.

Times are Unix seconds, passed in as strings (Python's repr of a float, which Redis and Lua read back
exactly) and compared as numbers. Scripts never format a time themselves: Lua's tostring() keeps 14
digits only. ARGV[1] of the page scripts is the prefix of page keys ("a2v:page:"), from which a script
builds the key of a page it finds in an index; this store runs on one Redis (or a Sentinel-managed
primary), not on Redis Cluster.
"""

from __future__ import annotations

from string import Template

from . import rules

# Helpers, prepended to the scripts that use them (Redis keeps nothing between two scripts).
_EXTEND = r"""
local function extend(key, ms)  -- a TTL at least `ms` from now (a key without one gets one)
  if redis.call('PTTL', key) < tonumber(ms) then redis.call('PEXPIRE', key, ms) end
end
"""

_MEMBER = r"""
local function member(list, item)  -- `item` in a newline-separated list
  return string.find('\n' .. list .. '\n', '\n' .. item .. '\n', 1, true) ~= nil
end
"""

_SAVE = r"""
local function settle_group(group, ms)
  -- A group index lives for ever while one of its pages is live, else as long as its finished pages.
  for _, key in ipairs(redis.call('ZRANGE', group, 0, -1)) do
    local live = redis.call('HGET', ARGV[1] .. key, 'live')
    if live == '1' then redis.call('PERSIST', group) return end
    if not live then redis.call('ZREM', group, key) end
  end
  redis.call('PEXPIRE', group, ms)
end

local function current_epoch(key, candidate)
  -- The store's epoch: a random id, made anew (from the caller's fresh `candidate`) whenever Redis lost it.
  local epoch = redis.call('GET', key)
  if not epoch then
    redis.call('SET', key, candidate)
    epoch = candidate
  end
  return epoch
end

-- Write the page at `version` under `epoch`. KEYS: page, due, recent, done, group, seq, then (from
-- `first_call`) the keys of its call ids. ARGV: prefix, key, data, state, live, due, updated, resolved,
-- identities, call ids, retention ms, recent kept, lease until and owner ('' for none), wake channel,
-- instance. Due work tells the other replicas when it can be taken: when it is due, or when its writer's lease
-- ends if that is later (so that a replica takes it over then if its holder died).
local function save(version, first_call, epoch)
  local page, key, live, ms = KEYS[1], ARGV[2], ARGV[5] == '1', ARGV[11]
  redis.call('HSET', page, 'd', ARGV[3], 'v', version, 'e', epoch, 'st', ARGV[4], 'live', ARGV[5],
             'upd', ARGV[7], 'ids', ARGV[9], 'calls', ARGV[10], 'grp', KEYS[5])
  if ARGV[13] == '' then
    redis.call('HDEL', page, 'lu', 'lo')  -- a write releases the lease
  else
    redis.call('HSET', page, 'lu', ARGV[13], 'lo', ARGV[14])  -- or keeps it for its writer
  end
  if ARGV[6] == '' then redis.call('ZREM', KEYS[2], key) else redis.call('ZADD', KEYS[2], ARGV[6], key) end
  local seq = redis.call('HGET', page, 'seq')  -- first-seen order, kept by later incarnations
  if not seq then
    seq = redis.call('INCR', KEYS[6])
    redis.call('HSET', page, 'seq', seq)
  end
  local moved  -- the page joined or left its group's unresolved pages: what replicas remember of it is stale
  if ARGV[8] == '1' then moved = redis.call('ZREM', KEYS[5], key) else moved = redis.call('ZADD', KEYS[5], seq, key) end
  if moved > 0 then redis.call('PUBLISH', ARGV[15], 'look|' .. KEYS[5]) end
  redis.call('ZADD', KEYS[3], ARGV[7], key)
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[12]) + 1))
  for i = first_call, #KEYS do
    if live then redis.call('SET', KEYS[i], key) else redis.call('SET', KEYS[i], key, 'PX', ms) end
  end
  if live then
    redis.call('PERSIST', page)
    redis.call('ZREM', KEYS[4], key)
  else  -- finished: kept `retention` (or until purged), with its call ids
    redis.call('PEXPIRE', page, ms)
    redis.call('ZADD', KEYS[4], ARGV[7], key)
    -- Entries older than that point at pages expired by now: dropped even if purge() never runs.
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', string.format('(%.17g', tonumber(ARGV[7]) - tonumber(ms) / 1000))
  end
  if live and ARGV[8] ~= '1' then redis.call('PERSIST', KEYS[5]) else settle_group(KEYS[5], ms) end
  if ARGV[6] ~= '' then  -- due work: the others look when it is due, or when its writer's lease ends if later
    local at = ARGV[6]   -- (if its writer died by then); a replica that would look by then anyway does nothing
    if ARGV[13] ~= '' and tonumber(ARGV[13]) > tonumber(at) then at = ARGV[13] end
    redis.call('PUBLISH', ARGV[15], 'due|' .. at .. '|' .. ARGV[16])
  end
end
"""

# rules.tier_fit and rules.retained. `number`, `all`: the number's placements and everyone's; the tiers are
# ARGV[first..] (scope, calls, the start of its window, per tier). Counts the call (member `member` at `now`) and
# returns {} when every tier has room; else, for each full tier, its index and the placement time that must
# leave the window first (the caller adds the tier's span).
_RESERVE = r"""
local function reserve(number, all, now, member, cutoff, ms, first)
  local blocked = {}
  for i = first, #ARGV, 3 do
    local key = ARGV[i] == 'all' and all or number
    local calls, lower = tonumber(ARGV[i + 1]), '(' .. ARGV[i + 2]
    if redis.call('ZCOUNT', key, lower, '+inf') >= calls then
      local nth = redis.call('ZREVRANGEBYSCORE', key, '+inf', lower, 'WITHSCORES', 'LIMIT', calls - 1, 1)
      blocked[#blocked + 1] = tostring((i - first) / 3)
      blocked[#blocked + 1] = nth[2]
    end
  end
  if #blocked > 0 then return blocked end
  for _, key in ipairs({number, all}) do
    redis.call('ZADD', key, now, member)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', cutoff)
    redis.call('PEXPIRE', key, ms)
  end
  return blocked
end
"""

# rules.take_token, step for step in the same float operations; its constants interpolated below. Returns the
# seconds to wait (0: a token was taken) as a string (exact).
_TOKEN = Template(r"""
local function take_token(bucket, now_, rate_, burst_, ms)
  local now, rate, burst = tonumber(now_), tonumber(rate_), tonumber(burst_)
  local row = redis.call('HMGET', bucket, 'tokens', 't')
  local tokens, t = tonumber(row[1]), tonumber(row[2])
  if not tokens then
    tokens, t = burst, now
  else
    tokens, t = math.min(burst, tokens + math.max(0, now - t) * rate), math.max(t, now)
  end
  local wait = 0
  if tokens >= 1 - rate * $TOKEN_EARLY then
    tokens = math.max(0, tokens - 1)
  else
    wait = (t - now) + (1 - tokens) / rate
  end
  redis.call('HSET', bucket, 'tokens', string.format('%.17g', tokens), 't', string.format('%.17g', t))
  redis.call('PEXPIRE', bucket, ms)
  return string.format('%.17g', wait)
end
""").substitute(TOKEN_EARLY=repr(rules.TOKEN_EARLY))

# KEYS: page, due, recent, done, group, seq, claims, the first call's number's placements, everyone's, the
# token bucket, the claim keys (ARGV[20] of them), the call keys. ARGV: save's sixteen, now, until, window ms,
# claim count, the epoch's key, a fresh epoch candidate, the call-key prefix (an earlier incarnation's call ids
# are dropped); then, to clear the first call ('' in ARGV[24]: not asked), '1', the placement's member, cutoff
# and retain ms, the bucket's rate, burst and ttl ms, and the tiers (RESERVE_CALL's and RATE_LIMIT's steps).
# Returns the version, the epoch and, when asked, reserve()'s answer and take_token()'s ('' when it did not
# fit); 0 when refused.
ADMIT = _EXTEND + _SAVE + _RESERVE + _TOKEN + r"""
if redis.call('HGET', KEYS[1], 'st') == 'active' then return 0 end
local now, last = tonumber(ARGV[17]), 10 + tonumber(ARGV[20])
local free = false
for i = 11, last do
  local until_ = redis.call('GET', KEYS[i])
  if not until_ or tonumber(until_) <= now then free = true break end
end
if not free then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', ARGV[17])  -- expired claims (their keys go by their PX)
for i = 11, last do
  redis.call('SET', KEYS[i], ARGV[18], 'PX', ARGV[19])
  redis.call('ZADD', KEYS[7], ARGV[18], KEYS[i])
end
extend(KEYS[7], ARGV[19])
local version = tonumber(redis.call('HGET', KEYS[1], 'v') or '0') + 1  -- a finished incarnation's, continued
-- That incarnation's call ids go with it (it may still have had a call due, a "resolved" one: its keys had
-- no TTL then), so that no key outlives what it points at.
local earlier = redis.call('HGET', KEYS[1], 'calls')
if earlier then
  for _, id in ipairs(cjson.decode(earlier)) do redis.call('DEL', ARGV[23] .. id) end
end
local epoch = current_epoch(ARGV[21], ARGV[22])
save(version, last + 1, epoch)
if ARGV[24] == '' then return {version, epoch} end
local blocked = reserve(KEYS[8], KEYS[9], ARGV[17], ARGV[25], ARGV[26], ARGV[27], 31)
if #blocked > 0 then return {version, epoch, blocked, ''} end
return {version, epoch, blocked, take_token(KEYS[10], ARGV[17], ARGV[28], ARGV[29], ARGV[30])}
"""

_HELD = r"""
local function claims_until(first_claim, now)  -- the earliest expiry of the claims if every one is held, else nil
  local earliest = nil
  for i = first_claim, #KEYS do
    local until_ = redis.call('GET', KEYS[i])
    if not until_ or tonumber(until_) <= tonumber(now) then return nil end
    if not earliest or tonumber(until_) < tonumber(earliest) then earliest = until_ end
  end
  return earliest
end

local function held(page, first_claim, now)  -- rules.would_refuse: the page active, or every claim held
  if redis.call('HGET', KEYS[page], 'st') == 'active' then return 1 end
  if first_claim > #KEYS or claims_until(first_claim, now) then return 1 end  -- no claims: nothing to hold
  return 0
end
"""

_OPEN = r"""
local function open_pages(group, prefix)  -- key, identities pairs of the group's unresolved pages, first seen first
  local out = {}
  for _, key in ipairs(redis.call('ZRANGE', group, 0, -1)) do
    local ids = redis.call('HGET', prefix .. key, 'ids')
    if ids then
      out[#out + 1] = key
      out[#out + 1] = ids
    else
      redis.call('ZREM', group, key)  -- expired
    end
  end
  return out
end
"""

# KEYS: page, claim keys. ARGV: now. 1 when admit() would refuse.
SEEN = _HELD + "return held(1, 2, ARGV[1])"

# KEYS: claims, claim keys. ARGV: the wake-up channel (every replica forgets its remembered duplicates).
RELEASE = r"""
for i = 2, #KEYS do
  redis.call('DEL', KEYS[i])
  redis.call('ZREM', KEYS[1], KEYS[i])
end
redis.call('PUBLISH', ARGV[1], 'look|*')
return 0
"""

# KEYS and ARGV: save's, then the version and the epoch read, the epoch's key, a fresh epoch candidate.
# Returns the new version and the epoch, -1 on a conflict: another write came first, or the page was read
# before Redis lost its data (its versions started over, under another epoch).
PUT = _SAVE + r"""
local row = redis.call('HMGET', KEYS[1], 'v', 'e')
local stored = tonumber(row[1] or '0')
if stored ~= tonumber(ARGV[17]) then return -1 end
if stored > 0 and (row[2] or '') ~= ARGV[18] then return -1 end  -- '': written before epochs
local epoch = current_epoch(ARGV[19], ARGV[20])
save(stored + 1, 7, epoch)
return {stored + 1, epoch}
"""

# KEYS: due. ARGV: prefix, now, limit, lease until, owner, keys to skip... Returns data, version, epoch triples.
TAKE_DUE = r"""
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local skip = {}
for i = 6, #ARGV do skip[ARGV[i]] = true end
local out, offset = {}, 0
while #out < 3 * limit do
  local batch = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', offset, 100)
  if #batch == 0 then break end
  offset = offset + #batch
  for _, key in ipairs(batch) do
    local page = ARGV[1] .. key
    local row = redis.call('HMGET', page, 'd', 'lu', 'lo', 'e')
    if not row[1] then  -- a page deleted behind our back: drop its entry
      redis.call('ZREM', KEYS[1], key)
      offset = offset - 1
    elseif not skip[key] and (not row[2] or tonumber(row[2]) <= now or row[3] == ARGV[5]) then  -- rules.lease_free
      local version = redis.call('HINCRBY', page, 'v', 1)  -- the lease's fencing token
      redis.call('HSET', page, 'lu', ARGV[4], 'lo', ARGV[5])
      out[#out + 1] = row[1]
      out[#out + 1] = version
      out[#out + 1] = row[4] or ''
      if #out >= 3 * limit then break end
    end
  end
end
return out
"""

# KEYS: page. ARGV: owner, lease until, the epoch its holder read ('' checks none). 1 when the owner held
# the lease (now extended), else 0.
RENEW = r"""
local row = redis.call('HMGET', KEYS[1], 'lo', 'e')
if row[1] ~= ARGV[1] then return 0 end  -- rules.renewable
if ARGV[3] ~= '' and (row[2] or '') ~= ARGV[3] then return 0 end  -- held under another epoch
redis.call('HSET', KEYS[1], 'lu', ARGV[2])
return 1
"""

# KEYS: group. ARGV: prefix. Returns key, identities pairs in first-seen order.
BY_GROUP = _OPEN + "return open_pages(KEYS[1], ARGV[1])"

# What a resend asks, in one round trip. KEYS: group, page, claim keys. ARGV: prefix, now. Returns
# held (as SEEN) and then BY_GROUP's pairs.
LOOK = _HELD + _OPEN + r"""
local out = open_pages(KEYS[1], ARGV[1])
table.insert(out, 1, claims_until(3, ARGV[2]) or '')  -- how long a replica may reuse a "duplicate" (redis_cache)
table.insert(out, 1, held(2, 3, ARGV[2]))
return out
"""

# KEYS: recent. ARGV: prefix, limit. Returns data, version, epoch triples, newest first.
RECENT = r"""
local limit, start, out, gone = tonumber(ARGV[2]), 0, {}, {}
while #out < 3 * limit do
  local batch = redis.call('ZREVRANGE', KEYS[1], start, start + limit - 1)
  if #batch == 0 then break end
  start = start + #batch
  for _, key in ipairs(batch) do
    local row = redis.call('HMGET', ARGV[1] .. key, 'd', 'v', 'e')
    if not row[1] then
      gone[#gone + 1] = key
    elseif #out < 3 * limit then
      out[#out + 1] = row[1]
      out[#out + 1] = row[2]
      out[#out + 1] = row[3] or ''
    end
  end
end
for _, key in ipairs(gone) do redis.call('ZREM', KEYS[1], key) end
return out
"""

# KEYS: done, claims, recent. ARGV: prefix, before, chunk, call-key prefix, wake-up channel. Returns pages
# removed, done entries and claims looked at.
PURGE = r"""
local before = tonumber(ARGV[2])
local done = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[3])
local removed = 0
for _, key in ipairs(done) do
  local page = ARGV[1] .. key
  local row = redis.call('HMGET', page, 'live', 'calls', 'grp')
  if row[1] ~= '1' then  -- rules.purgeable (done holds finished pages by update time), or expired already
    if row[1] then
      for _, id in ipairs(cjson.decode(row[2])) do
        if redis.call('GET', ARGV[4] .. id) == key then redis.call('DEL', ARGV[4] .. id) end
      end
      redis.call('ZREM', row[3], key)
      redis.call('DEL', page)
      removed = removed + 1
    end
    redis.call('ZREM', KEYS[3], key)
  end
  redis.call('ZREM', KEYS[1], key)
end
local claims = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
for _, claim in ipairs(claims) do
  local until_ = redis.call('GET', claim)
  if until_ and tonumber(until_) <= before then redis.call('DEL', claim) end
  redis.call('ZREM', KEYS[2], claim)
end
if removed > 0 or #claims > 0 then redis.call('PUBLISH', ARGV[5], 'look|*') end
return {removed, #done, #claims}
"""

# KEYS: the number's placements, everyone's. ARGV: now, member, cutoff, retain ms, then the tiers.
RESERVE_CALL = _RESERVE + "return reserve(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 5)"

# KEYS: the number's placements, everyone's. ARGV: the placement time to give back.
UNRESERVE_CALL = r"""
local found = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1], 'LIMIT', 0, 1)
if found[1] then
  redis.call('ZREM', KEYS[1], found[1])
  redis.call('ZREM', KEYS[2], found[1])
end
return 0
"""

# KEYS: the number's storm batch. ARGV: page key, release time (ISO 8601), ttl ms. Returns release, keys.
# rules.storm_join; STORM_LEAD is rules.storm_lead, STORM_END rules.storm_ends.
STORM_JOIN = _MEMBER + r"""
local row = redis.call('HMGET', KEYS[1], 'release', 'keys', 'leader')
if not row[1] or row[3] then  -- none, or led already (its summary is going out): open a new one
  redis.call('DEL', KEYS[1])
  row = {ARGV[2], ''}
  redis.call('HSET', KEYS[1], 'release', ARGV[2], 'keys', '')
end
if not member(row[2], ARGV[1]) then
  row[2] = row[2] == '' and ARGV[1] or row[2] .. '\n' .. ARGV[1]
  redis.call('HSET', KEYS[1], 'keys', row[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {row[1], row[2]}
"""

# KEYS: the number's storm batch. ARGV: page key, ttl ms. 1 when the page now leads it.
STORM_LEAD = _MEMBER + r"""
local row = redis.call('HMGET', KEYS[1], 'keys', 'leader')
if not row[1] or row[2] or not member(row[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'leader', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: the number's storm batch. ARGV: page key.
STORM_END = r"""
if redis.call('HGET', KEYS[1], 'leader') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: the bucket. ARGV: now, rate, burst, ttl ms.
RATE_LIMIT = _TOKEN + "return take_token(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])"

# KEYS: the heartbeats hash. ARGV: name, seen at. Keeps the later of the stored last-seen time and ARGV[2].
BEAT = r"""
local stored = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
if not stored or stored < tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 0
"""
