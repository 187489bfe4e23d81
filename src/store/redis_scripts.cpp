#include "tollgate/store/redis_scripts.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <stdexcept>

namespace tollgate::store {
namespace {

// Shared by every script: exact integer helpers over Lua's doubles, the
// arguments, `now` and the state accessors. See redis_scripts.hpp for why
// microseconds and why every value stays below 2^53.
constexpr std::string_view prelude = R"lua(
if redis.replicate_commands then redis.replicate_commands() end
local floor = math.floor
-- Floor division with remainder, b > 0; exact for integers below 2^53.
local function divmod(a, b)
  local q = floor(a / b)
  local r = a - q * b
  if r < 0 then q = q - 1; r = r + b elseif r >= b then q = q + 1; r = r - b end
  return q, r
end
-- ceil(1000 * x / d) and floor(1000 * x / d): x microseconds scaled by d, in
-- whole nanoseconds, without forming 1000 * x (which may pass 2^53).
local function ceil_ns(x, d)
  if x <= 0 then return 0 end
  local q, r = divmod(x, d)
  local q2, r2 = divmod(1000 * r, d)
  if r2 > 0 then q2 = q2 + 1 end
  return 1000 * q + q2
end
local function floor_ns(x, d)
  local q, r = divmod(x, d)
  local q2 = divmod(1000 * r, d)
  return 1000 * q + q2
end
local function num(x) return string.format('%.0f', x) end
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local now, ttl_extra = tonumber(ARGV[4]), 0
if now then
  ttl_extra = 1000000000
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- The state lives until the bucket is fresh again: reset, rounded up to a ms.
local function save(state, reset_ns)
  local ms, rest = divmod(reset_ns, 1000000)
  if rest > 0 then ms = ms + 1 end
  if ms < 1 then ms = 1 end
  redis.call('SET', key, state, 'PX', num(ms + ttl_extra))
end
-- The state's numbers: n of them, or up to m where a field was added later.
local function load(n, m)
  local s = redis.call('GET', key)
  if not s then return nil end
  local out = {}
  for v in string.gmatch(s, '%-?%d+') do out[#out + 1] = tonumber(v) end
  if #out < n or #out > (m or n) then return nil end
  return out
end
)lua";

// GCRA: state "anchor backlog" = the theoretical arrival time as the time of
// the last allowed request plus the backlog (one request = `window` units,
// draining `limit` units per microsecond). Relative, so it stays small.
// TIME is the wall clock: when it steps back behind the anchor, time stands
// still at the anchor until the clock is there again, as in the token
// bucket. Counting the step as negative elapsed time would charge it as
// backlog (90 s back refused every busy key for about half a minute).
// `ahead` (ns) is how far the frozen time is in front of `now`: reset,
// retry_after and the key's TTL are real time from `now`, so they add it.
constexpr std::string_view gcra_body = R"lua(
local capacity = burst * window
local backlog, last = 0, now
local st = load(2)
if st then
  local elapsed = now - st[1]
  if elapsed < 0 then elapsed = 0; last = st[1] end
  backlog = st[2] - elapsed * limit
  if backlog < 0 then backlog = 0 end
end
local ahead = 1000 * (last - now)
if backlog + window <= capacity then
  local after = backlog + window
  local reset = ceil_ns(after, limit) + ahead
  save(num(last) .. ' ' .. num(after), reset)
  return {1, (divmod(capacity - after, window)), reset, 0}
end
local remaining = divmod(capacity - backlog, window)
if remaining < 0 then remaining = 0 end
return {0, remaining, ceil_ns(backlog, limit) + ahead,
        ceil_ns(backlog + window - capacity, limit) + ahead}
)lua";

// Token bucket: state "last_refill missing", the same units as GCRA. The
// refill point never moves back, so a clock stepping back refills nothing
// twice; until the clock is back there, time stands still (`ahead` as in GCRA).
constexpr std::string_view token_bucket_body = R"lua(
local capacity = burst * window
local backlog, last = 0, now
local st = load(2)
if st then
  local missing = st[2]
  if missing > capacity then missing = capacity end
  local elapsed = now - st[1]
  if elapsed < 0 then elapsed = 0 end
  backlog = missing - elapsed * limit
  if backlog < 0 then backlog = 0 end
  if st[1] > now then last = st[1] end
end
local ahead = 1000 * (last - now)
if backlog + window <= capacity then
  local after = backlog + window
  local reset = ceil_ns(after, limit) + ahead
  save(num(last) .. ' ' .. num(after), reset)
  return {1, (divmod(capacity - after, window)), reset, 0}
end
local remaining = divmod(capacity - backlog, window)
if remaining < 0 then remaining = 0 end
return {0, remaining, ceil_ns(backlog, limit) + ahead,
        ceil_ns(backlog + window - capacity, limit) + ahead}
)lua";

// Fixed window: state "start count"; a window opens at the first request
// after the previous one ended. A clock stepping back keeps the current
// window and count (now < start + window), so it charges nothing: the
// window just lasts until the clock reaches its end again.
constexpr std::string_view fixed_window_body = R"lua(
local start, count = now, 0
local st = load(2)
if st and st[2] > 0 and now < st[1] + window then
  start, count = st[1], st[2]
end
local reset = 1000 * (start + window - now)
if count < limit then
  count = count + 1
  save(num(start) .. ' ' .. num(count), reset)
  return {1, limit - count, reset, 0}
end
return {0, 0, reset, reset}
)lua";

// Sliding window: state "start previous current last", windows aligned to
// multiples of `window` since the epoch; the estimate is kept multiplied by
// `window`, so the comparison with `limit` is exact. `last` is the latest
// time a request was allowed at: with the wall clock stepped back behind it,
// the previous window's weight is taken at `last` (time stands still, as in
// the token bucket) instead of fading back in, which would charge requests
// the previous window already had. States written without `last` read fine.
constexpr std::string_view sliding_window_body = R"lua(
local lim = limit
if lim > 4294967295 then lim = 4294967295 end
local W = window
local _, into = divmod(now, W)
local aligned = now - into
local start, prev, curr, last = aligned, 0, 0, now
local st = load(3, 4)
if st and (st[2] > 0 or st[3] > 0) and aligned < st[1] + 2 * W then
  if aligned >= st[1] + W then
    start, prev, curr = aligned, st[3], 0
  else
    start, prev, curr = st[1], st[2], st[3]
  end
  if st[4] and st[4] > now then last = st[4] end
end
local function reset_ns()
  if curr > 0 then return 1000 * (start + 2 * W - now) end
  if prev > 0 then return 1000 * (start + W - now) end
  return 0
end
local elapsed = last - start
if elapsed < 0 then elapsed = 0 elseif elapsed > W - 1 then elapsed = W - 1 end
local weighted = prev * (W - elapsed) + curr * W
if weighted + W <= lim * W then
  curr = curr + 1
  local reset = reset_ns()
  save(num(start) .. ' ' .. num(prev) .. ' ' .. num(curr) .. ' ' .. num(last), reset)
  return {1, (divmod(lim * W - weighted - W, W)), reset, 0}
end
local remaining = divmod(lim * W - weighted, W)
if remaining < 0 then remaining = 0 end
-- Earliest time (ns after now) at which the previous window's weight has
-- faded enough, as limit::check computes it in nanoseconds.
local budget = (lim - curr - 1) * W
local fade_now = 0
if budget >= 0 and prev > 0 then fade_now = floor_ns(budget, prev) end
local at
if fade_now > 0 then
  at = 1000 * (start + W - now) - fade_now
else
  local fade = 1000 * W
  if curr > 0 then
    fade = floor_ns((lim - 1) * W, curr)
    if fade > 1000 * W then fade = 1000 * W end
  end
  at = 1000 * (start + W - now) + (1000 * W - fade)
end
if at < 1 then at = 1 end
return {0, remaining, reset_ns(), at}
)lua";

std::string sha1_hex(std::string_view text) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int size = 0;
    if (EVP_Digest(text.data(), text.size(), digest.data(), &size, EVP_sha1(), nullptr) != 1) {
        throw std::runtime_error("SHA-1 of a Redis script failed");
    }
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < size; ++i) {
        out += hex[digest[i] >> 4];
        out += hex[digest[i] & 0xf];
    }
    return out;
}

redis_script make_script(std::string_view name, std::string_view body) {
    redis_script s;
    s.name = name;
    s.source = "-- tollgate " + std::string(name) + "\n" + std::string(prelude) + std::string(body);
    s.sha1 = sha1_hex(s.source);
    return s;
}

std::string_view algorithm_name(algorithm_kind a) {
    switch (a) {
        case algorithm_kind::gcra:
            return "gcra";
        case algorithm_kind::token_bucket:
            return "token_bucket";
        case algorithm_kind::fixed_window:
            return "fixed_window";
        case algorithm_kind::sliding_window:
            return "sliding_window";
    }
    return "gcra";
}

/// "60s", "1500ms" or "1234567ns": exact, and readable in `redis-cli --scan`.
std::string window_text(std::chrono::nanoseconds w) {
    const auto n = w.count();
    if (n > 0 && n % 1'000'000'000 == 0) {
        return std::to_string(n / 1'000'000'000) + "s";
    }
    if (n > 0 && n % 1'000'000 == 0) {
        return std::to_string(n / 1'000'000) + "ms";
    }
    return std::to_string(n) + "ns";
}

std::uint64_t non_negative(long long v) {
    return v > 0 ? static_cast<std::uint64_t>(v) : 0;
}

}  // namespace

const redis_script& script_for(algorithm_kind algorithm) {
    static const std::array<redis_script, 4> scripts{
        make_script("gcra", gcra_body), make_script("token_bucket", token_bucket_body),
        make_script("fixed_window", fixed_window_body),
        make_script("sliding_window", sliding_window_body)};
    switch (algorithm) {
        case algorithm_kind::gcra:
            return scripts[0];
        case algorithm_kind::token_bucket:
            return scripts[1];
        case algorithm_kind::fixed_window:
            return scripts[2];
        case algorithm_kind::sliding_window:
            return scripts[3];
    }
    return scripts[0];
}

std::string redis_bucket_key(std::string_view prefix, std::string_view scope, std::string_view key,
                             const limit::bucket_policy& policy) {
    std::string out;
    out.reserve(prefix.size() + scope.size() + key.size() + 48);
    out.append(prefix);
    out.append(algorithm_name(policy.algorithm));
    out += ':';
    out += std::to_string(policy.limit);
    out += ':';
    out += window_text(policy.window);
    out += ':';
    // The burst with its default applied, as the memory limiter's hash
    // takes it: instances configured with `burst: 10` and with no burst at
    // `limit: 10` share one bucket.
    out += std::to_string(limit::effective_burst(policy));
    out += ':';
    out += std::to_string(scope.size());
    out += ':';
    out.append(scope);
    out += ':';
    out.append(key);
    return out;
}

redis_script_args script_args(const limit::bucket_policy& policy) {
    const std::int64_t window_us = std::max<std::int64_t>(policy.window.count() / 1000, 1);
    return {std::to_string(policy.limit), std::to_string(window_us),
            std::to_string(limit::effective_burst(policy))};
}

limit::decision decision_from_reply(long long allowed, long long remaining, long long reset_ns,
                                    long long retry_after_ns, const limit::bucket_policy& policy) {
    limit::decision d;
    d.allowed = allowed != 0;
    d.limit = policy.limit;
    d.remaining = non_negative(remaining);
    d.reset = std::chrono::nanoseconds{static_cast<std::int64_t>(non_negative(reset_ns))};
    d.retry_after =
        d.allowed
            ? std::chrono::nanoseconds{0}
            : std::chrono::nanoseconds{static_cast<std::int64_t>(non_negative(retry_after_ns))};
    d.window = std::max(policy.window, std::chrono::nanoseconds{1});
    return d;
}

bool redis_error_is_node_wide(std::string_view error) {
    for (std::string_view prefix : {"READONLY", "LOADING", "MASTERDOWN", "MISCONF", "OOM", "NOAUTH",
                                    "NOPERM", "BUSY", "MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN"}) {
        if (error.starts_with(prefix) &&
            (error.size() == prefix.size() || error[prefix.size()] == ' ')) {
            return true;
        }
    }
    return false;
}

limit::bucket_policy fallback_policy(const limit::bucket_policy& policy, std::uint32_t instances) {
    limit::bucket_policy p = policy;
    const std::uint64_t n = std::max<std::uint32_t>(instances, 1);
    if (p.limit != 0) {
        p.limit = std::max<std::uint64_t>(p.limit / n, 1);
    }
    if (p.burst != 0) {
        p.burst = std::max<std::uint64_t>(p.burst / n, 1);
    }
    return p;
}

}  // namespace tollgate::store
