// Cost of one rate-limit decision through the shared rate_limiter, with the
// production clock: single thread and two threads, on many distinct keys
// (cache-cold map, little contention) and on one shared key (one shard, one
// mutex, maximum contention).

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "tollgate/limit/algorithms.hpp"
#include "tollgate/limit/clock.hpp"
#include "tollgate/limit/headers.hpp"
#include "tollgate/limit/rate_limiter.hpp"

namespace {

using tollgate::limit::bucket_policy;
using tollgate::limit::rate_limiter;

constexpr std::size_t keys_per_thread = 1 << 17;

const tollgate::limit::steady_clock& production_clock() {
    static const tollgate::limit::steady_clock clock;
    return clock;
}

rate_limiter& shared_limiter() {
    static rate_limiter limiter{production_clock(), 1'000'000};
    return limiter;
}

const bucket_policy default_policy{};  // gcra, 600 per 60 s

/// `tok:` + 64 hex digits, like keys derived from bearer tokens.
std::vector<std::string> make_keys(std::uint64_t salt) {
    std::vector<std::string> keys;
    keys.reserve(keys_per_thread);
    std::uint64_t x = salt * 0x9e3779b97f4a7c15ull;
    char buf[4 + 64 + 1];
    for (std::size_t i = 0; i < keys_per_thread; ++i) {
        int pos = std::snprintf(buf, sizeof buf, "tok:");
        for (int part = 0; part < 4; ++part) {
            x += 0x9e3779b97f4a7c15ull;
            std::uint64_t z = x;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            z ^= z >> 31;
            pos += std::snprintf(buf + pos, sizeof buf - static_cast<std::size_t>(pos), "%016llx",
                                 static_cast<unsigned long long>(z));
        }
        keys.emplace_back(buf, static_cast<std::size_t>(pos));
    }
    return keys;
}

const std::vector<std::string>& thread_keys(int thread) {
    static const std::vector<std::string> sets[] = {make_keys(1), make_keys(2), make_keys(3),
                                                    make_keys(4)};
    return sets[thread % 4];
}

void bm_check_distinct_keys(benchmark::State& state) {
    const auto& keys = thread_keys(state.thread_index());
    rate_limiter& limiter = shared_limiter();
    std::size_t i = 0;
    for (auto _ : state) {
        benchmark::DoNotOptimize(limiter.check(keys[i], default_policy));
        i = (i + 1) & (keys_per_thread - 1);
    }
    state.SetItemsProcessed(state.iterations());
}

void bm_check_shared_key(benchmark::State& state) {
    rate_limiter& limiter = shared_limiter();
    for (auto _ : state) {
        benchmark::DoNotOptimize(limiter.check("org:acme", default_policy));
    }
    state.SetItemsProcessed(state.iterations());
}

/// The algorithm alone: no hash, no map, no lock.
void bm_gcra_only(benchmark::State& state) {
    tollgate::limit::bucket_state s{};
    const auto& clock = production_clock();
    for (auto _ : state) {
        benchmark::DoNotOptimize(tollgate::limit::check(s, default_policy, clock.now()));
    }
}

/// The clock read every decision pays for (vDSO; slow on some VMs).
void bm_steady_clock(benchmark::State& state) {
    const auto& clock = production_clock();
    for (auto _ : state) {
        benchmark::DoNotOptimize(clock.now());
    }
}

/// The algorithm with a fixed time: pure arithmetic.
void bm_gcra_fixed_time(benchmark::State& state) {
    tollgate::limit::bucket_state s{};
    std::chrono::nanoseconds now{1'000'000'000'000};
    for (auto _ : state) {
        now += std::chrono::milliseconds{100};
        benchmark::DoNotOptimize(tollgate::limit::check(s, default_policy, now));
    }
}

/// Decision to headers, as done for every limited response.
void bm_headers(benchmark::State& state) {
    tollgate::limit::decision d{
        true, 600, 599, std::chrono::milliseconds{100}, {}, std::chrono::seconds{60}};
    for (auto _ : state) {
        tollgate::limit::rate_limit_headers h{d, tollgate::headers_mode::both};
        benchmark::DoNotOptimize(h);
    }
}

}  // namespace

BENCHMARK(bm_check_distinct_keys)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(bm_check_shared_key)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(bm_gcra_only);
BENCHMARK(bm_gcra_fixed_time);
BENCHMARK(bm_steady_clock);
BENCHMARK(bm_headers);

BENCHMARK_MAIN();
