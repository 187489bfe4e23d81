// The shared bucket map (rate_limiter) and bucket selection (rate_policy).

#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "tollgate/config/config.hpp"
#include "tollgate/limit/clock.hpp"
#include "tollgate/limit/rate_limiter.hpp"
#include "tollgate/limit/rate_policy.hpp"

using namespace std::chrono_literals;
using std::chrono::nanoseconds;
using tollgate::algorithm_kind;
using tollgate::limit::bucket_policy;
using tollgate::limit::manual_clock;
using tollgate::limit::rate_limiter;
using tollgate::limit::rate_policy;

namespace {

bucket_policy policy(std::uint64_t limit, nanoseconds window,
                     algorithm_kind a = algorithm_kind::gcra) {
    return bucket_policy{a, limit, window, 0};
}

int passes(rate_limiter& limiter, std::string_view key, const bucket_policy& p, int attempts,
           std::string_view scope = {}) {
    int n = 0;
    for (int i = 0; i < attempts; ++i) {
        n += limiter.check(scope, key, p).allowed ? 1 : 0;
    }
    return n;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TOLLGATE_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TOLLGATE_SANITIZED 1
#endif
#endif

/// Heap bytes in use, or 0 where glibc's counters are not the real allocator.
std::size_t heap_in_use() {
#if defined(__GLIBC__) && !defined(TOLLGATE_SANITIZED)
    const struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
#else
    return 0;
#endif
}

}  // namespace

TEST_CASE("rate_limiter: one bucket per key, scope and algorithm", "[rate][limiter]") {
    manual_clock clock{1s};
    rate_limiter limiter{clock, 100};
    const auto p = policy(3, 1s);

    REQUIRE(passes(limiter, "ip:10.0.0.1", p, 10) == 3);
    REQUIRE(passes(limiter, "ip:10.0.0.2", p, 10) == 3);
    REQUIRE(passes(limiter, "ip:10.0.0.1", p, 10, "search") == 3);
    REQUIRE(passes(limiter, "ip:10.0.0.1", policy(3, 1s, algorithm_kind::fixed_window), 10) == 3);
    REQUIRE(limiter.size() == 4);

    const auto refused = limiter.check("ip:10.0.0.1", p);
    REQUIRE_FALSE(refused.allowed);
    REQUIRE(refused.retry_after == nanoseconds{1s} / 3 + 1ns);
    clock.advance(nanoseconds{1s} / 3 + 1ns);
    REQUIRE(passes(limiter, "ip:10.0.0.1", p, 10) == 1);

    // Entries back at fresh state are dropped as soon as they are touched
    // and found fresh; a zero limit never creates one.
    REQUIRE_FALSE(limiter.check("ip:10.9.9.9", policy(0, 1s)).allowed);
    REQUIRE(limiter.size() == 4);

    limiter.clear();
    REQUIRE(limiter.size() == 0);
    REQUIRE(passes(limiter, "ip:10.0.0.2", p, 10) == 3);
}

TEST_CASE("rate_limiter: fresh entries make room first and are not evictions",
          "[rate][limiter][eviction]") {
    manual_clock clock{0ns};
    rate_limiter limiter{clock, 4};
    REQUIRE(limiter.shard_count() == 1);
    const auto live = policy(1, 60s);   // stays live for a minute
    const auto brief = policy(10, 1s);  // fresh 100 ms after one request

    // The two live keys are the least recently used ones.
    REQUIRE(limiter.check("live-a", live).allowed);
    REQUIRE(limiter.check("live-b", live).allowed);
    REQUIRE(limiter.check("brief-c", brief).allowed);
    REQUIRE(limiter.check("brief-d", brief).allowed);
    REQUIRE(limiter.size() == 4);

    clock.advance(100ms);
    REQUIRE(limiter.check("new-e", live).allowed);
    REQUIRE(limiter.check("new-f", live).allowed);
    REQUIRE(limiter.size() == 4);
    REQUIRE(limiter.evictions() == 0);
    // The live keys survived: their budget is still spent.
    REQUIRE_FALSE(limiter.check("live-a", live).allowed);
    REQUIRE_FALSE(limiter.check("live-b", live).allowed);
    REQUIRE(limiter.evictions() == 0);
}

TEST_CASE("rate_limiter: when all entries are live the LRU one is evicted and counted",
          "[rate][limiter][eviction]") {
    manual_clock clock{0ns};
    rate_limiter limiter{clock, 4};
    const auto live = policy(1, 60s);
    for (const char* key : {"a", "b", "c", "d"}) {
        REQUIRE(limiter.check(key, live).allowed);
    }
    // A refused request still counts as use: "a" is no longer the LRU entry.
    REQUIRE_FALSE(limiter.check("a", live).allowed);

    REQUIRE(limiter.check("e", live).allowed);
    REQUIRE(limiter.size() == 4);
    REQUIRE(limiter.evictions() == 1);
    for (const char* key : {"a", "c", "d", "e"}) {
        REQUIRE_FALSE(limiter.check(key, live).allowed);
    }
    REQUIRE(limiter.evictions() == 1);
    // "b" was forgotten, so it starts over (and in turn evicts the LRU "a").
    REQUIRE(limiter.check("b", live).allowed);
    REQUIRE(limiter.evictions() == 2);
}

TEST_CASE("rate_limiter: steady churn of expiring keys never evicts a live one",
          "[rate][limiter][eviction]") {
    manual_clock clock{0ns};
    constexpr int capacity = 1000;
    rate_limiter limiter{clock, capacity};
    // Key i is live for exactly (i + 1) ms, so entries expire one by one in
    // an order unrelated to their LRU position.
    for (int i = 0; i < capacity; ++i) {
        const int slot = (i * 7919) % capacity;
        REQUIRE(limiter
                    .check("old-" + std::to_string(slot),
                           policy(1, std::chrono::milliseconds{slot + 1}))
                    .allowed);
    }
    REQUIRE(limiter.size() == capacity);
    const auto live = policy(1, 1h);
    for (int t = 1; t <= capacity; ++t) {
        clock.set(std::chrono::milliseconds{t});
        REQUIRE(limiter.check("new-" + std::to_string(t), live).allowed);
    }
    REQUIRE(limiter.size() == capacity);
    REQUIRE(limiter.evictions() == 0);
    // Now everything is live: the next key costs exactly one eviction, and
    // the victim is the least recently used ("new-1").
    REQUIRE(limiter.check("one-more", live).allowed);
    REQUIRE(limiter.evictions() == 1);
    REQUIRE_FALSE(limiter.check("new-2", live).allowed);
    REQUIRE(limiter.evictions() == 1);
}

TEST_CASE("rate_limiter: exact under contention on one key", "[rate][limiter][threads]") {
    const auto kind = GENERATE(algorithm_kind::gcra, algorithm_kind::token_bucket,
                               algorithm_kind::fixed_window, algorithm_kind::sliding_window);
    CAPTURE(static_cast<int>(kind));
    manual_clock clock{10s};  // frozen: no refill during the race
    rate_limiter limiter{clock, 1'000'000};
    const auto p = policy(1000, 60s, kind);
    constexpr int threads = 8;
    constexpr int attempts = 5000;

    std::atomic<int> allowed{0};
    std::atomic<int> allowed_other{0};
    std::latch start{threads};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            start.arrive_and_wait();
            int mine = 0;
            int other = 0;
            for (int i = 0; i < attempts; ++i) {
                mine += limiter.check("org:shared", p).allowed ? 1 : 0;
                // Unrelated keys on other shards must not disturb the count.
                other += limiter.check("org:t" + std::to_string(t), p).allowed ? 1 : 0;
            }
            allowed += mine;
            allowed_other += other;
        });
    }
    for (auto& th : pool) {
        th.join();
    }
    REQUIRE(allowed == 1000);
    REQUIRE(allowed_other == threads * 1000);
    REQUIRE(limiter.size() == threads + 1);
}

TEST_CASE("rate_limiter: at most 128 bytes per key at 1,000,000 keys", "[rate][limiter][memory]") {
    manual_clock clock{1s};
    constexpr std::size_t keys = 1'000'000;
    const std::size_t heap_before = heap_in_use();
    {
        rate_limiter limiter{clock, keys};
        REQUIRE(limiter.shard_count() == 64);
        const auto p = policy(600, 60s);
        // Keys shaped like production token keys: "tok:" + 64 hex digits.
        std::array<char, 4 + 64 + 1> key{'t', 'o', 'k', ':'};  // + snprintf's NUL
        std::uint64_t x = 0x9e3779b97f4a7c15ull;
        for (std::size_t i = 0; i < keys; ++i) {
            for (int part = 0; part < 4; ++part) {
                x += 0x9e3779b97f4a7c15ull;  // splitmix64
                std::uint64_t z = x;
                z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
                z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
                z ^= z >> 31;
                std::snprintf(key.data() + 4 + 16 * part, 17, "%016llx",
                              static_cast<unsigned long long>(z));
            }
            REQUIRE(limiter.check(std::string_view{key.data(), key.size() - 1}, p).allowed);
        }
        const std::size_t held = limiter.size();
        // Shards fill a little unevenly; a handful of keys land in full ones.
        REQUIRE(held > keys * 99 / 100);
        REQUIRE(held + limiter.evictions() == keys);

        const double own = static_cast<double>(limiter.memory_bytes()) / held;
        const std::size_t heap_after = heap_in_use();
        const double heap =
            heap_after > heap_before ? static_cast<double>(heap_after - heap_before) / held : 0.0;
        WARN("bytes per key at " << held << " keys: " << own << " (limiter's count), " << heap
                                 << " (malloc delta; 0 = not measurable in this build); evictions "
                                 << limiter.evictions());
        REQUIRE(own <= 128.0);
        REQUIRE(heap <= 128.0);
#if defined(__GLIBC__) && !defined(TOLLGATE_SANITIZED)
        REQUIRE(heap > 0.0);
#endif
    }
}

TEST_CASE("rate_policy: exempt > per-key override > route > global", "[rate][policy]") {
    tollgate::rate_limit_config cfg;
    cfg.algorithm = algorithm_kind::sliding_window;
    cfg.limit = 2;
    cfg.window = 1000ms;
    cfg.burst = 4;
    cfg.overrides.push_back({"org:acme", 5, std::nullopt, std::nullopt});
    cfg.overrides.push_back({"org:slow", 1, std::chrono::milliseconds{60000}, 3});
    cfg.overrides.push_back({"org:acme", 99, std::nullopt, std::nullopt});  // ignored duplicate
    const rate_policy rp{cfg};

    tollgate::route_config search;
    search.name = "search";
    search.rate_limit = tollgate::route_rate_limit{};
    search.rate_limit->limit = 3;
    search.rate_limit->algorithm = algorithm_kind::gcra;
    tollgate::route_config health;
    health.name = "health";
    health.exempt = true;
    health.rate_limit = search.rate_limit;
    tollgate::route_config plain;
    plain.name = "plain";

    SECTION("global") {
        const auto s = rp.select("ip:1.2.3.4", nullptr);
        REQUIRE(s);
        REQUIRE(s->scope.empty());
        REQUIRE(s->policy.algorithm == algorithm_kind::sliding_window);
        REQUIRE(s->policy.limit == 2);
        REQUIRE(s->policy.window == 1s);
        REQUIRE(s->policy.burst == 4);
        const auto same = rp.select("ip:1.2.3.4", &plain);
        REQUIRE(same);
        REQUIRE(same->scope.empty());
        REQUIRE(same->policy.limit == 2);
    }
    SECTION("override: exact key match, inherits algorithm and window, own burst") {
        const auto s = rp.select("org:acme", &search);
        REQUIRE(s);
        REQUIRE(s->scope.empty());
        REQUIRE(s->policy.limit == 5);
        REQUIRE(s->policy.algorithm == algorithm_kind::sliding_window);
        REQUIRE(s->policy.window == 1s);
        REQUIRE(s->policy.burst == 0);
        const auto slow = rp.select("org:slow", nullptr);
        REQUIRE(slow->policy.window == 60s);
        REQUIRE(slow->policy.burst == 3);
        REQUIRE(rp.select("org:acme2", nullptr)->policy.limit == 2);
        REQUIRE(rp.select("org:acm", nullptr)->policy.limit == 2);
    }
    SECTION("route fields over global, in the route's own scope") {
        const auto s = rp.select("ip:1.2.3.4", &search);
        REQUIRE(s);
        REQUIRE(s->scope == "search");
        REQUIRE(s->policy.limit == 3);
        REQUIRE(s->policy.algorithm == algorithm_kind::gcra);
        REQUIRE(s->policy.window == 1s);
        REQUIRE(s->policy.burst == 4);
    }
    SECTION("exempt wins over everything") {
        REQUIRE_FALSE(rp.select("ip:1.2.3.4", &health));
        REQUIRE_FALSE(rp.select("org:acme", &health));
    }
    SECTION("routes with their own limit get separate buckets") {
        manual_clock clock{1s};
        rate_limiter limiter{clock, 100};
        const auto charge = [&](std::string_view key, const tollgate::route_config* route) {
            const auto s = rp.select(key, route);
            return limiter.check(s->scope, key, s->policy).allowed;
        };
        int on_search = 0;
        int on_plain = 0;
        int acme = 0;
        for (int i = 0; i < 20; ++i) {
            on_search += charge("ip:1.2.3.4", &search) ? 1 : 0;
            on_plain += charge("ip:1.2.3.4", &plain) ? 1 : 0;
            acme += charge("org:acme", i % 2 == 0 ? &search : &plain) ? 1 : 0;
        }
        REQUIRE(on_search == 4);  // gcra, limit 3, burst 4 inherited
        REQUIRE(on_plain == 2);   // global sliding window
        REQUIRE(acme == 5);       // one override bucket across routes
    }
}
