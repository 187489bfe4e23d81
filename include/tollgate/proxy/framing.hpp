#pragma once
/// @file framing.hpp
/// Strict checks of a message head (start line + header fields + blank
/// line) on its raw bytes, before Beast parses it. Beast's parser is
/// lenient in ways a proxy cannot afford (RFC 9112 sections 2.2, 3, 5, 6.1,
/// 6.3): anything a backend could frame differently must be refused here.
/// Pure functions over bytes; safe from any thread.

#include <cstddef>
#include <optional>
#include <string_view>

namespace tollgate::proxy {

/// Why a head is refused: the status to answer (400, 431, 501 for
/// requests; the proxy answers 502 for a bad response) and a short reason.
struct framing_error {
    unsigned status = 400;
    std::string_view message;
};

struct head_limits {
    std::size_t max_headers = 100;
};

/// Index one past the blank line that ends the head at the start of `data`
/// (`\r\n\r\n`, or a bare-LF variant so that it can be refused rather than
/// waited on), or npos when the head is not complete yet.
std::size_t find_head_end(std::string_view data);

/// Checks a complete request head. nullopt = acceptable.
std::optional<framing_error> validate_request_head(std::string_view head,
                                                   const head_limits& limits);

/// Checks a complete response head from an upstream. nullopt = acceptable.
std::optional<framing_error> validate_response_head(std::string_view head);

}  // namespace tollgate::proxy
