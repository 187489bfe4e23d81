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
