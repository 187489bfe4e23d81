// Rate-limit decisions as response headers and 429 bodies (DESIGN.md section 5).

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <string>

#include "tollgate/limit/headers.hpp"

using namespace std::chrono_literals;
using tollgate::headers_mode;
using tollgate::limit::ceil_seconds;
using tollgate::limit::decision;
using tollgate::limit::rate_limit_headers;
using tollgate::limit::refusal_body;
using tollgate::limit::refusal_reason;
using tollgate::limit::retry_after_seconds;

namespace {

std::map<std::string, std::string> as_map(const rate_limit_headers& h) {
    std::map<std::string, std::string> m;
    h.for_each([&](const tollgate::limit::header_field& f) {
        m.emplace(std::string{f.name}, std::string{f.value});
    });
    REQUIRE(m.size() == h.size());  // no header twice
    return m;
}

decision allowed_600() {
    decision d;
    d.allowed = true;
    d.limit = 600;
    d.remaining = 599;
    d.reset = 60s;
    d.window = 60s;
    return d;
}

}  // namespace

TEST_CASE("seconds round up, Retry-After is at least 1", "[rate][headers]") {
    REQUIRE(ceil_seconds(0ns) == 0);
    REQUIRE(ceil_seconds(-5s) == 0);
    REQUIRE(ceil_seconds(1ns) == 1);
    REQUIRE(ceil_seconds(999ms) == 1);
    REQUIRE(ceil_seconds(1000ms) == 1);
    REQUIRE(ceil_seconds(1000ms + 1ns) == 2);
    REQUIRE(ceil_seconds(60s) == 60);
    REQUIRE(retry_after_seconds(0ns) == 1);
    REQUIRE(retry_after_seconds(1ms) == 1);
    REQUIRE(retry_after_seconds(1500ms) == 2);
}

TEST_CASE("draft headers", "[rate][headers]") {
    const auto m = as_map(rate_limit_headers{allowed_600(), headers_mode::draft});
    REQUIRE(m == std::map<std::string, std::string>{{"X-RateLimit-Limit", "600"},
                                                    {"X-RateLimit-Remaining", "599"},
                                                    {"X-RateLimit-Reset", "60"}});
}

TEST_CASE("reset is whole seconds rounded up", "[rate][headers]") {
    decision d = allowed_600();
    d.reset = 100ms;
    REQUIRE(as_map(rate_limit_headers{d, headers_mode::draft})["X-RateLimit-Reset"] == "1");
    d.reset = 60s + 1ns;
    REQUIRE(as_map(rate_limit_headers{d, headers_mode::draft})["X-RateLimit-Reset"] == "61");
    d.reset = 0ns;
    REQUIRE(as_map(rate_limit_headers{d, headers_mode::draft})["X-RateLimit-Reset"] == "0");
}

TEST_CASE("ietf headers", "[rate][headers]") {
    const auto m = as_map(rate_limit_headers{allowed_600(), headers_mode::ietf});
    REQUIRE(m == std::map<std::string, std::string>{{"RateLimit-Policy", R"("default";q=600;w=60)"},
                                                    {"RateLimit", R"("default";r=599;t=60)"}});

    decision short_window = allowed_600();
    short_window.window = 500ms;
    short_window.reset = 250ms;
    const auto s = as_map(rate_limit_headers{short_window, headers_mode::ietf});
    REQUIRE(s.at("RateLimit-Policy") == R"("default";q=600;w=1)");
    REQUIRE(s.at("RateLimit") == R"("default";r=599;t=1)");
}

TEST_CASE("both and none", "[rate][headers]") {
    const rate_limit_headers both{allowed_600(), headers_mode::both};
    REQUIRE(both.size() == 5);
    REQUIRE(both[0].name == "X-RateLimit-Limit");
    REQUIRE(both[4].name == "RateLimit");
    const rate_limit_headers none{allowed_600(), headers_mode::none};
    REQUIRE(none.empty());
}

TEST_CASE("a refusal adds Retry-After in every mode", "[rate][headers]") {
    const auto mode =
        GENERATE(headers_mode::draft, headers_mode::ietf, headers_mode::both, headers_mode::none);
    decision d = allowed_600();
    d.allowed = false;
    d.remaining = 0;
    d.retry_after = 1100ms;
    const auto m = as_map(rate_limit_headers{d, mode});
    REQUIRE(m.at("Retry-After") == "2");
    REQUIRE(m.size() == (mode == headers_mode::none   ? 1u
                         : mode == headers_mode::both ? 6u
                         : mode == headers_mode::ietf ? 3u
                                                      : 4u));
    if (mode == headers_mode::draft) {
        REQUIRE(m.at("X-RateLimit-Remaining") == "0");
    }
}

TEST_CASE("largest values fit and copies stay valid", "[rate][headers]") {
    decision d;
    d.allowed = false;
    d.limit = std::numeric_limits<std::uint64_t>::max();
    d.remaining = std::numeric_limits<std::uint64_t>::max();
    d.reset = std::chrono::nanoseconds::max();
    d.retry_after = std::chrono::nanoseconds::max();
    d.window = std::chrono::nanoseconds::max();
    const std::string max = "18446744073709551615";
    const std::string secs = std::to_string(ceil_seconds(std::chrono::nanoseconds::max()));

    rate_limit_headers copy{decision{}, headers_mode::none};
    {
        const rate_limit_headers original{d, headers_mode::both};
        copy = original;
    }
    const auto m = as_map(copy);
    REQUIRE(m.at("X-RateLimit-Limit") == max);
    REQUIRE(m.at("X-RateLimit-Remaining") == max);
    REQUIRE(m.at("RateLimit-Policy") == "\"default\";q=" + max + ";w=" + secs);
    REQUIRE(m.at("RateLimit") == "\"default\";r=" + max + ";t=" + secs);
    REQUIRE(m.at("Retry-After") == secs);
}

TEST_CASE("429 JSON body", "[rate][headers]") {
    REQUIRE(refusal_body{refusal_reason::rate, 7}.view() ==
            R"({"error":"rate limit exceeded","reason":"rate","retry_after":7})");
    REQUIRE(refusal_body{refusal_reason::concurrency, 1}.view() ==
            R"({"error":"rate limit exceeded","reason":"concurrency","retry_after":1})");
    REQUIRE(
        refusal_body{refusal_reason::concurrency, std::numeric_limits<std::uint64_t>::max()}
            .view() ==
        R"({"error":"rate limit exceeded","reason":"concurrency","retry_after":18446744073709551615})");
    REQUIRE(refusal_body::content_type == "application/json");
}
