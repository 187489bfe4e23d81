#pragma once
/// @file headers.hpp
/// Protocol glue: a rate-limit `decision` as response headers and the 429
/// JSON body (DESIGN.md section 5). Values are formatted into small fixed
/// buffers inside the returned objects: nothing here allocates.
///
/// Thread-safety: plain values; build one per response.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tollgate/config/config.hpp"
#include "tollgate/limit/algorithms.hpp"

namespace tollgate::limit {

/// Whole seconds, rounded up (so a client that waits this long is never
/// early); 0 for durations <= 0.
std::uint64_t ceil_seconds(std::chrono::nanoseconds d) noexcept;

/// `Retry-After` value for a refusal: ceil_seconds, but at least 1.
std::uint64_t retry_after_seconds(std::chrono::nanoseconds d) noexcept;

/// One response header; both views point into the owning rate_limit_headers.
struct header_field {
    std::string_view name;
    std::string_view value;
};

/// The headers for one limited response:
///  * draft (and both): `X-RateLimit-Limit`, `X-RateLimit-Remaining`,
///    `X-RateLimit-Reset` (ceil seconds until fully reset);
///  * ietf (and both): `RateLimit-Policy: "default";q=<limit>;w=<window s>`,
///    `RateLimit: "default";r=<remaining>;t=<reset s>`;
///  * none: no rate-limit headers;
///  * refused, in every mode: `Retry-After: <ceil seconds, >= 1>`.
/// A dry-run caller that forwards a refused request should pass a copy of
/// the decision with `allowed = true` so no Retry-After goes out.
class rate_limit_headers {
public:
    rate_limit_headers(const decision& d, headers_mode mode) noexcept;

    /// The most headers one decision produces.
    static constexpr std::size_t max_fields = 6;

    std::size_t size() const noexcept { return count_; }
    bool empty() const noexcept { return count_ == 0; }

    /// The `i`-th header, `i < size()`.
    header_field operator[](std::size_t i) const noexcept {
        const field& f = fields_[i];
        return {f.name, std::string_view{buffer_.data() + f.offset, f.length}};
    }

    /// Calls `fn(header_field)` for each header, in order.
    template <class Fn>
    void for_each(Fn&& fn) const {
        for (std::size_t i = 0; i < count_; ++i) {
            fn((*this)[i]);
        }
    }

private:
    // Offsets rather than views, so copies stay valid.
    struct field {
        std::string_view name;
        std::uint16_t offset;
        std::uint16_t length;
    };

    void add(std::string_view name, std::string_view prefix, std::uint64_t a,
             std::string_view middle = {}, std::uint64_t b = 0, bool two = false) noexcept;

    std::array<field, max_fields> fields_{};
    std::array<char, 224> buffer_{};
    std::uint16_t used_ = 0;
    std::uint8_t count_ = 0;
};

/// Why a request was refused with 429.
enum class refusal_reason { rate, concurrency, tunnels };

/// `{"error":"rate limit exceeded","reason":"rate","retry_after":N}`.
class refusal_body {
public:
    refusal_body(refusal_reason reason, std::uint64_t retry_after_seconds) noexcept;

    std::string_view view() const noexcept { return {buffer_.data(), length_}; }

    static constexpr std::string_view content_type = "application/json";

private:
    std::array<char, 96> buffer_{};
    std::size_t length_ = 0;
};

}  // namespace tollgate::limit
