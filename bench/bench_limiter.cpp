// Cost of one rate-limit decision through the shared rate_limiter, with the
// production clock: single thread and two threads, on many distinct keys
// (cache-cold map, little contention; in round robin and in random order)
// and on one shared key (one shard, one mutex, maximum contention). Two
// references put the many-keys figures in context: the same decision over
// 4096 keys whose map fits in the caches, and one dependent memory load over
// a working set as large as the map of the many-keys case (a pointer chase),
// so a decision can be read as a multiple of one cache miss measured in the
// same run.

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "tollgate/limit/algorithms.hpp"
#include "tollgate/limit/clock.hpp"
#include "tollgate/limit/headers.hpp"
#include "tollgate/limit/rate_limiter.hpp"

namespace {

using tollgate::limit::bucket_policy;
using tollgate::limit::rate_limiter;

constexpr std::size_t keys_per_thread = 1 << 17;
/// Few enough keys that their entries stay in L2 (production limiter size).
constexpr std::size_t resident_keys = 4096;

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
std::vector<std::string> make_keys(std::uint64_t salt, std::size_t count = keys_per_thread) {
    std::vector<std::string> keys;
    keys.reserve(count);
    std::uint64_t x = salt * 0x9e3779b97f4a7c15ull;
    char buf[4 + 64 + 1];
    for (std::size_t i = 0; i < count; ++i) {
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

/// One thread's keys laid out flat (68 bytes each), for random picks.
const std::vector<char>& flat_keys(int thread) {
    const auto flatten = [](const std::vector<std::string>& keys) {
        std::vector<char> flat;
        for (const std::string& key : keys) {
            flat.insert(flat.end(), key.begin(), key.end());
        }
        return flat;
    };
    static const std::vector<char> sets[] = {flatten(thread_keys(0)), flatten(thread_keys(1))};
    return sets[thread % 2];
}

/// The same keys as bm_check_distinct_keys, picked uniformly at random.
/// Round robin is kind to an LRU list: the key asked for is always the
/// least recently used one, and the neighbour its update writes to is the
/// next key asked for, so each decision warms the cache for the next. Here
/// the neighbours are random entries, as with real traffic. The next key's
/// bytes are prefetched one round ahead: fetching them is not the limiter's
/// cost.
void bm_check_random_keys(benchmark::State& state) {
    const std::vector<char>& flat = flat_keys(state.thread_index());
    const std::size_t key_size = thread_keys(0)[0].size();
    rate_limiter& limiter = shared_limiter();
    // Every key in the map before timing starts: this measures known keys.
    for (const std::string& key : thread_keys(state.thread_index())) {
        limiter.check(key, default_policy);
    }
    std::uint64_t x = 0x2545f4914f6cdd1dull + static_cast<std::uint64_t>(state.thread_index());
    const auto pick = [&x] {
        x = x * 6364136223846793005ull + 1442695040888963407ull;  // LCG, top bits
        return static_cast<std::size_t>(x >> (64 - 17));
    };
    static_assert(keys_per_thread == std::size_t{1} << 17);
    std::size_t next = pick();
    for (auto _ : state) {
        const char* key = flat.data() + next * key_size;
        next = pick();
        __builtin_prefetch(flat.data() + next * key_size);
        __builtin_prefetch(flat.data() + next * key_size + key_size - 1);
        benchmark::DoNotOptimize(limiter.check(std::string_view{key, key_size}, default_policy));
    }
    state.SetItemsProcessed(state.iterations());
}

/// Many keys, but a map small enough to stay in the caches: the decision
/// without DRAM misses. Its own limiter, so the keys of the other cases do
/// not share its shards.
void bm_check_resident_keys(benchmark::State& state) {
    static const std::vector<std::string> keys = make_keys(9, resident_keys);
    static rate_limiter limiter{production_clock(), 1'000'000};
    std::size_t i = 0;
    for (auto _ : state) {
        benchmark::DoNotOptimize(limiter.check(keys[i], default_policy));
        i = (i + 1) & (resident_keys - 1);
    }
    state.SetItemsProcessed(state.iterations());
}

/// Bytes the map of bm_check_distinct_keys/threads:1 holds: a limiter like
/// the shared one after one pass over one thread's keys.
std::size_t distinct_keys_map_bytes() {
    static const std::size_t bytes = [] {
        rate_limiter limiter{production_clock(), 1'000'000};
        for (const std::string& key : thread_keys(0)) {
            limiter.check(key, default_policy);
        }
        return limiter.memory_bytes();
    }();
    return bytes;
}

/// One dependent load per iteration through a random cycle of cache lines
/// over as many bytes as the distinct-keys map: the price of one miss there.
void bm_pointer_chase_map_size(benchmark::State& state) {
    struct alignas(64) line {
        std::uint32_t next;
    };
    static_assert(sizeof(line) == 64);
    const std::size_t bytes = distinct_keys_map_bytes();
    std::vector<line> lines(bytes / sizeof(line));
    // Sattolo's shuffle: one cycle through every line, in an order no
    // prefetcher can follow.
    std::vector<std::uint32_t> order(lines.size());
    std::iota(order.begin(), order.end(), 0u);
    std::mt19937_64 rng{42};
    for (std::size_t i = order.size() - 1; i > 0; --i) {
        std::uniform_int_distribution<std::size_t> pick{0, i - 1};
        std::swap(order[i], order[pick(rng)]);
    }
    for (std::size_t i = 0; i < order.size(); ++i) {
        lines[i].next = order[i];
    }
    std::uint32_t at = 0;
    for (auto _ : state) {
        at = lines[at].next;
        benchmark::DoNotOptimize(at);
    }
    state.counters["bytes"] = static_cast<double>(bytes);
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
BENCHMARK(bm_check_random_keys)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(bm_check_shared_key)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(bm_check_resident_keys)->UseRealTime();
BENCHMARK(bm_pointer_chase_map_size)->UseRealTime();
BENCHMARK(bm_gcra_only);
BENCHMARK(bm_gcra_fixed_time);
BENCHMARK(bm_steady_clock);
BENCHMARK(bm_headers);

BENCHMARK_MAIN();
