#pragma once
/// @file ascii.hpp
/// ASCII case folding for protocol text (header names, URL schemes), where
/// the locale must not matter.

#include <cstddef>
#include <string_view>

namespace tollgate {

constexpr char ascii_lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c;
}

/// The value of the hex digit `c` (either case), or 16 when it is not one.
constexpr unsigned hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return static_cast<unsigned>(c - '0');
    }
    const char l = ascii_lower(c);
    if (l >= 'a' && l <= 'f') {
        return static_cast<unsigned>(l - 'a' + 10);
    }
    return 16;
}

/// RFC 3986 unreserved: a letter, a digit, `-`, `.`, `_` or `~`.
constexpr bool is_unreserved(char c) {
    const char l = ascii_lower(c);
    return (l >= 'a' && l <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
           c == '~';
}

/// ASCII case-insensitive equality.
constexpr bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (ascii_lower(a[i]) != ascii_lower(b[i])) {
            return false;
        }
    }
    return true;
}

}  // namespace tollgate
