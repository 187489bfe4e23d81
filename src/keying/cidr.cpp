#include "tollgate/keying/cidr.hpp"

#include <algorithm>
#include <charconv>

namespace tollgate {
namespace {

constexpr std::array<std::uint8_t, 12> v4_mapped_prefix{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

std::optional<std::array<std::uint8_t, 4>> parse_v4(std::string_view text) {
    std::array<std::uint8_t, 4> out{};
    std::size_t part = 0;
    while (part < 4) {
        std::size_t end = text.find('.');
        std::string_view digits = text.substr(0, end);
        // No empty parts, no leading zeros (they read as octal elsewhere), at most 3 digits.
        if (digits.empty() || digits.size() > 3 || (digits.size() > 1 && digits[0] == '0')) {
            return std::nullopt;
        }
        unsigned value = 0;
        auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
        if (ec != std::errc{} || ptr != digits.data() + digits.size() || value > 255) {
            return std::nullopt;
        }
        out[part++] = static_cast<std::uint8_t>(value);
        if (end == std::string_view::npos) {
            break;
        }
        if (part == 4) {
            return std::nullopt;  // a fifth part
        }
        text.remove_prefix(end + 1);
    }
    if (part != 4) {
        return std::nullopt;
    }
    return out;
}

/// Up to 8 hex groups on one side of "::". A fixed array, not a vector: the key
/// resolver parses every X-Forwarded-For hop on the request path, so this must
/// not allocate.
struct group_list {
    std::array<std::uint16_t, 8> values{};
    std::size_t size = 0;
};

std::optional<std::array<std::uint8_t, 16>> parse_v6(std::string_view text) {
    if (text.empty()) {
        return std::nullopt;
    }
    group_list head;
    group_list tail;
    bool seen_gap = false;
    bool embedded_v4 = false;
    std::array<std::uint8_t, 4> v4{};

    // "::" may appear once; split around it.
    std::size_t gap = text.find("::");
    std::string_view left = text;
    std::string_view right{};
    if (gap != std::string_view::npos) {
        seen_gap = true;
        left = text.substr(0, gap);
        right = text.substr(gap + 2);
        if (right.find("::") != std::string_view::npos) {
            return std::nullopt;
        }
    }

    auto parse_groups = [&](std::string_view part, group_list& groups, bool allow_v4) -> bool {
        if (part.empty()) {
            return true;
        }
        while (true) {
            std::size_t colon = part.find(':');
            std::string_view group = part.substr(0, colon);
            if (colon == std::string_view::npos && allow_v4 &&
                group.find('.') != std::string_view::npos) {
                auto parsed = parse_v4(group);
                if (!parsed) {
                    return false;
                }
                v4 = *parsed;
                embedded_v4 = true;
                return true;
            }
            if (group.empty() || group.size() > 4 || groups.size == groups.values.size()) {
                return false;
            }
            unsigned value = 0;
            auto [ptr, ec] = std::from_chars(group.data(), group.data() + group.size(), value, 16);
            if (ec != std::errc{} || ptr != group.data() + group.size()) {
                return false;
            }
            groups.values[groups.size++] = static_cast<std::uint16_t>(value);
            if (colon == std::string_view::npos) {
                return true;
            }
            part.remove_prefix(colon + 1);
        }
    };

    if (!parse_groups(left, head, !seen_gap) || !parse_groups(right, tail, seen_gap)) {
        return std::nullopt;
    }
    std::size_t groups = head.size + tail.size + (embedded_v4 ? 2 : 0);
    if (seen_gap ? groups > 7 : groups != 8) {
        return std::nullopt;
    }
    std::array<std::uint8_t, 16> out{};
    std::size_t at = 0;
    for (std::size_t i = 0; i < head.size; ++i) {
        out[at++] = static_cast<std::uint8_t>(head.values[i] >> 8);
        out[at++] = static_cast<std::uint8_t>(head.values[i] & 0xff);
    }
    std::size_t tail_bytes = tail.size * 2 + (embedded_v4 ? 4 : 0);
    at = 16 - tail_bytes;
    for (std::size_t i = 0; i < tail.size; ++i) {
        out[at++] = static_cast<std::uint8_t>(tail.values[i] >> 8);
        out[at++] = static_cast<std::uint8_t>(tail.values[i] & 0xff);
    }
    if (embedded_v4) {
        for (std::uint8_t b : v4) {
            out[at++] = b;
        }
    }
    return out;
}

}  // namespace

std::optional<ip_address> ip_address::parse(std::string_view text) {
    if (auto v4 = parse_v4(text)) {
        return from_v4(*v4);
    }
    if (auto v6 = parse_v6(text)) {
        return from_v6(*v6);
    }
    return std::nullopt;
}

ip_address ip_address::from_v4(const std::array<std::uint8_t, 4>& bytes) {
    ip_address out;
    std::copy(v4_mapped_prefix.begin(), v4_mapped_prefix.end(), out.bytes_.begin());
    std::copy(bytes.begin(), bytes.end(), out.bytes_.begin() + 12);
    return out;
}

ip_address ip_address::from_v6(const std::array<std::uint8_t, 16>& bytes) {
    ip_address out;
    out.bytes_ = bytes;
    return out;
}

bool ip_address::is_v4() const {
    return std::equal(v4_mapped_prefix.begin(), v4_mapped_prefix.end(), bytes_.begin());
}

std::string ip_address::to_string() const {
    std::string out;
    append_to(out);
    return out;
}

ip_address ip_address::masked(unsigned prefix) const {
    ip_address out = *this;
    for (std::size_t i = 0; i < out.bytes_.size(); ++i) {
        const unsigned first_bit = static_cast<unsigned>(i) * 8;
        if (prefix <= first_bit) {
            out.bytes_[i] = 0;
        } else if (prefix < first_bit + 8) {
            out.bytes_[i] &= static_cast<std::uint8_t>(0xff00u >> (prefix - first_bit));
        }
    }
    return out;
}

void ip_address::append_to(std::string& out) const {
    // Formatted on the stack and appended once, so the caller's string grows at most once.
    char buf[max_text_size + 1];
    std::size_t len = 0;
    if (is_v4()) {
        // Every keyed request formats its address: no printf machinery here.
        for (std::size_t i = 12; i < 16; ++i) {
            if (i > 12) {
                buf[len++] = '.';
            }
            const unsigned b = bytes_[i];
            if (b >= 100) {
                buf[len++] = static_cast<char>('0' + b / 100);
            }
            if (b >= 10) {
                buf[len++] = static_cast<char>('0' + b / 10 % 10);
            }
            buf[len++] = static_cast<char>('0' + b % 10);
        }
        out.append(buf, len);
        return;
    }
    std::array<unsigned, 8> groups{};
    for (std::size_t i = 0; i < 8; ++i) {
        groups[i] = (unsigned{bytes_[2 * i]} << 8) | bytes_[2 * i + 1];
    }
    // RFC 5952: compress the longest run (length >= 2) of zero groups, the first on ties.
    int best_start = -1;
    int best_len = 0;
    for (int i = 0; i < 8;) {
        if (groups[static_cast<std::size_t>(i)] != 0) {
            ++i;
            continue;
        }
        int j = i;
        while (j < 8 && groups[static_cast<std::size_t>(j)] == 0) {
            ++j;
        }
        if (j - i > best_len && j - i >= 2) {
            best_start = i;
            best_len = j - i;
        }
        i = j;
    }
    constexpr char digits[] = "0123456789abcdef";
    for (int i = 0; i < 8; ++i) {
        if (i == best_start) {
            buf[len++] = ':';
            buf[len++] = ':';
            i += best_len - 1;
            continue;
        }
        if (len != 0 && buf[len - 1] != ':') {
            buf[len++] = ':';
        }
        // Lowercase hex without leading zeros (RFC 5952 section 4.1).
        unsigned group = groups[static_cast<std::size_t>(i)];
        bool started = false;
        for (int shift = 12; shift >= 0; shift -= 4) {
            unsigned nibble = (group >> shift) & 0xf;
            if (nibble != 0 || started || shift == 0) {
                buf[len++] = digits[nibble];
                started = true;
            }
        }
    }
    out.append(buf, len);
}

std::optional<cidr> cidr::parse(std::string_view text) {
    std::size_t slash = text.find('/');
    auto address = ip_address::parse(text.substr(0, slash));
    if (!address) {
        return std::nullopt;
    }
    unsigned width =
        address->is_v4() && text.substr(0, slash).find(':') == std::string_view::npos ? 32 : 128;
    unsigned prefix = width;
    if (slash != std::string_view::npos) {
        std::string_view digits = text.substr(slash + 1);
        auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
        if (digits.empty() || ec != std::errc{} || ptr != digits.data() + digits.size() ||
            prefix > width) {
            return std::nullopt;
        }
    }
    cidr out;
    out.base_ = *address;
    out.prefix_ = prefix + (128 - width);
    // Reject host bits set beyond the prefix.
    const auto& bytes = out.base_.bytes();
    for (unsigned bit = out.prefix_; bit < 128; ++bit) {
        if (bytes[bit / 8] & (0x80u >> (bit % 8))) {
            return std::nullopt;
        }
    }
    return out;
}

bool cidr::contains(const ip_address& address) const {
    // Families never mix: `::/0` is every IPv6 address, not every address.
    // IPv4 addresses (stored mapped) fall only in IPv4 ranges, which are the
    // ranges inside ::ffff:0:0/96 however they were written.
    if (address.is_v4() != (prefix_ >= 96 && base_.is_v4())) {
        return false;
    }
    const auto& a = address.bytes();
    const auto& b = base_.bytes();
    unsigned full = prefix_ / 8;
    for (unsigned i = 0; i < full; ++i) {
        if (a[i] != b[i]) {
            return false;
        }
    }
    unsigned rest = prefix_ % 8;
    if (rest == 0) {
        return true;
    }
    auto mask = static_cast<std::uint8_t>(0xff00u >> rest);
    return (a[full] & mask) == (b[full] & mask);
}

std::string cidr::to_string() const {
    unsigned shown = base_.is_v4() ? prefix_ - 96 : prefix_;
    if (base_.is_v4() && prefix_ < 96) {
        shown = prefix_;
    }
    return base_.to_string() + "/" + std::to_string(shown);
}

}  // namespace tollgate
