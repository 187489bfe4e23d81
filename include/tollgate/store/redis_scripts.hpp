#pragma once
/// @file redis_scripts.hpp
/// The Redis side of distributed rate buckets: one Lua script per algorithm,
/// the key a bucket lives under and the arguments a decision sends. Pure
/// functions, no I/O (redis_store.hpp does the talking).
///
/// Each script makes one whole decision atomically (`EVALSHA sha 1 key
/// limit window_us burst`) and answers `{allowed, remaining, reset_ns,
/// retry_after_ns}` — the fields of limit::decision — computed with exactly
/// the arithmetic of limit::check (algorithms.hpp) at Redis' own time:
///
///  * `now` is `redis.call('TIME')`, in microseconds, so the clocks of the
///    gateways never matter. Redis time has microsecond resolution, so the
///    scripts count in microseconds and convert to nanoseconds exactly where
///    limit::check rounds (`ceil(1000 x / limit)`): for any sequence of
///    requests at whole, non-decreasing microseconds a script returns the
///    very decision limit::check returns for the same policy and times
///    (tests/integration/test_redis_scripts.cpp checks that for every
///    algorithm). Windows are taken in whole microseconds (config windows
///    are whole milliseconds).
///  * TIME is Redis' wall clock, which can step back (NTP, a VM resumed).
///    No script charges such a step: for a bucket whose state is later than
///    `now`, time stands still at the state's time until the clock is there
///    again (no refill, no charge), and `reset`, `retry_after` and the key's
///    TTL count the real time to that point. (limit::check is fed a steady
///    clock and only ever sees microseconds out of order.)
///  * Lua numbers are doubles, so every intermediate is kept below 2^53:
///    absolute times are microseconds (~2^51 today), and GCRA/token-bucket
///    state is stored relative to the time of the last allowed request.
///    Exact while `burst * window_us < 2^53` (e.g. a 1 h window with a burst
///    of 2.5 million); beyond that decisions are rounded, never undefined.
///  * A refused request writes nothing. An allowed one stores the state with
///    `SET key state PX ttl`, where ttl is `reset` rounded up to a millisecond:
///    the key expires when the bucket is back to its fresh state, and a state
///    read in the last millisecond before expiry decides as a fresh one would.
///
/// Test hook: an optional 4th argument replaces `TIME` with a given time in
/// microseconds (and adds 10^9 ms to the TTL, as Redis expires keys by its
/// real clock, which a replaced `now` cannot move). The store never sends it.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "tollgate/config/config.hpp"
#include "tollgate/limit/algorithms.hpp"

namespace tollgate::store {

/// One algorithm's script.
struct redis_script {
    std::string_view name;  ///< "gcra", "token_bucket", ...
    std::string source;     ///< Lua, complete
    std::string sha1;       ///< lowercase hex, what EVALSHA takes
};

/// The script for `algorithm` (built once; thread-safe).
const redis_script& script_for(algorithm_kind algorithm);

/// `tollgate:` + policy identity + scope + key. The policy (algorithm,
/// limit, window, burst with its default applied: limit::effective_burst) is
/// part of the name, as it is part of the memory limiter's bucket hash, so a
/// changed limit starts a fresh bucket instead of misreading old state, and
/// equivalent policies (no burst, or `burst` = `limit`) share one. The
/// scope is length-prefixed, so no (scope, key) pair can spell another's
/// name.
std::string redis_bucket_key(std::string_view prefix, std::string_view scope, std::string_view key,
                             const limit::bucket_policy& policy);

/// ARGV[1..3] of a decision: limit, window in microseconds (at least 1),
/// burst with the default applied (0 = limit).
struct redis_script_args {
    std::string limit;
    std::string window_us;
    std::string burst;
};
redis_script_args script_args(const limit::bucket_policy& policy);

/// The decision a script answered, with the policy's `limit` and `window`
/// filled in as limit::check does. Negative values (never sent) read as 0.
limit::decision decision_from_reply(long long allowed, long long remaining, long long reset_ns,
                                    long long retry_after_ns, const limit::bucket_policy& policy);

/// True for an error reply that says the node cannot decide for any key, or
/// not for all of them, as opposed to one key's trouble (WRONGTYPE): the
/// store then leaves the node and decides locally (fallback) instead of
/// deciding that one request locally and the next in Redis.
///  * READONLY (a replica: failover), LOADING, MASTERDOWN, MISCONF, OOM,
///    NOAUTH, NOPERM, BUSY (a long-running script blocks every command);
///  * MOVED, ASK, CLUSTERDOWN, TRYAGAIN: a Redis Cluster node. Cluster is not
///    supported (one script per decision names one key, and the store talks
///    to one node): answering MOVED keys locally would quietly split every
///    limit by the number of instances for the keys of the other shards.
/// Matched on the whole first word (BUSYKEY is not BUSY).
bool redis_error_is_node_wide(std::string_view error);

/// The policy of the local bucket that decides while Redis is unreachable
/// (failure_mode open): `limit` and `burst` divided by `instances`, at least 1.
limit::bucket_policy fallback_policy(const limit::bucket_policy& policy, std::uint32_t instances);

}  // namespace tollgate::store
