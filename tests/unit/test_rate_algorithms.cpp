// The four rate-limit algorithms at their boundaries, driven by exact times.

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <random>

#include "tollgate/limit/algorithms.hpp"
#include "tollgate/limit/clock.hpp"

using namespace std::chrono_literals;
using std::chrono::nanoseconds;
using tollgate::algorithm_kind;
using tollgate::limit::bucket_policy;
using tollgate::limit::bucket_state;
using tollgate::limit::check;
using tollgate::limit::decision;
using tollgate::limit::is_fresh;

namespace {

bucket_policy policy(algorithm_kind a, std::uint64_t limit, nanoseconds window,
                     std::uint64_t burst = 0) {
    return bucket_policy{a, limit, window, burst};
}

/// Charges `n` requests at `now`, returns how many passed.
int take(bucket_state& s, const bucket_policy& p, nanoseconds now, int n) {
    int passed = 0;
    for (int i = 0; i < n; ++i) {
        passed += check(s, p, now).allowed ? 1 : 0;
    }
    return passed;
}

}  // namespace

TEST_CASE("manual_clock moves only when told, atomically", "[rate][clock]") {
    tollgate::limit::manual_clock c{5ns};
    REQUIRE(c.now() == 5ns);
    c.advance(1s);
    REQUIRE(c.now() == 1s + 5ns);
    c.set(2ms);
    REQUIRE(c.now() == 2ms);
    tollgate::limit::steady_clock s;
    const auto a = s.now();
    REQUIRE(s.now() >= a);
}

TEST_CASE("every algorithm: 999 ms refused, 1000 ms allowed (limit 1 per second)", "[rate]") {
    const auto kind = GENERATE(algorithm_kind::gcra, algorithm_kind::token_bucket,
                               algorithm_kind::fixed_window, algorithm_kind::sliding_window);
    CAPTURE(static_cast<int>(kind));
    const auto p = policy(kind, 1, 1s);
    bucket_state s;

    const decision first = check(s, p, 0ns);
    REQUIRE(first.allowed);
    REQUIRE(first.limit == 1);
    REQUIRE(first.remaining == 0);
    REQUIRE(first.retry_after == 0ns);
    REQUIRE(first.window == 1s);

    const decision early = check(s, p, 999ms);
    REQUIRE_FALSE(early.allowed);
    REQUIRE(early.remaining == 0);
    if (kind == algorithm_kind::sliding_window) {
        // At 1000 ms the previous window still weighs 1.0: the next pass is
        // when its weight has faded to zero.
        REQUIRE(early.retry_after == 1001ms);
        REQUIRE_FALSE(check(s, p, 1000ms).allowed);
        REQUIRE_FALSE(check(s, p, 2s - 1ns).allowed);
        REQUIRE(check(s, p, 2s).allowed);
    } else {
        REQUIRE(early.retry_after == 1ms);
        REQUIRE(early.reset == 1ms);
        const decision on_time = check(s, p, 1000ms);
        REQUIRE(on_time.allowed);
        REQUIRE(on_time.reset == 1s);
    }
}

TEST_CASE("gcra: remaining, reset and retry-after at 600 per 60 s", "[rate][gcra]") {
    const auto p = policy(algorithm_kind::gcra, 600, 60s);
    bucket_state s;
    const decision d = check(s, p, 0ns);
    REQUIRE(d.allowed);
    REQUIRE(d.limit == 600);
    REQUIRE(d.remaining == 599);
    // One request takes one emission interval (60 s / 600) to drain.
    REQUIRE(d.reset == 100ms);

    REQUIRE(take(s, p, 0ns, 599) == 599);
    const decision full = check(s, p, 0ns);
    REQUIRE_FALSE(full.allowed);
    REQUIRE(full.remaining == 0);
    REQUIRE(full.reset == 60s);
    REQUIRE(full.retry_after == 100ms);

    // Sustained: one request per emission interval passes forever, each
    // leaving nothing spare.
    for (int i = 1; i <= 1000; ++i) {
        const nanoseconds t = i * 100ms;
        REQUIRE_FALSE(check(s, p, t - 1ns).allowed);
        const decision ok = check(s, p, t);
        REQUIRE(ok.allowed);
        REQUIRE(ok.remaining == 0);
    }
}

TEST_CASE("gcra and token bucket: burst above limit, refill", "[rate][gcra][token_bucket]") {
    const auto kind = GENERATE(algorithm_kind::gcra, algorithm_kind::token_bucket);
    CAPTURE(static_cast<int>(kind));
    const auto p = policy(kind, 10, 1s, 20);
    bucket_state s;

    const decision first = check(s, p, 0ns);
    REQUIRE(first.limit == 10);      // the header shows the configured limit...
    REQUIRE(first.remaining == 19);  // ...while remaining tells the truth about the burst
    REQUIRE(take(s, p, 0ns, 100) == 19);

    // Half a second refills 5 requests (10 per second), not the whole burst.
    REQUIRE(take(s, p, 500ms, 100) == 5);
    const decision refused = check(s, p, 500ms);
    REQUIRE(refused.retry_after == 100ms);
    REQUIRE(refused.reset == 2s);

    // Fully refilled after burst / rate = 2 s from the last pass.
    REQUIRE_FALSE(is_fresh(s, p, 2500ms - 1ns));
    REQUIRE(is_fresh(s, p, 2500ms));
    REQUIRE(check(s, p, 2500ms).remaining == 19);
}

TEST_CASE("a refused request consumes nothing", "[rate]") {
    const auto kind = GENERATE(algorithm_kind::gcra, algorithm_kind::token_bucket,
                               algorithm_kind::fixed_window, algorithm_kind::sliding_window);
    CAPTURE(static_cast<int>(kind));
    const auto p = policy(kind, 5, 1s);
    bucket_state s;
    REQUIRE(take(s, p, 0ns, 5) == 5);
    const decision refused = check(s, p, 1ns);
    REQUIRE_FALSE(refused.allowed);
    const bucket_state before = s;
    for (int i = 0; i < 1000; ++i) {
        REQUIRE_FALSE(check(s, p, 1ns).allowed);
    }
    REQUIRE(s.time == before.time);
    REQUIRE(s.value == before.value);
    // Hammering did not push the next pass back.
    REQUIRE_FALSE(check(s, p, 1ns + refused.retry_after - 1ns).allowed);
    REQUIRE(check(s, p, 1ns + refused.retry_after).allowed);
}

TEST_CASE("gcra: an emission interval of 333333333.3 ns does not drift", "[rate][gcra]") {
    const auto kind = GENERATE(algorithm_kind::gcra, algorithm_kind::token_bucket);
    CAPTURE(static_cast<int>(kind));
    // Burst 2 keeps the schedule ahead of the (ns-rounded) arrival times, so
    // a late arrival does not shift it and any rounding error would add up.
    const auto p = policy(kind, 3, 1s, 2);
    bucket_state s;
    REQUIRE(take(s, p, 0ns, 3) == 2);
    // The k-th slot is due at exactly ceil(k * 1e9 / 3) ns, even after 3000 s.
    for (std::int64_t k = 1; k <= 9000; ++k) {
        const nanoseconds due{(k * 1'000'000'000 + 2) / 3};
        REQUIRE_FALSE(check(s, p, due - 1ns).allowed);
        REQUIRE(check(s, p, due).allowed);
    }
}

TEST_CASE("fixed window: aligned to the first request, resets at its boundary", "[rate][fixed]") {
    const auto p = policy(algorithm_kind::fixed_window, 3, 1s, 100);  // burst is ignored
    bucket_state s;
    const decision first = check(s, p, 250ms);
    REQUIRE(first.allowed);
    REQUIRE(first.remaining == 2);
    REQUIRE(first.reset == 1s);
    REQUIRE(take(s, p, 700ms, 5) == 2);

    const decision refused = check(s, p, 1249ms);
    REQUIRE_FALSE(refused.allowed);
    REQUIRE(refused.remaining == 0);
    REQUIRE(refused.reset == 1ms);
    REQUIRE(refused.retry_after == 1ms);
    REQUIRE_FALSE(is_fresh(s, p, 1250ms - 1ns));
    REQUIRE(is_fresh(s, p, 1250ms));

    const decision next = check(s, p, 1250ms);
    REQUIRE(next.allowed);
    REQUIRE(next.remaining == 2);
    REQUIRE(next.reset == 1s);

    // After idling, the next request opens a new window where it lands.
    const decision later = check(s, p, 5s + 3ms);
    REQUIRE(later.remaining == 2);
    REQUIRE(later.reset == 1s);
    REQUIRE(take(s, p, 6s + 2ms, 5) == 2);
    REQUIRE(check(s, p, 6s + 3ms).remaining == 2);
}

TEST_CASE("sliding window: previous window weighted by what is left of it", "[rate][sliding]") {
    const auto p = policy(algorithm_kind::sliding_window, 10, 1s);
    bucket_state s;
    REQUIRE(take(s, p, 500ms, 10) == 10);
    const decision refused = check(s, p, 600ms);
    REQUIRE_FALSE(refused.allowed);
    // Requests sit in window [0, 1 s) and weigh on [1 s, 2 s).
    REQUIRE(refused.reset == 1400ms);
    // At 1 s + e the estimate is 10 * (1 - e) + 0; one more fits when it
    // drops to 9, i.e. at e = 100 ms.
    REQUIRE(refused.retry_after == 500ms);
    REQUIRE_FALSE(check(s, p, 1100ms - 1ns).allowed);
    const decision ok = check(s, p, 1100ms);
    REQUIRE(ok.allowed);
    REQUIRE(ok.remaining == 0);
    REQUIRE(ok.reset == 1900ms);  // the new request lives in [1 s, 2 s), weighs until 3 s

    // Half way through, 10 * 0.5 + 1 = 6 used: 4 remain after the next one.
    const decision half = check(s, p, 1500ms);
    REQUIRE(half.allowed);
    REQUIRE(half.remaining == 3);

    REQUIRE_FALSE(is_fresh(s, p, 3s - 1ns));
    REQUIRE(is_fresh(s, p, 3s));
}

TEST_CASE("sliding window: a full current window waits into the next one", "[rate][sliding]") {
    const auto p = policy(algorithm_kind::sliding_window, 2, 1s);
    bucket_state s;
    REQUIRE(take(s, p, 200ms, 2) == 2);
    const decision refused = check(s, p, 300ms);
    // At 1 s + e: 2 * (1 - e) + 1 <= 2 once e >= 0.5.
    REQUIRE(refused.retry_after == 1200ms);
    REQUIRE_FALSE(check(s, p, 1500ms - 1ns).allowed);
    REQUIRE(check(s, p, 1500ms).allowed);
}

TEST_CASE("limit 0 refuses everything and stores nothing", "[rate]") {
    const auto kind = GENERATE(algorithm_kind::gcra, algorithm_kind::token_bucket,
                               algorithm_kind::fixed_window, algorithm_kind::sliding_window);
    const auto p = policy(kind, 0, 1s);
    bucket_state s;
    const decision d = check(s, p, 10s);
    REQUIRE_FALSE(d.allowed);
    REQUIRE(d.remaining == 0);
    REQUIRE(d.retry_after == 1s);
    REQUIRE(d.reset == 0ns);
    REQUIRE(s.time == 0);
    REQUIRE(s.value == 0);
}

TEST_CASE("a clock stepping back never grants extra capacity", "[rate]") {
    const auto kind = GENERATE(algorithm_kind::gcra, algorithm_kind::token_bucket,
                               algorithm_kind::fixed_window, algorithm_kind::sliding_window);
    CAPTURE(static_cast<int>(kind));
    const auto p = policy(kind, 4, 1s);
    bucket_state s;
    REQUIRE(take(s, p, 10s, 4) == 4);
    REQUIRE(take(s, p, 10s - 1ms, 4) == 0);
    REQUIRE(take(s, p, 10s, 4) == 0);
}

// Random walks checking the contract itself, for every algorithm and awkward
// windows: `remaining` more pass right now and then no more; nothing passes
// one nanosecond before `retry_after`, something passes at it; the state is
// fresh at exactly `reset`, not a nanosecond earlier.
TEST_CASE("contract holds for random traffic", "[rate][property]") {
    const auto kind = GENERATE(algorithm_kind::gcra, algorithm_kind::token_bucket,
                               algorithm_kind::fixed_window, algorithm_kind::sliding_window);
    const nanoseconds window = GENERATE(nanoseconds{1s}, nanoseconds{7ms}, nanoseconds{333});
    const std::uint64_t limit = GENERATE(1u, 3u, 17u);
    const std::uint64_t burst = GENERATE(0u, 40u);
    CAPTURE(static_cast<int>(kind), window.count(), limit, burst);
    const auto p = policy(kind, limit, window, burst);

    std::mt19937_64 rng{42};
    std::uniform_int_distribution<std::int64_t> step{0, window.count() / 2 + 1};
    bucket_state s;
    nanoseconds now{window.count() * 5 + 11};
    for (int i = 0; i < 400; ++i) {
        now += nanoseconds{step(rng)};
        const decision d = check(s, p, now);
        REQUIRE(d.limit == limit);
        REQUIRE(d.reset >= 0ns);

        {
            bucket_state copy = s;
            for (std::uint64_t k = 0; k < d.remaining; ++k) {
                REQUIRE(check(copy, p, now).allowed);
            }
            REQUIRE_FALSE(check(copy, p, now).allowed);
        }
        REQUIRE(is_fresh(s, p, now + d.reset));
        if (d.reset > 0ns) {
            REQUIRE_FALSE(is_fresh(s, p, now + d.reset - 1ns));
        }
        if (d.allowed) {
            REQUIRE(d.retry_after == 0ns);
        } else {
            REQUIRE(d.remaining == 0);
            REQUIRE(d.retry_after > 0ns);
            bucket_state early = s;
            REQUIRE_FALSE(check(early, p, now + d.retry_after - 1ns).allowed);
            bucket_state on_time = s;
            REQUIRE(check(on_time, p, now + d.retry_after).allowed);
        }
    }
}

TEST_CASE("gcra and token bucket decide identically", "[rate][gcra][token_bucket]") {
    std::mt19937_64 rng{7};
    for (int round = 0; round < 50; ++round) {
        const std::uint64_t limit = 1 + rng() % 50;
        const nanoseconds window{1 + static_cast<std::int64_t>(rng() % 5'000'000'000)};
        const std::uint64_t burst = rng() % 3 == 0 ? 0 : 1 + rng() % 100;
        const auto g = policy(algorithm_kind::gcra, limit, window, burst);
        const auto t = policy(algorithm_kind::token_bucket, limit, window, burst);
        bucket_state sg;
        bucket_state st;
        nanoseconds now{1s};
        for (int i = 0; i < 300; ++i) {
            now += nanoseconds{static_cast<std::int64_t>(rng() % (window.count() / limit + 2))};
            const decision a = check(sg, g, now);
            const decision b = check(st, t, now);
            REQUIRE(a.allowed == b.allowed);
            REQUIRE(a.remaining == b.remaining);
            REQUIRE(a.reset == b.reset);
            REQUIRE(a.retry_after == b.retry_after);
        }
    }
}

TEST_CASE("gcra stays exact when now * limit overflows 64 bits", "[rate][gcra]") {
    const auto kind = GENERATE(algorithm_kind::gcra, algorithm_kind::token_bucket);
    CAPTURE(static_cast<int>(kind));
    // One request per second expressed as a million per ~11.6 days, at a
    // clock reading of 127 years: now * limit needs more than 64 bits.
    const auto p = policy(kind, 1'000'000, std::chrono::seconds{1'000'000}, 1);
    const nanoseconds t0{4'000'000'000'000'000'000};
    bucket_state s;
    REQUIRE(check(s, p, t0).allowed);
    const decision refused = check(s, p, t0 + 1s - 1ns);
    REQUIRE_FALSE(refused.allowed);
    REQUIRE(refused.retry_after == 1ns);
    REQUIRE(check(s, p, t0 + 1s).allowed);
    REQUIRE(check(s, p, t0 + 1s).retry_after == 1s);
}
