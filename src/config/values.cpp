#include "tollgate/config/values.hpp"

#include "tollgate/ascii.hpp"

#include <array>
#include <charconv>
#include <cstdio>
#include <limits>

namespace tollgate {
namespace {

using result_ms = parse_result<milliseconds>;
using result_u64 = parse_result<std::uint64_t>;

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

bool all_digits(std::string_view text) {
    if (text.empty()) {
        return false;
    }
    for (char c : text) {
        if (!is_digit(c)) {
            return false;
        }
    }
    return true;
}

/// Leading decimal digits of `text` as a number. `overflow` is set when they
/// do not fit, so callers can say "too large" instead of "not a number".
struct leading_number {
    std::uint64_t value = 0;
    std::size_t length = 0;
    bool overflow = false;
};

leading_number read_digits(std::string_view text) {
    leading_number out;
    while (out.length < text.size() && is_digit(text[out.length])) {
        ++out.length;
    }
    if (out.length == 0) {
        return out;
    }
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + out.length, out.value);
    (void)ptr;
    out.overflow = ec == std::errc::result_out_of_range;
    return out;
}

std::string got(std::string_view text) {
    return ", got " + quote_value(text);
}

// ---- durations -------------------------------------------------------------

constexpr std::string_view duration_shape = "must be a duration like 500ms, 60s, 1m or 1h";

result_ms duration_impl(std::string_view text) {
    if (!text.empty() && text[0] == '-') {
        return result_ms::fail("must not be negative" + got(text));
    }
    leading_number number = read_digits(text);
    if (number.length == 0) {
        return result_ms::fail(std::string(duration_shape) + got(text));
    }
    std::string_view unit = text.substr(number.length);
    if (unit.empty()) {
        // Zero is zero in any unit; any other bare number is ambiguous (s? ms?).
        if (!number.overflow && number.value == 0) {
            return result_ms::ok(milliseconds{0});
        }
        return result_ms::fail("needs a unit (ms, s, m or h), e.g. 60s or 500ms" + got(text));
    }
    if (unit[0] == '.' || unit[0] == ',') {
        return result_ms::fail("must be a whole number of ms, s, m or h (write 1500ms, not 1.5s)" +
                               got(text));
    }
    std::int64_t scale = 0;
    if (unit == "ms") {
        scale = 1;
    } else if (unit == "s") {
        scale = 1000;
    } else if (unit == "m") {
        scale = 60 * 1000;
    } else if (unit == "h") {
        scale = 3600 * 1000;
    } else {
        return result_ms::fail(std::string(duration_shape) + " (units: ms, s, m, h)" + got(text));
    }
    auto limit = static_cast<std::uint64_t>(max_duration.count() / scale);
    if (number.overflow || number.value > limit) {
        return result_ms::fail("is too long (at most 8760h)" + got(text));
    }
    return result_ms::ok(milliseconds{static_cast<std::int64_t>(number.value) * scale});
}

// ---- sizes -----------------------------------------------------------------

constexpr std::string_view size_shape = "must be a size like 16384, 512KiB, 10MiB or 1GB";

struct size_unit {
    std::string_view name;
    std::uint64_t scale;
};

constexpr std::array<size_unit, 9> size_units{{
    {"B", 1},
    {"KiB", 1ull << 10},
    {"MiB", 1ull << 20},
    {"GiB", 1ull << 30},
    {"TiB", 1ull << 40},
    {"KB", 1000ull},
    {"MB", 1000ull * 1000},
    {"GB", 1000ull * 1000 * 1000},
    {"TB", 1000ull * 1000 * 1000 * 1000},
}};

result_u64 size_impl(std::string_view text) {
    if (!text.empty() && text[0] == '-') {
        return result_u64::fail("must not be negative" + got(text));
    }
    leading_number number = read_digits(text);
    if (number.length == 0) {
        return result_u64::fail(std::string(size_shape) + got(text));
    }
    std::string_view unit = text.substr(number.length);
    std::uint64_t scale = 1;
    if (!unit.empty()) {
        if (unit[0] == '.' || unit[0] == ',') {
            return result_u64::fail("must be a whole number (write 1536KiB, not 1.5MiB)" +
                                    got(text));
        }
        const size_unit* found = nullptr;
        for (const auto& u : size_units) {
            if (u.name == unit) {
                found = &u;
            }
        }
        if (found == nullptr) {
            return result_u64::fail(std::string(size_shape) +
                                    " (units: B, KiB, MiB, GiB, TiB, KB, MB, GB, TB; "
                                    "case-sensitive)" +
                                    got(text));
        }
        scale = found->scale;
    }
    if (number.overflow || number.value > std::numeric_limits<std::uint64_t>::max() / scale) {
        return result_u64::fail("is too large" + got(text));
    }
    return result_u64::ok(number.value * scale);
}

// ---- integers --------------------------------------------------------------

result_u64 integer_impl(std::string_view text, std::uint64_t min, std::uint64_t max) {
    std::string shape = min == 0 ? "must be a non-negative integer" : "must be a positive integer";
    if (!all_digits(text)) {
        return result_u64::fail(shape + got(text));
    }
    if (text.size() > 1 && text[0] == '0') {
        // YAML 1.1 tools read 010 as octal 8; refuse rather than pick a meaning.
        return result_u64::fail(shape + " without leading zeros" + got(text));
    }
    leading_number number = read_digits(text);
    if (number.overflow || number.value > max) {
        return result_u64::fail("must be at most " + std::to_string(max) + got(text));
    }
    if (number.value < min) {
        return result_u64::fail(shape + got(text));
    }
    return result_u64::ok(number.value);
}

// ---- enums -----------------------------------------------------------------

template <class E, std::size_t N>
parse_result<E> enum_impl(std::string_view text,
                          const std::array<std::pair<std::string_view, E>, N>& names) {
    for (const auto& [name, value] : names) {
        if (name == text) {
            return parse_result<E>::ok(value);
        }
    }
    std::string message = "must be one of ";
    std::array<std::string_view, N> spelled;
    for (std::size_t i = 0; i < N; ++i) {
        message += i == 0 ? "" : ", ";
        message += names[i].first;
        spelled[i] = names[i].first;
    }
    message += "; got " + quote_value(text);
    // Case and `-` for `_` are the usual slips (DEBUG, token-bucket).
    std::string folded(text);
    for (char& c : folded) {
        c = c == '-' ? '_' : ascii_lower(c);
    }
    if (auto best = closest_name(folded, spelled)) {
        message += " (did you mean " + std::string(spelled[*best]) + "?)";
    }
    return parse_result<E>::fail(std::move(message));
}

template <class E, std::size_t N>
std::string_view enum_name(E value, const std::array<std::pair<std::string_view, E>, N>& names) {
    for (const auto& [name, v] : names) {
        if (v == value) {
            return name;
        }
    }
    return "?";
}

constexpr std::array<std::pair<std::string_view, algorithm_kind>, 4> algorithm_names{{
    {"gcra", algorithm_kind::gcra},
    {"token_bucket", algorithm_kind::token_bucket},
    {"fixed_window", algorithm_kind::fixed_window},
    {"sliding_window", algorithm_kind::sliding_window},
}};
constexpr std::array<std::pair<std::string_view, headers_mode>, 4> headers_names{{
    {"draft", headers_mode::draft},
    {"ietf", headers_mode::ietf},
    {"both", headers_mode::both},
    {"none", headers_mode::none},
}};
constexpr std::array<std::pair<std::string_view, store_kind>, 2> store_names{{
    {"memory", store_kind::memory},
    {"redis", store_kind::redis},
}};
constexpr std::array<std::pair<std::string_view, failure_mode>, 2> failure_names{{
    {"open", failure_mode::open},
    {"closed", failure_mode::closed},
}};
constexpr std::array<std::pair<std::string_view, log_level>, 4> log_names{{
    {"debug", log_level::debug},
    {"info", log_level::info},
    {"warn", log_level::warn},
    {"error", log_level::error},
}};

// ---- hosts and ports -------------------------------------------------------

/// An IPv4 literal without brackets or an IPv6 literal (which needs brackets
/// wherever a port may follow).
bool is_ipv4_literal(std::string_view text) {
    return text.find(':') == std::string_view::npos && ip_address::parse(text).has_value();
}

bool is_ipv6_literal(std::string_view text) {
    return text.find(':') != std::string_view::npos && ip_address::parse(text).has_value();
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner
/// hyphens, 1-63 characters each, 253 in all; the last label not all digits
/// (that would be a mistyped IPv4 address).
bool is_dns_name(std::string_view text) {
    if (text.empty() || text.size() > 253) {
        return false;
    }
    if (text.back() == '.') {
        text.remove_suffix(1);  // a fully qualified name
    }
    std::string_view last_label;
    while (true) {
        std::size_t dot = text.find('.');
        std::string_view label = text.substr(0, dot);
        if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
            return false;
        }
        for (char c : label) {
            bool ok = is_digit(c) || (ascii_lower(c) >= 'a' && ascii_lower(c) <= 'z') || c == '-';
            if (!ok) {
                return false;
            }
        }
        last_label = label;
        if (dot == std::string_view::npos) {
            break;
        }
        text.remove_prefix(dot + 1);
    }
    return !all_digits(last_label);
}

/// Port digits in [min, 65535], or nullopt.
std::optional<std::uint16_t> read_port(std::string_view text, unsigned min) {
    if (!all_digits(text) || text.size() > 5) {
        return std::nullopt;
    }
    unsigned value = 0;
    std::from_chars(text.data(), text.data() + text.size(), value);
    if (value < min || value > 65535) {
        return std::nullopt;
    }
    return static_cast<std::uint16_t>(value);
}

/// host[:port] or [v6][:port] of a URL authority.
struct host_port {
    std::string host;
    std::optional<std::string_view> port;  ///< text after ':' when present
};

parse_result<host_port> split_authority(std::string_view authority) {
    host_port out;
    if (!authority.empty() && authority[0] == '[') {
        std::size_t close = authority.find(']');
        if (close == std::string_view::npos) {
            return parse_result<host_port>::fail("has an unclosed '[' in the host");
        }
        std::string_view host = authority.substr(1, close - 1);
        if (!is_ipv6_literal(host)) {
            return parse_result<host_port>::fail("has an invalid IPv6 address in brackets");
        }
        out.host = std::string(host);
        std::string_view rest = authority.substr(close + 1);
        if (!rest.empty()) {
            if (rest[0] != ':') {
                return parse_result<host_port>::fail("has text after the IPv6 address");
            }
            out.port = rest.substr(1);
        }
        return parse_result<host_port>::ok(std::move(out));
    }
    std::size_t colon = authority.find(':');
    if (colon != std::string_view::npos &&
        authority.find(':', colon + 1) != std::string_view::npos) {
        return parse_result<host_port>::fail("needs brackets around an IPv6 host, e.g. [::1]");
    }
    std::string_view host = authority.substr(0, colon);
    if (host.empty()) {
        return parse_result<host_port>::fail("has no host");
    }
    bool looks_numeric = host.find_first_not_of("0123456789.") == std::string_view::npos;
    if (looks_numeric ? !is_ipv4_literal(host) : !is_dns_name(host)) {
        return parse_result<host_port>::fail(looks_numeric ? "has an invalid IPv4 address"
                                                           : "has an invalid host name");
    }
    out.host = std::string(host);
    if (colon != std::string_view::npos) {
        out.port = authority.substr(colon + 1);
    }
    return parse_result<host_port>::ok(std::move(out));
}

std::string bracketed(const std::string& host) {
    return host.find(':') == std::string::npos ? host : "[" + host + "]";
}

}  // namespace

// ---- public ----------------------------------------------------------------

namespace {

std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) {
        row[j] = j;
    }
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diagonal = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            std::size_t above = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
            diagonal = above;
        }
    }
    return row[b.size()];
}

}  // namespace

std::optional<std::size_t> closest_name(std::string_view name,
                                        std::span<const std::string_view> candidates) {
    std::optional<std::size_t> best;
    std::size_t best_distance = name.size() <= 4 ? 1 : 2;
    for (std::size_t i = 0; i < candidates.size(); ++i) {
        std::size_t d = edit_distance(name, candidates[i]);
        if (d <= best_distance && (!best || d < best_distance)) {
            best = i;
            best_distance = d;
        }
    }
    return best;
}

std::string quote_value(std::string_view text) {
    constexpr std::size_t max_shown = 80;
    bool shortened = text.size() > max_shown;
    if (shortened) {
        text = text.substr(0, max_shown - 3);
    }
    std::string out = "\"";
    for (char c : text) {
        auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (u < 0x20 || u == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", u);
            out += buf;
        } else {
            out += c;
        }
    }
    if (shortened) {
        out += "...";
    }
    out += '"';
    return out;
}

parse_result<milliseconds> parse_duration(std::string_view text) {
    return duration_impl(text);
}

parse_result<milliseconds> parse_positive_duration(std::string_view text) {
    auto parsed = duration_impl(text);
    if (parsed && parsed->count() == 0) {
        return result_ms::fail("must be greater than 0" + got(text));
    }
    return parsed;
}

parse_result<std::uint64_t> parse_size(std::string_view text) {
    return size_impl(text);
}

parse_result<std::uint64_t> parse_positive_size(std::string_view text) {
    auto parsed = size_impl(text);
    if (parsed && *parsed == 0) {
        return result_u64::fail("must be greater than 0" + got(text));
    }
    return parsed;
}

parse_result<std::uint64_t> parse_non_negative_integer(std::string_view text, std::uint64_t max) {
    return integer_impl(text, 0, max);
}

parse_result<std::uint64_t> parse_positive_integer(std::string_view text, std::uint64_t max) {
    return integer_impl(text, 1, max);
}

parse_result<bool> parse_bool(std::string_view text) {
    if (text == "true" || text == "True" || text == "TRUE") {
        return parse_result<bool>::ok(true);
    }
    if (text == "false" || text == "False" || text == "FALSE") {
        return parse_result<bool>::ok(false);
    }
    return parse_result<bool>::fail("must be true or false" + got(text));
}

parse_result<algorithm_kind> parse_algorithm(std::string_view text) {
    return enum_impl(text, algorithm_names);
}
parse_result<headers_mode> parse_headers_mode(std::string_view text) {
    return enum_impl(text, headers_names);
}
parse_result<store_kind> parse_store_kind(std::string_view text) {
    return enum_impl(text, store_names);
}
parse_result<failure_mode> parse_failure_mode(std::string_view text) {
    return enum_impl(text, failure_names);
}
parse_result<log_level> parse_log_level(std::string_view text) {
    return enum_impl(text, log_names);
}

std::string_view to_string(algorithm_kind v) {
    return enum_name(v, algorithm_names);
}
std::string_view to_string(headers_mode v) {
    return enum_name(v, headers_names);
}
std::string_view to_string(store_kind v) {
    return enum_name(v, store_names);
}
std::string_view to_string(failure_mode v) {
    return enum_name(v, failure_names);
}
std::string_view to_string(log_level v) {
    return enum_name(v, log_names);
}

parse_result<listen_address> parse_listen_address(std::string_view text) {
    using result = parse_result<listen_address>;
    const std::string shape = "must be address:port, e.g. 0.0.0.0:8080 or [::1]:8080";
    std::string_view host;
    std::string_view port;
    if (!text.empty() && text[0] == '[') {
        std::size_t close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
            return result::fail(shape + got(text));
        }
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
        if (!is_ipv6_literal(host)) {
            return result::fail("must have an IPv6 address inside [ ]" + got(text));
        }
    } else {
        std::size_t colon = text.rfind(':');
        if (colon == std::string_view::npos) {
            return result::fail(shape + got(text));
        }
        if (text.find(':') != colon) {
            return result::fail("needs brackets around an IPv6 address, e.g. [::1]:8080" +
                                got(text));
        }
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (host.empty()) {
            // Deliberately no default host: 0.0.0.0 and [::] are different exposures.
            return result::fail(
                "needs an address before the port: 0.0.0.0:PORT (all IPv4) or [::]:PORT (all "
                "IPv6)" +
                got(text));
        }
        if (!is_ipv4_literal(host)) {
            const bool dotted = host.find_first_not_of("0123456789.") == std::string_view::npos;
            return result::fail(
                (dotted
                     ? "is not a valid IPv4 address (four numbers 0-255, no leading zeros), e.g. "
                       "127.0.0.1:8080"
                     : "must use an IP address, not a host name, e.g. "
                       "127.0.0.1:8080") +
                got(text));
        }
    }
    auto port_number = read_port(port, 0);
    if (!port_number) {
        return result::fail("port must be 0-65535" + got(text));
    }
    return result::ok(listen_address{std::string(host), *port_number});
}

parse_result<upstream_server> parse_upstream_url(std::string_view text) {
    using result = parse_result<upstream_server>;
    std::size_t scheme_end = text.find("://");
    if (scheme_end == std::string_view::npos) {
        return result::fail("must be an http:// or https:// URL like http://127.0.0.1:9000" +
                            got(text));
    }
    std::string_view scheme = text.substr(0, scheme_end);
    bool https = iequals(scheme, "https");
    if (!https && !iequals(scheme, "http")) {
        return result::fail("only http:// and https:// upstreams are supported" + got(text));
    }
    std::string_view rest = text.substr(scheme_end + 3);
    std::size_t authority_end = rest.find_first_of("/?#");
    std::string_view authority = rest.substr(0, authority_end);
    if (authority.find('@') != std::string_view::npos) {
        // Not echoed: the user info may hold a password.
        return result::fail("must not contain user info (user:password@)");
    }
    if (authority_end != std::string_view::npos && rest.substr(authority_end) != "/") {
        return result::fail(
            "must not have a path, query or fragment (the request path is forwarded as is)" +
            got(text));
    }
    auto split = split_authority(authority);
    if (!split) {
        return result::fail(split.error() + got(text));
    }
    upstream_server out;
    out.scheme = https ? "https" : "http";
    out.host = split->host;
    out.port = https ? 443 : 80;
    if (split->port) {
        auto port = read_port(*split->port, 1);
        if (!port) {
            return result::fail("port must be 1-65535" + got(text));
        }
        out.port = *port;
    }
    out.url = std::string(text);
    return result::ok(std::move(out));
}

parse_result<std::vector<upstream_server>> parse_upstream_list(std::string_view text) {
    using result = parse_result<std::vector<upstream_server>>;
    auto trim = [](std::string_view s) {
        while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
            s.remove_prefix(1);
        }
        while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
            s.remove_suffix(1);
        }
        return s;
    };
    std::vector<std::string_view> items;
    std::string_view rest = text;
    while (true) {
        std::size_t comma = rest.find(',');
        items.push_back(trim(rest.substr(0, comma)));
        if (comma == std::string_view::npos) {
            break;
        }
        rest.remove_prefix(comma + 1);
    }
    std::vector<upstream_server> out;
    for (std::size_t i = 0; i < items.size(); ++i) {
        std::string where = items.size() == 1 ? "" : "item " + std::to_string(i + 1) + ": ";
        if (items[i].empty()) {
            return result::fail(
                items.size() == 1
                    ? "must list at least one http:// or https:// URL"
                    : where + "is empty (comma-separated http:// or https:// URLs)" + got(text));
        }
        auto server = parse_upstream_url(items[i]);
        if (!server) {
            return result::fail(where + server.error());
        }
        out.push_back(*server);
    }
    return result::ok(std::move(out));
}

parse_result<cidr> parse_cidr(std::string_view text) {
    using result = parse_result<cidr>;
    if (auto parsed = cidr::parse(text)) {
        return result::ok(*parsed);
    }
    std::size_t slash = text.find('/');
    std::string_view address_text = text.substr(0, slash);
    auto address = ip_address::parse(address_text);
    if (!address) {
        return result::fail("must be an IP address or CIDR range like 10.0.0.0/8" + got(text));
    }
    bool v4 = is_ipv4_literal(address_text);
    unsigned width = v4 ? 32 : 128;
    std::string_view digits = text.substr(slash + 1);
    unsigned prefix = 0;
    if (!all_digits(digits) || digits.size() > 3 ||
        (std::from_chars(digits.data(), digits.data() + digits.size(), prefix), prefix > width)) {
        return result::fail(std::string("prefix length must be 0-") + std::to_string(width) +
                            got(text));
    }
    // The only other refusal: host bits set. Suggest the network the operator
    // probably meant, since "10.0.0.1/8" is usually a typo for "10.0.0.0/8".
    // An IPv4-mapped range with an IPv4-sized prefix ("::ffff:10.0.0.0/8")
    // counts its prefix in IPv6 bits: suggest both ways of writing it.
    const bool mapped = !v4 && address->is_v4() && prefix <= 32;
    auto bytes = address->bytes();
    unsigned bits = prefix + (128 - width) + (mapped ? 96 : 0);
    for (unsigned bit = bits; bit < 128; ++bit) {
        bytes[bit / 8] &= static_cast<std::uint8_t>(~(0x80u >> (bit % 8)));
    }
    const std::string base = ip_address::from_v6(bytes).to_string();
    if (mapped) {
        return result::fail("counts its prefix in IPv6 bits (did you mean ::ffff:" + base + "/" +
                            std::to_string(prefix + 96) + ", or " + base + "/" +
                            std::to_string(prefix) + "?)" + got(text));
    }
    std::string network = base + "/" + std::to_string(prefix);
    return result::fail("has host bits set after the /" + std::to_string(prefix) +
                        " prefix (did you mean " + network + "?)" + got(text));
}

std::string redact_redis_url(std::string_view url) {
    std::size_t scheme_end = url.find("://");
    if (scheme_end == std::string_view::npos) {
        return std::string(url);
    }
    std::size_t start = scheme_end + 3;
    std::size_t at = url.rfind('@');
    if (at == std::string_view::npos || at < start) {
        return std::string(url);
    }
    std::string_view userinfo = url.substr(start, at - start);
    std::size_t colon = userinfo.find(':');
    // Without a colon the whole user info may be a password (some clients
    // accept redis://secret@host), so hide all of it.
    std::string kept =
        colon == std::string_view::npos ? "" : std::string(userinfo.substr(0, colon + 1));
    return std::string(url.substr(0, start)) + kept + "<redacted>" + std::string(url.substr(at));
}

namespace {

/// RFC 3986 percent-decoding of a URL's user name or password, so that
/// characters the URL syntax reserves (`@`, `:`, `/`, `%`) can be written in
/// a secret. Nullopt for a `%` not followed by two hex digits.
std::optional<std::string> percent_decode(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] != '%') {
            out += text[i];
            continue;
        }
        if (i + 2 >= text.size()) {
            return std::nullopt;
        }
        const unsigned high = hex_value(text[i + 1]);
        const unsigned low = hex_value(text[i + 2]);
        if (high > 15 || low > 15) {
            return std::nullopt;
        }
        out += static_cast<char>(high * 16 + low);
        i += 2;
    }
    return out;
}

}  // namespace

parse_result<redis_endpoint> parse_redis_url(std::string_view text) {
    using result = parse_result<redis_endpoint>;
    const std::string echo = ", got " + quote_value(redact_redis_url(text));
    std::size_t scheme_end = text.find("://");
    if (scheme_end == std::string_view::npos) {
        return result::fail("must be a redis:// URL like redis://127.0.0.1:6379" + echo);
    }
    std::string_view scheme = text.substr(0, scheme_end);
    if (iequals(scheme, "rediss")) {
        return result::fail("TLS (rediss://) is not supported; use redis://" + echo);
    }
    if (!iequals(scheme, "redis")) {
        return result::fail("must be a redis:// URL like redis://127.0.0.1:6379" + echo);
    }
    redis_endpoint out;
    std::string_view rest = text.substr(scheme_end + 3);
    std::size_t at = rest.rfind('@');
    if (at != std::string_view::npos) {
        std::string_view userinfo = rest.substr(0, at);
        std::size_t colon = userinfo.find(':');
        if (colon == std::string_view::npos || colon + 1 == userinfo.size()) {
            return result::fail("user info must be user:password@ or :password@" + echo);
        }
        if (userinfo.substr(colon + 1) == "<redacted>") {
            return result::fail(
                "password is the <redacted> placeholder --print-config writes in place of the "
                "secret; set the real value" +
                echo);
        }
        constexpr std::string_view escape_hint =
            " (write %XX with two hex digits, e.g. %40 for @, %25 for %)";
        auto username = percent_decode(userinfo.substr(0, colon));
        if (!username) {
            return result::fail("user name has an invalid %-escape" + std::string(escape_hint) +
                                echo);
        }
        auto password = percent_decode(userinfo.substr(colon + 1));
        if (!password) {
            return result::fail("password has an invalid %-escape" + std::string(escape_hint) +
                                echo);
        }
        out.username = std::move(*username);
        out.password = std::move(*password);
        rest = rest.substr(at + 1);
    }
    std::size_t slash = rest.find('/');
    std::string_view authority = rest.substr(0, slash);
    if (authority.find_first_of("?#") != std::string_view::npos) {
        return result::fail("must not have a query or fragment" + echo);
    }
    auto split = split_authority(authority);
    if (!split) {
        return result::fail(split.error() + echo);
    }
    out.host = split->host;
    if (split->port) {
        auto port = read_port(*split->port, 1);
        if (!port) {
            return result::fail("port must be 1-65535" + echo);
        }
        out.port = *port;
    }
    if (slash != std::string_view::npos) {
        std::string_view db = rest.substr(slash + 1);
        if (!db.empty()) {
            auto number = integer_impl(db, 0, 1u << 20);
            if (!number) {
                return result::fail("database must be a number after '/', e.g. /0" + echo);
            }
            out.db = static_cast<unsigned>(*number);
        }
    }
    return result::ok(std::move(out));
}

parse_result<std::string> parse_rate_key(std::string_view text) {
    using result = parse_result<std::string>;
    if (text.starts_with("org:")) {
        std::string_view id = text.substr(4);
        bool ok = !id.empty() && id.size() <= 128;
        for (char c : id) {
            ok = ok && (is_digit(c) || (ascii_lower(c) >= 'a' && ascii_lower(c) <= 'z') ||
                        c == '.' || c == '_' || c == ':' || c == '-');
        }
        if (!ok) {
            return result::fail("org id must match [A-Za-z0-9._:-]{1,128}" + got(text));
        }
        return result::ok(std::string(text));
    }
    if (text.starts_with("tok:")) {
        std::string_view hex = text.substr(4);
        bool ok = hex.size() == 64;
        std::string key = "tok:";
        for (char c : hex) {
            char l = ascii_lower(c);
            ok = ok && (is_digit(l) || (l >= 'a' && l <= 'f'));
            key += l;
        }
        if (!ok) {
            // Not echoed: someone may have pasted the raw token here.
            return result::fail(
                "tok: must be followed by 64 hex digits (the SHA-256 or HMAC of the token, never "
                "the token itself)");
        }
        return result::ok(std::move(key));
    }
    if (text.starts_with("ip:")) {
        const std::string_view rest = text.substr(3);
        const std::size_t slash = rest.find('/');
        auto address = ip_address::parse(rest.substr(0, slash));
        if (!address) {
            return result::fail("ip: must be followed by an IP address" + got(text));
        }
        if (slash == std::string_view::npos) {
            return result::ok("ip:" + address->to_string());
        }
        // An IPv6 network, as keying.ipv6_prefix keys IPv6 clients.
        const auto network = cidr::parse(rest);
        if (address->is_v4() || !network) {
            return result::fail(
                "ip: must be followed by an IP address, or an IPv6 network like "
                "2001:db8:1:2::/64 (IPv4 clients are keyed by address alone)" +
                got(text));
        }
        const std::string canonical = network->to_string();
        if (canonical.ends_with("/128")) {
            return result::ok("ip:" + address->to_string());
        }
        return result::ok("ip:" + canonical);
    }
    return result::fail("must be a rate key starting with org:, tok: or ip:" + got(text));
}

std::string format_duration(milliseconds d) {
    std::int64_t ms = d.count();
    if (ms == 0) {
        return "0";
    }
    if (ms % (3600 * 1000) == 0) {
        return std::to_string(ms / (3600 * 1000)) + "h";
    }
    if (ms % (60 * 1000) == 0) {
        return std::to_string(ms / (60 * 1000)) + "m";
    }
    if (ms % 1000 == 0) {
        return std::to_string(ms / 1000) + "s";
    }
    return std::to_string(ms) + "ms";
}

std::string format_size(std::uint64_t bytes) {
    constexpr std::array<size_unit, 4> binary{{
        {"TiB", 1ull << 40},
        {"GiB", 1ull << 30},
        {"MiB", 1ull << 20},
        {"KiB", 1ull << 10},
    }};
    for (const auto& u : binary) {
        if (bytes != 0 && bytes % u.scale == 0) {
            return std::to_string(bytes / u.scale) + std::string(u.name);
        }
    }
    return std::to_string(bytes);
}

std::string format_listen_address(const listen_address& address) {
    return bracketed(address.host) + ":" + std::to_string(address.port);
}

std::string format_upstream_url(const upstream_server& server) {
    return server.scheme + "://" + bracketed(server.host) + ":" + std::to_string(server.port);
}

}  // namespace tollgate
