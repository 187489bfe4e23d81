// Refused-key counts for /debug/keys: the counts and the span they cover
// must agree at every moment, or `refused / span` misreports a key's rate.

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "tollgate/admin/key_stats.hpp"
#include "tollgate/limit/clock.hpp"

using namespace std::chrono_literals;
using tollgate::admin::key_stats;
using tollgate::limit::manual_clock;

namespace {

double seconds(std::chrono::nanoseconds d) {
    return std::chrono::duration<double>(d).count();
}

}  // namespace

TEST_CASE("key_stats: refused over span is a steady key's rate on both sides of a window boundary",
          "[key_stats]") {
    // Windows are aligned on the clock's epoch: [960 s, 1020 s) is index 16.
    manual_clock clock{1000s};
    key_stats stats{clock, 60s};
    double lowest = 1e9;
    double highest = 0;
    // 10 refusals a second for five minutes; read after each one.
    for (int i = 0; i < 3000; ++i) {
        stats.refused("org:steady");
        const auto report = stats.top_refused(5);
        REQUIRE(report.keys.size() == 1);
        if (clock.now() >= 1060s) {  // a full window since construction
            const double rate = static_cast<double>(report.keys[0].refused) / seconds(report.span);
            lowest = std::min(lowest, rate);
            highest = std::max(highest, rate);
        }
        clock.advance(100ms);
    }
    INFO("rate read between " << lowest << " and " << highest << " /s");
    // Counting both ends of [since, now] adds at most one refusal in 60 s.
    CHECK(lowest >= 10.0);
    CHECK(highest <= 10.0 + 1.0 / 60 + 1e-9);
}

TEST_CASE("key_stats: span runs from the previous window's start, or from construction",
          "[key_stats]") {
    manual_clock clock{1000s};
    key_stats stats{clock, 60s};
    // Nothing before construction was counted, so none of it is in the span.
    clock.set(1010s);
    CHECK(stats.top_refused(5).span == 10s);
    clock.set(1030s);  // index 17 began at 1020 s; index 16 only from 1000 s
    CHECK(stats.top_refused(5).span == 30s);

    clock.set(1210s);  // index 20: [1200 s, 1260 s)
    for (int i = 0; i < 30; ++i) {
        stats.refused("tok:0123456789abcdef");
    }
    clock.set(1250s);
    auto report = stats.top_refused(5);
    REQUIRE(report.keys.size() == 1);
    CHECK(report.keys[0].key == "tok:0123456789ab");
    CHECK(report.keys[0].refused == 30);
    CHECK(report.span == 110s);  // since 1140 s
    clock.set(1260s);            // just past the boundary: one window, the burst still in it
    report = stats.top_refused(5);
    REQUIRE(report.keys.size() == 1);
    CHECK(report.keys[0].refused == 30);
    CHECK(report.span == 60s);  // since 1200 s, the burst's window
    clock.set(1319999ms);
    CHECK(stats.top_refused(5).keys.size() == 1);
    CHECK(stats.top_refused(5).span == 119999ms);
    clock.set(1320s);  // the burst's window is no longer covered, nor counted
    report = stats.top_refused(5);
    CHECK(report.keys.empty());
    CHECK(report.span == 60s);
}

TEST_CASE("key_stats: a flood of one-off keys stays bounded and leaves the heavy keys in",
          "[key_stats]") {
    manual_clock clock{1000s};
    key_stats stats{clock, 60s, 1024};  // 64 entries per shard
    for (int i = 0; i < 50; ++i) {
        for (const char* heavy : {"org:a", "org:b", "org:c"}) {
            stats.refused(heavy);
        }
    }
    for (int i = 0; i < 100000; ++i) {
        stats.refused("ip:10.0." + std::to_string(i / 256 % 256) + "." + std::to_string(i % 256) +
                      "#" + std::to_string(i));
    }
    const auto all = stats.top_refused(1000000);
    CHECK(all.keys.size() <= 1024);
    CHECK(all.keys.size() > 1024 * 9 / 10);
    const auto top = stats.top_refused(3);
    REQUIRE(top.keys.size() == 3);
    CHECK(top.keys[0].key == "org:a");
    CHECK(top.keys[0].refused == 50);
    CHECK(top.keys[1].key == "org:b");
    CHECK(top.keys[2].key == "org:c");
}
