// The pure parts of the Redis store: bucket key names, script arguments,
// replies to decisions, the fallback policy, the over-limit cache and the
// shared fallback state's log lines.

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <set>

#include "../captured_stderr.hpp"
#include "heap.hpp"
#include "tollgate/store/redis_cache.hpp"
#include "tollgate/store/redis_scripts.hpp"
#include "tollgate/store/redis_shared.hpp"

using namespace tollgate;
using namespace std::chrono_literals;
using std::chrono::nanoseconds;
using tollgate::test::captured_stderr;
using tollgate::test::heap_in_use;

namespace {

/// A refusal whose retry time and reset are both `after` away.
limit::decision refusal(nanoseconds after) {
    limit::decision d;
    d.retry_after = after;
    d.reset = after;
    return d;
}

}  // namespace

TEST_CASE("bucket keys carry the prefix, the policy, the scope and the key", "[redis][keys]") {
    const limit::bucket_policy p{algorithm_kind::gcra, 600, 60s, 0};
    CHECK(store::redis_bucket_key("tollgate:", "", "ip:127.0.0.1", p) ==
          "tollgate:gcra:600:60s:600:0::ip:127.0.0.1");
    CHECK(store::redis_bucket_key("t:", "api", "org:acme",
                                  {algorithm_kind::sliding_window, 5, 1500ms, 0}) ==
          "t:sliding_window:5:1500ms:5:3:api:org:acme");

    // A changed limit, window, burst or algorithm is a different bucket.
    std::set<std::string> names;
    names.insert(store::redis_bucket_key("p:", "", "k", p));
    names.insert(store::redis_bucket_key("p:", "", "k", {algorithm_kind::gcra, 601, 60s, 0}));
    names.insert(store::redis_bucket_key("p:", "", "k", {algorithm_kind::gcra, 600, 61s, 0}));
    names.insert(store::redis_bucket_key("p:", "", "k", {algorithm_kind::gcra, 600, 60s, 10}));
    names.insert(
        store::redis_bucket_key("p:", "", "k", {algorithm_kind::token_bucket, 600, 60s, 0}));
    CHECK(names.size() == 5);

    // An unset burst is the limit: one bucket for equivalent policies, so
    // instances configured either way share it.
    CHECK(store::redis_bucket_key("p:", "", "k", p) ==
          store::redis_bucket_key("p:", "", "k", {algorithm_kind::gcra, 600, 60s, 600}));
    CHECK(store::redis_bucket_key("p:", "", "k", {algorithm_kind::token_bucket, 10, 60s, 0}) ==
          store::redis_bucket_key("p:", "", "k", {algorithm_kind::token_bucket, 10, 60s, 10}));

    // Scope and key cannot be confused, whatever they contain.
    CHECK(store::redis_bucket_key("p:", "a:org", "ip:1", p) !=
          store::redis_bucket_key("p:", "a", "org:ip:1", p));
    CHECK(store::redis_bucket_key("p:", "", "x", p) != store::redis_bucket_key("p:", "x", "", p));
}

TEST_CASE("script arguments: window in microseconds, burst defaulted", "[redis][keys]") {
    auto a = store::script_args({algorithm_kind::gcra, 600, 60s, 0});
    CHECK(a.limit == "600");
    CHECK(a.window_us == "60000000");
    CHECK(a.burst == "600");
    auto b = store::script_args({algorithm_kind::token_bucket, 10, 500ns, 40});
    CHECK(b.window_us == "1");  // below Redis' resolution: one microsecond
    CHECK(b.burst == "40");
}

TEST_CASE("a reply becomes the decision limit::check would return", "[redis][keys]") {
    const limit::bucket_policy p{algorithm_kind::fixed_window, 100, 60s, 0};
    auto allowed = store::decision_from_reply(1, 99, 60'000'000'000, 0, p);
    CHECK(allowed.allowed);
    CHECK(allowed.limit == 100);
    CHECK(allowed.remaining == 99);
    CHECK(allowed.reset == 60s);
    CHECK(allowed.retry_after == 0ns);
    CHECK(allowed.window == 60s);
    auto refused = store::decision_from_reply(0, -3, 5'000, 1'234, p);
    CHECK_FALSE(refused.allowed);
    CHECK(refused.remaining == 0);
    CHECK(refused.reset == 5us);
    CHECK(refused.retry_after == 1234ns);
    // An allowed decision never carries a retry time.
    CHECK(store::decision_from_reply(1, 0, 10, 99, p).retry_after == 0ns);
}

TEST_CASE("error replies that say the node cannot decide are told from one key's error",
          "[redis][keys]") {
    for (const char* node_wide :
         {"READONLY You can't write against a read only replica.",
          "LOADING Redis is loading the dataset in memory",
          "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
          "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist",
          "OOM command not allowed when used memory > 'maxmemory'.",
          "NOAUTH Authentication required.",
          "NOPERM this user has no permissions to run the 'evalsha' command",
          "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
          "MOVED 3999 127.0.0.1:6381", "ASK 3999 127.0.0.1:6381", "CLUSTERDOWN The cluster is down",
          "CLUSTERDOWN Hash slot not served",
          "TRYAGAIN Multiple keys request during rehashing of slot", "MOVED"}) {
        INFO(node_wide);
        CHECK(store::redis_error_is_node_wide(node_wide));
    }
    for (const char* one_key :
         {"WRONGTYPE Operation against a key holding the wrong kind of value",
          "ERR Error running script (call to f_0123): @user_script:12: user_script:12: bad",
          "BUSYKEY Target key name already exists.", "NOSCRIPT No matching script.", "ASKING",
          "MOVEDX 1 h:1", ""}) {
        INFO(one_key);
        CHECK_FALSE(store::redis_error_is_node_wide(one_key));
    }
}

TEST_CASE("the fallback bucket is limit / instances, never below one", "[redis][keys]") {
    const limit::bucket_policy p{algorithm_kind::gcra, 600, 60s, 900};
    auto three = store::fallback_policy(p, 3);
    CHECK(three.limit == 200);
    CHECK(three.burst == 300);
    CHECK(three.window == 60s);
    CHECK(three.algorithm == algorithm_kind::gcra);
    CHECK(store::fallback_policy(p, 1).limit == 600);
    CHECK(store::fallback_policy(p, 0).limit == 600);
    CHECK(store::fallback_policy({algorithm_kind::gcra, 2, 1s, 0}, 5).limit == 1);
    CHECK(store::fallback_policy({algorithm_kind::gcra, 2, 1s, 0}, 5).burst == 0);
}

TEST_CASE("the over-limit cache answers a refusal until its retry time, shortened",
          "[redis][cache]") {
    store::over_limit_cache cache(16);
    limit::decision refused;
    refused.allowed = false;
    refused.limit = 10;
    refused.remaining = 0;
    refused.reset = 5s;
    refused.retry_after = 2s;
    refused.window = 60s;
    const nanoseconds t0{1'000'000'000};
    cache.remember("k", refused, t0);
    CHECK_FALSE(cache.lookup("other", t0));

    auto at_once = cache.lookup("k", t0);
    REQUIRE(at_once);
    CHECK_FALSE(at_once->allowed);
    CHECK(at_once->retry_after == 2s);
    CHECK(at_once->reset == 5s);
    CHECK(at_once->limit == 10);
    CHECK(at_once->window == 60s);

    auto later = cache.lookup("k", t0 + 1500ms);
    REQUIRE(later);
    CHECK(later->retry_after == 500ms);
    CHECK(later->reset == 3500ms);

    // At the exact retry time capacity is back: Redis decides again.
    CHECK(cache.lookup("k", t0 + 2s - 1ns));
    CHECK_FALSE(cache.lookup("k", t0 + 2s));
    CHECK(cache.size() == 0);

    // Allowed decisions are never cached.
    limit::decision ok = refused;
    ok.allowed = true;
    ok.retry_after = 0ns;
    cache.remember("ok", ok, t0);
    CHECK_FALSE(cache.lookup("ok", t0));
}

TEST_CASE("the over-limit cache is bounded and drops its oldest entries first", "[redis][cache]") {
    store::over_limit_cache cache(100);
    auto refused = refusal(1h);
    const nanoseconds t0{0};
    for (int i = 0; i < 1000; ++i) {
        cache.remember("k" + std::to_string(i), refused, t0);
        CHECK(cache.size() <= 100);
    }
    CHECK(cache.size() == 100);
    CHECK_FALSE(cache.lookup("k0", t0));
    CHECK_FALSE(cache.lookup("k899", t0));
    CHECK(cache.lookup("k900", t0));
    CHECK(cache.lookup("k999", t0));

    // Refreshing one key many times does not grow anything.
    for (int i = 0; i < 10000; ++i) {
        cache.remember("k999", refused, t0 + nanoseconds{i});
    }
    CHECK(cache.size() == 100);
    CHECK(cache.lookup("k999", t0));
}

TEST_CASE("the over-limit cache drops the oldest refusals that ran out as new ones come",
          "[redis][cache]") {
    store::over_limit_cache cache(100);
    auto refused = refusal(1s);
    const nanoseconds t0{0};
    for (int i = 0; i < 50; ++i) {
        cache.remember("old" + std::to_string(i), refused, t0);
    }
    // Long after they ran out, each new refusal takes two expired ones along.
    for (int i = 0; i < 10; ++i) {
        cache.remember("new" + std::to_string(i), refused, t0 + 10s);
    }
    CHECK(cache.size() == 50 - 20 + 10);
    CHECK_FALSE(cache.lookup("old0", t0 + 10s));
    CHECK(cache.lookup("new9", t0 + 10s));
    // A refreshed key moves to the newest end: it outlives older inserts.
    store::over_limit_cache small(3);
    refused = refusal(1h);
    for (const char* k : {"a", "b", "c"}) {
        small.remember(k, refused, t0);
    }
    small.remember("a", refused, t0 + 1s);
    small.remember("d", refused, t0 + 2s);
    CHECK(small.lookup("a", t0 + 2s));
    CHECK_FALSE(small.lookup("b", t0 + 2s));
    CHECK(small.lookup("c", t0 + 2s));
    CHECK(small.lookup("d", t0 + 2s));
}

TEST_CASE("the over-limit cache costs at most 256 bytes per tok: key when full",
          "[redis][cache][memory]") {
    constexpr std::size_t keys = 65536;  // redis_settings::cache_capacity
    const std::size_t heap_before = heap_in_use();
    {
        store::over_limit_cache cache(keys);
        auto refused = refusal(1h);
        // Keys shaped like production token keys: "tok:" + 64 hex digits.
        char key[4 + 64 + 1] = "tok:";
        for (std::size_t i = 0; i < keys; ++i) {
            std::snprintf(key + 4, 65, "%064llx",
                          static_cast<unsigned long long>(i * 0x9e3779b97f4a7c15ull));
            cache.remember(key, refused, nanoseconds{0});
        }
        REQUIRE(cache.size() == keys);
        const std::size_t heap_after = heap_in_use();
        const double per_key =
            heap_after > heap_before ? static_cast<double>(heap_after - heap_before) / keys : 0.0;
        WARN("over-limit cache: " << per_key << " bytes per key at " << keys
                                  << " keys (0 = not measurable in this build)");
        CHECK(per_key <= 256.0);
#if defined(__GLIBC__) && !defined(TOLLGATE_SANITIZED)
        CHECK(per_key > 0.0);
#endif
    }
}

TEST_CASE("a flapping fallback state logs at most one pair of lines per interval",
          "[redis][shared]") {
    store::redis_shared shared;
    captured_stderr err;
    const auto t0 = std::chrono::steady_clock::time_point{} + 1h;
    const std::string down =
        "tollgate: redis unreachable; store.redis.failure_mode decides (open: local buckets, "
        "closed: 503)";
    const std::string up = "tollgate: redis reachable again; deciding in redis";

    shared.report_fallback(true, t0);
    shared.report_fallback(false, t0 + 100ms);
    CHECK(err.take() == std::vector<std::string>{down, up});
    // Flapping within the interval: the gauge follows, the log does not.
    shared.report_fallback(true, t0 + 200ms);
    CHECK(shared.fallback());
    shared.report_fallback(false, t0 + 300ms);
    CHECK_FALSE(shared.fallback());
    shared.report_fallback(true, t0 + 400ms);
    shared.report_fallback(true, t0 + 9s);  // failing again: still too early
    CHECK(shared.fallback());
    CHECK(err.take().empty());
    // The first report after the interval writes the line the gauge is owed.
    shared.report_fallback(true, t0 + 10s);
    CHECK(err.take() ==
          std::vector<std::string>{down + " (2 more changes since the previous line, not logged)"});
    shared.report_fallback(true, t0 + 11s);
    shared.report_fallback(false, t0 + 12s);
    CHECK(err.take() == std::vector<std::string>{up});
    // Flipped and back within the interval: the last line is right as it is.
    shared.report_fallback(true, t0 + 13s);
    shared.report_fallback(false, t0 + 14s);
    CHECK(err.take().empty());
    shared.report_fallback(true, t0 + 30s);
    shared.report_fallback(false, t0 + 31s);
    CHECK(err.take() == std::vector<std::string>{
                            down + " (2 more changes since the previous line, not logged)", up});
}
