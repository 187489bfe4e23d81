// The shared bucket map (rate_limiter) and bucket selection (rate_policy).

#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <latch>
#include <list>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "heap.hpp"
#include "tollgate/config/config.hpp"
#include "tollgate/limit/algorithms.hpp"
#include "tollgate/limit/clock.hpp"
#include "tollgate/limit/rate_limiter.hpp"
#include "tollgate/limit/rate_policy.hpp"
#include "tollgate/store/rate_store.hpp"

using namespace std::chrono_literals;
using std::chrono::nanoseconds;
using tollgate::algorithm_kind;
using tollgate::limit::bucket_policy;
using tollgate::limit::bucket_state;
using tollgate::limit::decision;
using tollgate::limit::manual_clock;
using tollgate::limit::rate_limiter;
using tollgate::limit::rate_policy;
using tollgate::test::heap_in_use;

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

/// Runs `body(t)` on `threads` threads released together, and joins them.
template <class Body>
void race(int threads, Body body) {
    std::latch start{threads};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&start, &body, t] {
            start.arrive_and_wait();
            body(t);
        });
    }
    for (auto& th : pool) {
        th.join();
    }
}

bool same(const decision& a, const decision& b) {
    return a.allowed == b.allowed && a.limit == b.limit && a.remaining == b.remaining &&
           a.reset == b.reset && a.retry_after == b.retry_after && a.window == b.window;
}

std::string describe(const decision& d) {
    return std::string{d.allowed ? "allowed" : "refused"} + " remaining " +
           std::to_string(d.remaining) + " reset " + std::to_string(d.reset.count()) +
           " retry_after " + std::to_string(d.retry_after.count());
}

/// rate_limiter's documented semantics written the plain way: one bucket per
/// (scope, key, policy), all of them in one LRU list. A fresh bucket is the
/// same as none, so it is forgotten as soon as it is seen fresh; when the
/// limiter reports an eviction, the victim is the least recently used live
/// bucket (exact with one shard; with several only the limiter knows which
/// shard was full).
class reference_limiter {
public:
    struct bucket {
        bucket_state state;
        std::int64_t fresh_at = 0;
        std::list<std::string>::iterator in_lru;
    };

    /// The decision for `id`, applied to the model.
    decision check(const std::string& id, const bucket_policy& p, nanoseconds now) {
        auto it = buckets_.find(id);
        if (it != buckets_.end() && it->second.fresh_at <= now.count()) {
            forget(it);
            it = buckets_.end();
        }
        bucket_state state = it == buckets_.end() ? bucket_state{} : it->second.state;
        const decision d = tollgate::limit::check(state, p, now);
        if (d.reset.count() <= 0) {
            if (it != buckets_.end()) {
                forget(it);
            }
            return d;
        }
        if (it == buckets_.end()) {
            lru_.push_front(id);
            it = buckets_.emplace(id, bucket{state, 0, lru_.begin()}).first;
        } else {
            lru_.splice(lru_.begin(), lru_, it->second.in_lru);
            it->second.state = state;
        }
        it->second.fresh_at = now.count() + d.reset.count();
        return d;
    }

    /// Drops the least recently used live bucket; false if there is none.
    bool evict_lru(nanoseconds now) {
        for (auto at = lru_.rbegin(); at != lru_.rend(); ++at) {
            auto it = buckets_.find(*at);
            if (it->second.fresh_at > now.count()) {
                forget(it);
                return true;
            }
        }
        return false;
    }

    /// Forgets `id` (the limiter evicted it, as it turned out).
    void forget(const std::string& id) {
        auto it = buckets_.find(id);
        if (it != buckets_.end()) {
            forget(it);
        }
    }

    bool live(const std::string& id, nanoseconds now) const {
        auto it = buckets_.find(id);
        return it != buckets_.end() && it->second.fresh_at > now.count();
    }

    std::size_t live_count(nanoseconds now) const {
        std::size_t n = 0;
        for (const auto& [id, b] : buckets_) {
            n += b.fresh_at > now.count() ? 1 : 0;
        }
        return n;
    }

private:
    using map = std::unordered_map<std::string, bucket>;

    void forget(map::iterator it) {
        lru_.erase(it->second.in_lru);
        buckets_.erase(it);
    }

    std::list<std::string> lru_;  // front = most recently used
    map buckets_;
};

}  // namespace

TEST_CASE("rate_limiter: random traffic matches a plain LRU model", "[rate][limiter][model]") {
    struct setup {
        std::size_t max_keys;
        std::size_t shards;
    };
    // One shard: the model knows every victim. Several: only that some live
    // bucket went. Capacities that are not powers of two (61 and 200 keys
    // over 8 shards) give tables that are not either.
    const setup run = GENERATE(setup{16, 1}, setup{61, 1}, setup{64, 4}, setup{200, 8});
    CAPTURE(run.max_keys, run.shards);

    manual_clock clock{1s};
    // A fixed hash seed: a failure replays exactly (same shards, same cells).
    rate_limiter limiter{clock, run.max_keys, run.shards, 0x5eed + run.max_keys};
    REQUIRE(limiter.shard_count() == run.shards);
    const bool exact = run.shards == 1;
    reference_limiter model;
    // Windows of a few ms against steps of up to 2 ms: buckets go fresh all
    // the time, in an order unrelated to their LRU position.
    const std::vector<bucket_policy> policies{
        policy(3, 10ms),
        policy(1, 20ms),
        bucket_policy{algorithm_kind::gcra, 2, 3ms, 5},
        bucket_policy{algorithm_kind::token_bucket, 2, 5ms, 4},
        policy(2, 7ms, algorithm_kind::fixed_window),
        policy(3, 4ms, algorithm_kind::sliding_window),
        policy(0, 1s),  // refuses everything, never stored
    };
    std::mt19937_64 rng{20240611 + run.max_keys};
    const auto uniform = [&rng](std::size_t n) {
        return static_cast<std::size_t>(std::uniform_int_distribution<std::size_t>{0, n - 1}(rng));
    };

    std::uint64_t unexplained = 0;  // evictions whose victim is not known yet
    std::uint64_t evictions = 0;
    std::uint64_t evictions_with_fresh_held = 0;
    constexpr int operations = 40'000;
    for (int op = 0; op < operations; ++op) {
        // Phases: keys from a pool that fits, then from one four times too
        // large (evictions), then a quiet spell where everything goes fresh.
        const bool crowded = (op / 2000) % 2 == 1;
        const std::size_t pool =
            crowded ? run.max_keys * 4 : std::max<std::size_t>(run.max_keys / 2, 2);
        if (uniform(4) == 0) {
            // About 16 keys' worth of ops per ms of bucket life: a 16-key
            // limiter fills now and then, a 200-key one as often.
            clock.advance(nanoseconds{uniform(32'000'000 / run.max_keys)});
        }
        if (uniform(500) == 0) {
            clock.advance(50ms);
        }
        const std::size_t which = uniform(policies.size());
        const bucket_policy& p = policies[which];
        const std::string key = "k" + std::to_string(uniform(pool));
        const std::string scope = uniform(3) == 0 ? "route" : "";
        const std::string id = scope + "/" + key + "/" + std::to_string(which);
        const nanoseconds now = clock.now();
        INFO("operation " << op << " on " << id << " at " << now.count() << " ns");

        const std::uint64_t evictions_before = limiter.evictions();
        const decision got = limiter.check(scope, key, p);
        const std::uint64_t evicted = limiter.evictions() - evictions_before;
        REQUIRE(evicted <= 1);
        if (evicted == 1) {
            ++evictions;
            // The limiter was full and found no fresh entry to drop: then
            // the model, which has every live bucket the limiter has, has
            // as many as the limiter holds.
            if (exact) {
                if (model.live_count(now) - (model.live(id, now) ? 1 : 0) < run.max_keys) {
                    ++evictions_with_fresh_held;
                }
                REQUIRE(model.evict_lru(now));
            } else {
                ++unexplained;
            }
        }

        const bool was_live = model.live(id, now);
        const decision want = model.check(id, p, now);
        if (!same(got, want)) {
            // Only an evicted bucket may start over, and only if an eviction
            // is still unexplained.
            bucket_state fresh{};
            const decision restart = tollgate::limit::check(fresh, p, now);
            INFO("limiter: " << describe(got) << " model: " << describe(want));
            REQUIRE(!exact);
            REQUIRE(was_live);
            REQUIRE(unexplained > 0);
            REQUIRE(same(got, restart));
            --unexplained;
            model.forget(id);
            model.check(id, p, now);
        }

        const std::size_t held = limiter.size();
        REQUIRE(held <= run.max_keys);
        REQUIRE(held + unexplained >= model.live_count(now));
        const std::string problem = limiter.debug_check();
        INFO(problem);
        REQUIRE(problem.empty());
    }
    // The large pool made the limiter evict; with one shard, never while it
    // held a fresh entry (this traffic stays within the sweep budget).
    REQUIRE(evictions > 0);
    REQUIRE(limiter.evictions() == evictions);
    REQUIRE(evictions_with_fresh_held == 0);
}

TEST_CASE("rate_limiter: a clock that steps back keeps the table consistent",
          "[rate][limiter][model]") {
    // Decisions after a backward step are the algorithms' business (tested
    // with them); here the limiter's own bookkeeping must stay true: a fresh
    // entry moved earlier must still be found by the next sweep, so the
    // shard never holds more than its share and never loses track of one.
    const std::size_t max_keys = GENERATE(std::size_t{5}, std::size_t{37}, std::size_t{64});
    CAPTURE(max_keys);
    manual_clock clock{1s};
    const std::size_t shards = max_keys == 64 ? 4 : 1;
    rate_limiter limiter{clock, max_keys, shards, 0x5eed + max_keys};
    const std::vector<bucket_policy> policies{
        policy(3, 10ms),
        policy(1, 200us),
        bucket_policy{algorithm_kind::token_bucket, 2, 5ms, 4},
        policy(2, 7ms, algorithm_kind::fixed_window),
        policy(3, 4ms, algorithm_kind::sliding_window),
    };
    std::mt19937_64 rng{7 + max_keys};
    const auto uniform = [&rng](std::uint64_t n) {
        return std::uniform_int_distribution<std::uint64_t>{0, n - 1}(rng);
    };
    for (int op = 0; op < 30'000; ++op) {
        const std::uint64_t r = uniform(100);
        if (r < 20) {
            clock.advance(nanoseconds{uniform(500'000)});
        } else if (r == 20) {
            clock.advance(50ms);
        } else if (r == 21) {
            clock.set(clock.now() - nanoseconds{uniform(5'000'000)});
        }
        limiter.check("k" + std::to_string(uniform(max_keys * 3)),
                      policies[uniform(policies.size())]);
        INFO("operation " << op);
        REQUIRE(limiter.size() <= max_keys);
        const std::string problem = limiter.debug_check();
        INFO(problem);
        REQUIRE(problem.empty());
    }
}

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

TEST_CASE("rate_limiter: an unset burst and a burst equal to the limit are one bucket",
          "[rate][limiter]") {
    manual_clock clock{1s};
    rate_limiter limiter{clock, 100};
    auto explicit_burst = policy(3, 1s);
    explicit_burst.burst = 3;
    REQUIRE(passes(limiter, "ip:10.0.0.1", policy(3, 1s), 2) == 2);
    // The same policy written another way (a reload that spells out the
    // default, or another instance's config): the bucket keeps its state.
    CHECK(passes(limiter, "ip:10.0.0.1", explicit_burst, 10) == 1);
    CHECK(limiter.size() == 1);
    // A real change of burst is a different bucket.
    explicit_burst.burst = 4;
    CHECK(passes(limiter, "ip:10.0.0.1", explicit_burst, 10) == 4);
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
    race(threads, [&](int t) {
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
    REQUIRE(allowed == 1000);
    REQUIRE(allowed_other == threads * 1000);
    REQUIRE(limiter.size() == threads + 1);
}

TEST_CASE("rate_limiter: tables grow with the keys held and not with max_keys", "[rate][limiter]") {
    manual_clock clock{1s};
    rate_limiter limiter{clock, 1'000'000};
    const std::size_t empty = limiter.memory_bytes();
    for (int i = 0; i < 10; ++i) {
        REQUIRE(limiter.check("ip:10.0.0." + std::to_string(i), policy(5, 1s)).allowed);
    }
    // Ten keys touch at most ten shards, each with a first table of 16
    // cells (640 bytes), not the 15,625 * 4/3 cells of a full one.
    REQUIRE(limiter.memory_bytes() - empty <= 10 * 1024);
    limiter.clear();
    REQUIRE(limiter.memory_bytes() == empty);
}

TEST_CASE("rate_limiter: max_keys says what a capped shard really holds", "[rate][limiter]") {
    manual_clock clock{1s};
    // Tables start small, so a limiter this large costs nothing until used.
    rate_limiter one{clock, std::size_t{1} << 40, 1};
    REQUIRE(one.max_keys() == 0xbfff'fff0);
    REQUIRE(one.check("ip:10.0.0.1", policy(1, 1s)).allowed);
    REQUIRE(one.debug_check().empty());
    rate_limiter many{clock, std::size_t{1} << 40, 64};
    REQUIRE(many.max_keys() == 64 * std::size_t{0xbfff'fff0});
    rate_limiter plain{clock, 1'000'003, 64};
    REQUIRE(plain.max_keys() == 1'000'003);
}

TEST_CASE("rate_limiter: tables grow while other threads decide", "[rate][limiter][threads]") {
    manual_clock clock{10s};
    // Two shards, so each grows many times while the other threads look up
    // (and prefetch from) the table being replaced.
    rate_limiter limiter{clock, 100'000, 2};
    const auto p = policy(1, 60s);
    constexpr int threads = 4;
    constexpr int keys = 5000;
    std::atomic<int> allowed{0};
    race(threads, [&](int t) {
        int mine = 0;
        for (int i = 0; i < keys; ++i) {
            const std::string key = "t" + std::to_string(t) + "-" + std::to_string(i);
            mine += limiter.check(key, p).allowed ? 1 : 0;
            mine -= limiter.check(key, p).allowed ? 1 : 0;  // already spent
        }
        allowed += mine;
    });
    REQUIRE(allowed == threads * keys);
    REQUIRE(limiter.size() == threads * keys);
    REQUIRE(limiter.evictions() == 0);
    REQUIRE(limiter.debug_check().empty());
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

TEST_CASE("memory_store decides at once and never makes a completion", "[rate][store]") {
    manual_clock clock{1s};
    rate_limiter limiter{clock, 100};
    tollgate::store::memory_store store{limiter};
    int made = 0;
    const auto make = [&made] {
        ++made;
        return [](tollgate::store::store_result) {};
    };
    const tollgate::store::rate_store::completion_source source{make};
    const auto first = store.check("", "ip:10.0.0.1", policy(1, 1s), source);
    REQUIRE(first);
    CHECK(first->decision.allowed);
    const auto second = store.check("", "ip:10.0.0.1", policy(1, 1s), source);
    REQUIRE(second);
    CHECK_FALSE(second->decision.allowed);
    CHECK(made == 0);
    // The source itself works: what it makes is the caller's completion.
    CHECK(source());
    CHECK(made == 1);
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
        // Its own limit and no burst: burst = that limit, not the global 4.
        REQUIRE(s->policy.burst == 0);
    }
    SECTION("a route's burst: its own, else the global one only with the global limit") {
        tollgate::route_config slower = search;
        slower.name = "slower";
        slower.rate_limit = tollgate::route_rate_limit{};
        slower.rate_limit->window = 60000ms;
        const auto inherits = rp.select("ip:1.2.3.4", &slower);
        REQUIRE(inherits);
        CHECK(inherits->policy.limit == 2);
        CHECK(inherits->policy.window == 60s);
        CHECK(inherits->policy.burst == 4);
        slower.rate_limit->limit = 7;
        CHECK(rp.select("ip:1.2.3.4", &slower)->policy.burst == 0);
        slower.rate_limit->burst = 9;
        CHECK(rp.select("ip:1.2.3.4", &slower)->policy.burst == 9);
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
        REQUIRE(on_search == 3);  // gcra, limit 3, burst = its limit (not the global 4)
        REQUIRE(on_plain == 2);   // global sliding window
        REQUIRE(acme == 5);       // one override bucket across routes
    }
}
