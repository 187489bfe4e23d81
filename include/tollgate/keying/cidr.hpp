#pragma once
/// @file cidr.hpp
/// IP addresses and CIDR ranges without any networking library, so policy
/// code and the config loader can use them. IPv4 addresses are stored as
/// IPv4-mapped IPv6 (::ffff:a.b.c.d) so one comparison serves both families.
/// All types are plain values; thread-safe to share once built.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate {

class ip_address {
public:
    ip_address() = default;

    /// Parses `1.2.3.4`, `::1`, `2001:db8::1`, `::ffff:1.2.3.4` (no brackets,
    /// no zone id, no port). Returns nullopt for anything else.
    static std::optional<ip_address> parse(std::string_view text);

    /// Builds from network-order bytes.
    static ip_address from_v4(const std::array<std::uint8_t, 4>& bytes);
    static ip_address from_v6(const std::array<std::uint8_t, 16>& bytes);

    /// True for IPv4 and IPv4-mapped IPv6 addresses.
    bool is_v4() const;
    const std::array<std::uint8_t, 16>& bytes() const { return bytes_; }

    /// Canonical text: dotted quad for IPv4 (and mapped), RFC 5952 for IPv6.
    std::string to_string() const;

    /// Longest text to_string() produces (`ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff`).
    static constexpr std::size_t max_text_size = 39;

    /// Appends to_string() to `out` without building a temporary string, so a
    /// caller composing a larger string (e.g. a rate-limit key) allocates once.
    void append_to(std::string& out) const;

    /// The address with every bit after the first `prefix` (of its 128
    /// IPv6 bits) cleared: the network it belongs to.
    ip_address masked(unsigned prefix) const;

    friend bool operator==(const ip_address&, const ip_address&) = default;

private:
    std::array<std::uint8_t, 16> bytes_{};
};

class cidr {
public:
    /// Parses `10.0.0.0/8`, `::1/128`, or a bare address (a /32 or /128).
    /// Host bits beyond the prefix are rejected (`10.0.0.1/8` is an error),
    /// since they usually mean a typo.
    static std::optional<cidr> parse(std::string_view text);

    bool contains(const ip_address& address) const;
    std::string to_string() const;

    friend bool operator==(const cidr&, const cidr&) = default;

private:
    ip_address base_{};
    unsigned prefix_ = 0;  ///< in IPv6 bits (IPv4 prefixes are stored + 96)
};

}  // namespace tollgate
