#pragma once
/// @file redis_store.hpp
/// `store.type: redis`: one worker's rate store, deciding every bucket in
/// Redis so that many tollgate instances enforce one limit (DESIGN.md
/// section 9).
///
/// Per worker thread: one persistent connection (hiredis async, driven by
/// the worker's io_context through redis_asio_link), pipelined — every
/// decision is one `EVALSHA` of the algorithm's script (redis_scripts.hpp)
/// written without waiting for earlier answers. On connect the store sends
/// `AUTH` (user and password from the URL), `SELECT` (the URL's db) and
/// `SCRIPT LOAD` for the four scripts; a `NOSCRIPT` answer (Redis restarted
/// or flushed its scripts) loads the script again and retries once.
///
/// Order of a decision:
///  1. over-limit cache (redis_cache.hpp): a bucket Redis refused is refused
///     locally until its retry time, with no round trip. When that time
///     comes, one request asks Redis again and the requests for the same
///     bucket arriving meanwhile wait for its answer (a refusal is cached
///     again and answers them; otherwise each asks Redis), so a busy
///     refused key costs about one round trip per retry interval per worker;
///  2. Redis, when the connection is up and answering: the request waits for
///     the script's answer, at most `store.redis.timeout`;
///  3. otherwise, and when that wait times out or the connection fails:
///     `failure_mode: open` decides with the gateway's in-process limiter in a
///     separate scope, with `limit / instances` (fallback_policy);
///     `closed` answers `unavailable` (503, Retry-After: 1).
///
/// Failure handling: a decision that times out marks the connection as
/// suspect: later requests decide locally at once (no added latency) while a
/// single `PING` probes Redis; a probe answered within the timeout switches
/// back. A command unanswered for `dead_after` drops the connection.
/// Requests going to Redis again after a fallback (the PING answered, or a
/// new connection's AUTH/SELECT/SCRIPT LOAD done) are a trial: Redis is
/// reported back only when one of them is decided there, since a replica
/// (READONLY) or a full Redis (OOM) takes connections and PINGs and still
/// fails every decision. A flip, i.e. Redis failing the worker again after
/// a trial in which it decided or timed out, or soon after it was reported
/// back, makes the worker hold off longer (`flap_hold_min` doubling to
/// `flap_hold_max`): it stays in fallback that long before the next PING or
/// connection attempt, and reports Redis back only after deciding there that
/// long without a failure. So a Redis answering around the timeout costs a
/// few timed-out requests per worker and hold, not one per PING, and the
/// gauge stays at 1 instead of flapping.
/// A lost connection is re-opened on demand: at once after a connection that
/// worked (requests wait for it, up to the timeout, so a restarted Redis
/// costs no local decisions), then with capped exponential back-off
/// (`backoff_min` doubling to `backoff_max`) while attempts fail; during
/// those attempts requests decide locally. There are no timers while idle, so
/// recovery is noticed by the next request after at most `backoff_max`.
/// Each worker reports what it finds to redis_shared, where the latest
/// outcome of any worker sets `tollgate_store_fallback`: one worker finding
/// Redis back clears it, even while the others see no traffic.
///
/// Nothing here runs without a request or an outstanding reply: an idle
/// store holds no operation on the io_context, so a draining worker's
/// `run()` returns once its sessions are done.
///
/// Thread-safety: a store belongs to one worker; construct it anywhere, then
/// use it on that worker's io_context thread only.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tollgate/config/config.hpp"
#include "tollgate/config/values.hpp"
#include "tollgate/limit/rate_limiter.hpp"
#include "tollgate/net.hpp"
#include "tollgate/store/rate_store.hpp"
#include "tollgate/store/redis_shared.hpp"

namespace tollgate::store {

struct redis_settings {
    redis_endpoint endpoint{"127.0.0.1"};
    std::chrono::milliseconds timeout{20};
    failure_mode on_failure = failure_mode::open;
    std::uint32_t instances = 1;
    std::string key_prefix = "tollgate:";
    /// A command unanswered this long means Redis is gone: drop the connection.
    std::chrono::milliseconds dead_after{1000};
    std::chrono::milliseconds backoff_min{25};
    std::chrono::milliseconds backoff_max{1000};
    /// Hysteresis against a Redis flapping between usable and not (latency
    /// around `timeout`, a Cluster node that decides some keys): after a
    /// flip, a worker stays in fallback at least the hold before it tries
    /// Redis again, and reports Redis back only once it has decided there
    /// for the hold without a failure. The hold starts at `flap_hold_min`
    /// and doubles with each flip up to `flap_hold_max`; a failure more than
    /// `flap_hold_max` after Redis was reported back starts again at 0.
    std::chrono::milliseconds flap_hold_min{250};
    std::chrono::milliseconds flap_hold_max{4000};
    /// Entries of the over-limit cache (per worker).
    std::size_t cache_capacity = 65536;
    /// Addresses to connect to, in this order, instead of looking
    /// `endpoint.host` up on each attempt (tests: a name whose first
    /// address refuses). Empty in production.
    std::vector<std::string> addresses{};

    /// From `store.redis` (dead_after = max(1 s, 10 x timeout)). Throws
    /// std::runtime_error for a URL that does not parse.
    static redis_settings from(const redis_config& cfg);
};

class redis_store final : public rate_store {
public:
    /// Starts connecting at once (on `ioc`, when it runs). `local` decides
    /// while Redis is unreachable; `shared` must be attached or attachable to
    /// `registry` and outlive the store.
    redis_store(asio::io_context& ioc, redis_settings settings, limit::rate_limiter& local,
                redis_shared& shared, prometheus::Registry& registry);
    ~redis_store() override;
    /// Frees the connection and its timers without completing what is
    /// pending; later checks decide locally.
    void stop() override;
    redis_store(const redis_store&) = delete;
    redis_store& operator=(const redis_store&) = delete;

    std::optional<store_result> check(std::string_view scope, std::string_view key,
                                      const limit::bucket_policy& policy,
                                      const completion_source& done) override;

private:
    class impl;
    std::shared_ptr<impl> impl_;
};

}  // namespace tollgate::store
