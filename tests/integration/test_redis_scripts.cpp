// The Lua scripts of the Redis store, run by a real redis-server, against
// limit::check. Most cases pass the scripts' test-only 4th argument (`now`
// in microseconds), because Redis TIME cannot be moved: that replaces only
// where `now` comes from, the arithmetic is the production path, so the
// boundaries (999 ms vs 1000 ms) can be hit to the microsecond. The last
// cases run without it, on Redis' own clock.

#include <catch2/catch.hpp>

#include <chrono>
#include <random>
#include <thread>

#include "redis_server.hpp"
#include "tollgate/limit/algorithms.hpp"
#include "tollgate/store/redis_scripts.hpp"

using namespace tollgate;
using namespace tollgate::test;
using namespace std::chrono_literals;
using std::chrono::microseconds;
using std::chrono::nanoseconds;

namespace {

/// About 2024 in Unix microseconds: realistic magnitudes (~2^51).
constexpr std::int64_t base_us = 1'717'000'000'000'000;
constexpr long long ttl_hook_ms = 1'000'000'000;

const algorithm_kind all_algorithms[] = {algorithm_kind::gcra, algorithm_kind::token_bucket,
                                         algorithm_kind::fixed_window,
                                         algorithm_kind::sliding_window};

/// Runs the algorithm's script once; `now_us` < 0 means Redis TIME.
limit::decision run(redis_server& redis, const std::string& key, const limit::bucket_policy& p,
                    std::int64_t now_us = -1) {
    const auto& script = store::script_for(p.algorithm);
    const auto args = store::script_args(p);
    std::vector<std::string> words{"EVALSHA",  script.sha1,    "1",       key,
                                   args.limit, args.window_us, args.burst};
    if (now_us >= 0) {
        words.push_back(std::to_string(now_us));
    }
    auto reply = redis.command(words);
    if (reply.type == redis_value::kind::error && reply.text.starts_with("NOSCRIPT")) {
        redis.command({"SCRIPT", "LOAD", script.source});
        reply = redis.command(words);
    }
    INFO("reply: " << reply.text);
    REQUIRE(reply.type == redis_value::kind::array);
    REQUIRE(reply.elements.size() == 4);
    return store::decision_from_reply(reply.elements[0].integer, reply.elements[1].integer,
                                      reply.elements[2].integer, reply.elements[3].integer, p);
}

void require_same(const limit::decision& redis, const limit::decision& memory) {
    CHECK(redis.allowed == memory.allowed);
    CHECK(redis.limit == memory.limit);
    CHECK(redis.remaining == memory.remaining);
    CHECK(redis.reset.count() == memory.reset.count());
    CHECK(redis.retry_after.count() == memory.retry_after.count());
    CHECK(redis.window.count() == memory.window.count());
}

/// Milliseconds the script gave the key (the test hook adds ttl_hook_ms).
long long ttl_ms(redis_server& redis, const std::string& key) {
    return redis.command({"PTTL", key}).integer - ttl_hook_ms;
}

std::string name_of(algorithm_kind a) {
    return std::string(store::script_for(a).name);
}

}  // namespace

TEST_CASE("the scripts' SHA-1s are the ones Redis computes", "[redis][scripts]") {
    redis_server redis;
    for (auto a : all_algorithms) {
        const auto& script = store::script_for(a);
        auto loaded = redis.command({"SCRIPT", "LOAD", script.source});
        CHECK(loaded.text == script.sha1);
    }
}

TEST_CASE("at the boundary: one per second, 999 ms refused, 1000 ms allowed, as in memory",
          "[redis][scripts]") {
    redis_server redis;
    for (auto a : all_algorithms) {
        INFO(name_of(a));
        const limit::bucket_policy p{a, 1, 1s, 0};
        const std::string key = "boundary:" + name_of(a);
        // Sliding windows are aligned to the epoch: start on a window edge.
        const std::int64_t t0 = base_us - base_us % 1'000'000;
        limit::bucket_state memory;
        for (std::int64_t at : {t0, t0 + 999'000, t0 + 999'999, t0 + 1'000'000}) {
            INFO("at +" << (at - t0) << " us");
            require_same(run(redis, key, p, at), limit::check(memory, p, microseconds{at}));
        }
        limit::bucket_state fresh;
        auto first = limit::check(fresh, p, microseconds{t0});
        CHECK(first.allowed);
        auto refused = limit::check(fresh, p, microseconds{t0 + 999'000});
        CHECK_FALSE(refused.allowed);
        if (a != algorithm_kind::sliding_window) {
            CHECK(refused.retry_after == 1ms);
        }
    }
}

TEST_CASE("random request sequences decide exactly as limit::check, for every algorithm",
          "[redis][scripts]") {
    redis_server redis;
    std::mt19937_64 rng(20240611);
    struct shape {
        std::uint64_t limit;
        std::chrono::milliseconds window;
        std::uint64_t burst;
    };
    const shape shapes[] = {{1, 1000ms, 0}, {3, 7ms, 0},       {10, 1000ms, 25},   {600, 60s, 0},
                            {7, 3600s, 0},  {1000, 1000ms, 1}, {97, 1500ms, 0},    {100000, 60s, 0},
                            {5, 250ms, 9},  {2, 86400s, 0},    {4096, 10ms, 8192}, {13, 999ms, 0}};
    for (auto a : all_algorithms) {
        int case_number = 0;
        for (const auto& s : shapes) {
            const limit::bucket_policy p{a, s.limit, s.window, s.burst};
            const std::string key = "random:" + name_of(a) + ":" + std::to_string(case_number++);
            INFO(name_of(a) << " limit " << s.limit << " window " << s.window.count()
                            << " ms burst " << s.burst);
            const std::int64_t window_us = s.window.count() * 1000;
            std::int64_t now = base_us + static_cast<std::int64_t>(rng() % 1'000'000);
            limit::bucket_state memory;
            for (int i = 0; i < 120; ++i) {
                // Mostly bursts at one instant and small steps, sometimes a
                // window's worth or exactly the time a refusal said.
                switch (rng() % 6) {
                    case 0:
                    case 1:
                        break;
                    case 2:
                        now += static_cast<std::int64_t>(rng() % 1000);
                        break;
                    case 3:
                        now += static_cast<std::int64_t>(rng() % (window_us / 4 + 1));
                        break;
                    case 4:
                        now += static_cast<std::int64_t>(rng() % (2 * window_us + 1));
                        break;
                    default:
                        now += window_us / static_cast<std::int64_t>(s.limit) + 1;
                        break;
                }
                INFO("step " << i << " at " << now);
                auto expected = limit::check(memory, p, microseconds{now});
                auto got = run(redis, key, p, now);
                require_same(got, expected);
                if (got.allowed) {
                    // The key lives exactly until the bucket is fresh again.
                    const long long want = (expected.reset.count() + 999'999) / 1'000'000;
                    const long long ttl = ttl_ms(redis, key);
                    CHECK(ttl <= std::max(want, 1LL));
                    CHECK(ttl >= std::max(want, 1LL) - 50);
                }
                // Jump to the retry time the refusal promised: it must pass there.
                if (!expected.allowed && rng() % 3 == 0) {
                    const auto wait =
                        std::chrono::duration_cast<microseconds>(expected.retry_after + 999ns);
                    now += wait.count();
                }
            }
        }
    }
}

TEST_CASE("a refused request writes nothing", "[redis][scripts]") {
    redis_server redis;
    for (auto a : all_algorithms) {
        INFO(name_of(a));
        const limit::bucket_policy p{a, 2, 10s, 0};
        const std::string key = "refused:" + name_of(a);
        CHECK(run(redis, key, p, base_us).allowed);
        CHECK(run(redis, key, p, base_us).allowed);
        const auto before = redis.command({"GET", key}).text;
        CHECK_FALSE(run(redis, key, p, base_us + 5).allowed);
        CHECK(redis.command({"GET", key}).text == before);
    }
}

TEST_CASE("on Redis' own clock the window runs and the key expires when fresh",
          "[redis][scripts]") {
    redis_server redis;
    SECTION("fixed window of 300 ms") {
        const limit::bucket_policy p{algorithm_kind::fixed_window, 2, 300ms, 0};
        const std::string key = "clock:fixed";
        auto first = run(redis, key, p);
        CHECK(first.allowed);
        CHECK(first.remaining == 1);
        CHECK(first.reset <= 300ms);
        CHECK(first.reset > 250ms);
        CHECK(run(redis, key, p).allowed);
        auto refused = run(redis, key, p);
        CHECK_FALSE(refused.allowed);
        CHECK(refused.retry_after > 0ns);
        CHECK(refused.retry_after <= 300ms);
        const auto ttl = redis.command({"PTTL", key}).integer;
        CHECK(ttl > 0);
        CHECK(ttl <= 300);
        // Gone once the window is over, and a new window opens.
        const auto deadline = std::chrono::steady_clock::now() + 2s;
        while (redis.command({"EXISTS", key}).integer == 1 &&
               std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(5ms);
        }
        CHECK(redis.command({"EXISTS", key}).integer == 0);
        auto again = run(redis, key, p);
        CHECK(again.allowed);
        CHECK(again.remaining == 1);
    }
    SECTION("gcra 10 per second: the key lives one emission interval") {
        const limit::bucket_policy p{algorithm_kind::gcra, 10, 1s, 0};
        const std::string key = "clock:gcra";
        auto d = run(redis, key, p);
        CHECK(d.allowed);
        CHECK(d.remaining == 9);
        CHECK(d.reset == 100ms);
        const auto ttl = redis.command({"PTTL", key}).integer;
        CHECK(ttl > 0);
        CHECK(ttl <= 100);
    }
}

TEST_CASE("Redis' clock stepping back charges nothing: time stands still until it is back",
          "[redis][scripts]") {
    // TIME is the wall clock. 90 s back used to count as -90 s elapsed in
    // GCRA: 900 requests' worth of backlog, every busy key refused for ~30 s.
    redis_server redis;
    const std::int64_t t0 = base_us - base_us % 1'000'000;  // a window edge
    const std::int64_t step = 90'000'000;
    SECTION("gcra and token bucket: no charge, no refill") {
        for (auto a : {algorithm_kind::gcra, algorithm_kind::token_bucket}) {
            INFO(name_of(a));
            const limit::bucket_policy p{a, 10, 1s, 0};
            const std::string key = "step:" + name_of(a);
            for (int i = 0; i < 6; ++i) {
                REQUIRE(run(redis, key, p, t0).allowed);
            }
            // Behind the last allowed request: as if no time passed since it,
            // and the bucket is fresh 90 s + 700 ms of real time from now.
            auto back = run(redis, key, p, t0 - step);
            CHECK(back.allowed);
            CHECK(back.remaining == 3);
            CHECK(back.reset == 90'700ms);
            CHECK(ttl_ms(redis, key) <= 90'700);
            CHECK(ttl_ms(redis, key) > 90'600);
            // Still behind: nothing refills.
            CHECK(run(redis, key, p, t0 - step + 1'000'000).remaining == 2);
            for (int i = 0; i < 2; ++i) {
                CHECK(run(redis, key, p, t0 - 1).allowed);
            }
            auto refused = run(redis, key, p, t0 - 1);
            CHECK_FALSE(refused.allowed);
            CHECK(refused.retry_after == 100'001us);  // 100 ms after t0, from 1 us before it
            // Back past the anchor, time runs again from there.
            auto later = run(redis, key, p, t0 + 100'000);
            CHECK(later.allowed);
            CHECK(later.remaining == 0);
            CHECK(later.reset == 1000ms);
        }
    }
    SECTION("fixed window: the window and its count stay until the clock reaches its end") {
        const limit::bucket_policy p{algorithm_kind::fixed_window, 10, 1s, 0};
        for (int i = 0; i < 6; ++i) {
            REQUIRE(run(redis, "step:fixed", p, t0).allowed);
        }
        auto back = run(redis, "step:fixed", p, t0 - step);
        CHECK(back.allowed);
        CHECK(back.remaining == 3);
        CHECK(back.reset == 91s);
    }
    SECTION("sliding window: the previous window's weight does not fade back in") {
        const limit::bucket_policy p{algorithm_kind::sliding_window, 10, 1s, 0};
        const std::string key = "step:sliding";
        for (int i = 0; i < 8; ++i) {
            REQUIRE(run(redis, key, p, t0).allowed);
        }
        // 0.9 s into the next window the previous 8 weigh 0.8.
        auto at = run(redis, key, p, t0 + 1'900'000);
        CHECK(at.allowed);
        CHECK(at.remaining == 8);
        // Stepped back: weighed as at the last allowed request (0.8 + 1
        // taken), not as at the window's start (8 + 1 taken, remaining 0).
        auto back = run(redis, key, p, t0 + 1'900'000 - step);
        CHECK(back.allowed);
        CHECK(back.remaining == 7);
        CHECK(back.reset == 91'100ms);
    }
}

TEST_CASE("a sliding-window state written without its last field still reads", "[redis][scripts]") {
    redis_server redis;
    const limit::bucket_policy p{algorithm_kind::sliding_window, 10, 1s, 0};
    const std::int64_t t0 = base_us - base_us % 1'000'000;
    redis.command({"SET", "old:sliding", std::to_string(t0) + " 0 4"});
    auto d = run(redis, "old:sliding", p, t0 + 500'000);
    CHECK(d.allowed);
    CHECK(d.remaining == 5);
}
