#include "tollgate/limit/headers.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>

namespace tollgate::limit {
namespace {

/// Appends text to a fixed buffer; the buffers are sized for the longest
/// possible output (every number at 20 digits), so this never truncates.
class writer {
public:
    writer(char* first, char* last) noexcept : pos_{first}, last_{last} {}

    void text(std::string_view s) noexcept {
        // An empty view may carry a null pointer, which memcpy must not see.
        if (!s.empty()) {
            std::memcpy(pos_, s.data(), s.size());
            pos_ += s.size();
        }
    }

    void number(std::uint64_t v) noexcept { pos_ = std::to_chars(pos_, last_, v).ptr; }

    char* pos() const noexcept { return pos_; }

private:
    char* pos_;
    char* last_;
};

}  // namespace

std::uint64_t ceil_seconds(std::chrono::nanoseconds d) noexcept {
    if (d.count() <= 0) {
        return 0;
    }
    constexpr std::uint64_t per_second = 1'000'000'000;
    const auto ns = static_cast<std::uint64_t>(d.count());
    return ns / per_second + (ns % per_second != 0 ? 1 : 0);
}

std::uint64_t retry_after_seconds(std::chrono::nanoseconds d) noexcept {
    const std::uint64_t s = ceil_seconds(d);
    return s == 0 ? 1 : s;
}

void rate_limit_headers::add(std::string_view name, std::string_view prefix, std::uint64_t a,
                             std::string_view middle, std::uint64_t b, bool two) noexcept {
    writer w{buffer_.data() + used_, buffer_.data() + buffer_.size()};
    w.text(prefix);
    w.number(a);
    if (two) {
        w.text(middle);
        w.number(b);
    }
    const auto end = static_cast<std::uint16_t>(w.pos() - buffer_.data());
    fields_[count_++] = {name, used_, static_cast<std::uint16_t>(end - used_)};
    used_ = end;
}

rate_limit_headers::rate_limit_headers(const decision& d, headers_mode mode) noexcept {
    const std::uint64_t reset = ceil_seconds(d.reset);
    if (mode == headers_mode::draft || mode == headers_mode::both) {
        add("X-RateLimit-Limit", {}, d.limit);
        add("X-RateLimit-Remaining", {}, d.remaining);
        add("X-RateLimit-Reset", {}, reset);
    }
    if (mode == headers_mode::ietf || mode == headers_mode::both) {
        // A window under a second still has to be announced as a whole number.
        const std::uint64_t window = std::max<std::uint64_t>(ceil_seconds(d.window), 1);
        add("RateLimit-Policy", "\"default\";q=", d.limit, ";w=", window, true);
        add("RateLimit", "\"default\";r=", d.remaining, ";t=", reset, true);
    }
    if (!d.allowed) {
        add("Retry-After", {}, retry_after_seconds(d.retry_after));
    }
}

refusal_body::refusal_body(refusal_reason reason, std::uint64_t retry_after_seconds) noexcept {
    writer w{buffer_.data(), buffer_.data() + buffer_.size()};
    w.text(R"({"error":"rate limit exceeded","reason":")");
    w.text(reason == refusal_reason::rate          ? "rate"
           : reason == refusal_reason::concurrency ? "concurrency"
                                                   : "tunnels");
    w.text(R"(","retry_after":)");
    w.number(retry_after_seconds);
    w.text("}");
    length_ = static_cast<std::size_t>(w.pos() - buffer_.data());
}

}  // namespace tollgate::limit
