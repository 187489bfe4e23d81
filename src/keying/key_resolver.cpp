#include "tollgate/keying/key_resolver.hpp"

#include <algorithm>

#include "tollgate/ascii.hpp"
#include "tollgate/keying/hash.hpp"

namespace tollgate {
namespace {

constexpr std::size_t max_org_id_size = 128;

bool is_ows(char c) {
    return c == ' ' || c == '\t';
}

std::string_view trim_ows(std::string_view text) {
    while (!text.empty() && is_ows(text.front())) {
        text.remove_prefix(1);
    }
    while (!text.empty() && is_ows(text.back())) {
        text.remove_suffix(1);
    }
    return text;
}

bool is_alnum(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

/// `[A-Za-z0-9._:-]{1,128}`: bounded so a caller cannot grow the key table's
/// memory with huge ids, and free of characters that would need escaping in
/// logs or Redis keys.
bool is_valid_org_id(std::string_view id) {
    if (id.empty() || id.size() > max_org_id_size) {
        return false;
    }
    return std::all_of(id.begin(), id.end(), [](char c) {
        return is_alnum(c) || c == '.' || c == '_' || c == ':' || c == '-';
    });
}

/// RFC 6750 b64token: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
bool is_b64token(std::string_view token) {
    std::size_t i = 0;
    while (i < token.size() &&
           (is_alnum(token[i]) || token[i] == '-' || token[i] == '.' || token[i] == '_' ||
            token[i] == '~' || token[i] == '+' || token[i] == '/')) {
        ++i;
    }
    if (i == 0) {
        return false;
    }
    while (i < token.size() && token[i] == '=') {
        ++i;
    }
    return i == token.size();
}

/// The token of `Bearer <token>`, or nullopt when the value is not a
/// well-formed bearer credential.
std::optional<std::string_view> bearer_token(std::string_view value) {
    constexpr std::string_view scheme = "bearer";
    value = trim_ows(value);
    // At least the scheme, one separator and one token character.
    if (value.size() < scheme.size() + 2) {
        return std::nullopt;
    }
    for (std::size_t i = 0; i < scheme.size(); ++i) {
        char c = value[i];
        if (c >= 'A' && c <= 'Z') {
            c = static_cast<char>(c - 'A' + 'a');
        }
        if (c != scheme[i]) {
            return std::nullopt;
        }
    }
    // "Bearertoken" is another scheme, not a bearer token.
    if (!is_ows(value[scheme.size()])) {
        return std::nullopt;
    }
    std::string_view token = trim_ows(value.substr(scheme.size()));
    if (!is_b64token(token)) {
        return std::nullopt;
    }
    return token;
}

/// `:<1-5 digits>`. The port is not used, only recognised so it can be dropped.
bool is_port_suffix(std::string_view text) {
    if (text.size() < 2 || text.size() > 6 || text.front() != ':') {
        return false;
    }
    return std::all_of(text.begin() + 1, text.end(), is_digit);
}

/// One trimmed, non-empty X-Forwarded-For entry: `1.2.3.4`, `1.2.3.4:5678`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`.
std::optional<ip_address> parse_forwarded_entry(std::string_view entry) {
    if (entry.front() == '[') {
        std::size_t close = entry.find(']');
        if (close == std::string_view::npos) {
            return std::nullopt;
        }
        std::string_view after = entry.substr(close + 1);
        if (!after.empty() && !is_port_suffix(after)) {
            return std::nullopt;
        }
        return ip_address::parse(entry.substr(1, close - 1));
    }
    std::size_t colon = entry.find(':');
    // Exactly one colon can only be IPv4 with a port: bare IPv6 has at least two.
    if (colon != std::string_view::npos && entry.find(':', colon + 1) == std::string_view::npos) {
        if (!is_port_suffix(entry.substr(colon))) {
            return std::nullopt;
        }
        return ip_address::parse(entry.substr(0, colon));
    }
    return ip_address::parse(entry);
}

bool any_contains(const std::vector<cidr>& ranges, const ip_address& address) {
    return std::any_of(ranges.begin(), ranges.end(),
                       [&](const cidr& range) { return range.contains(address); });
}

}  // namespace

std::string_view to_string(key_type type) {
    switch (type) {
        case key_type::org:
            return "org";
        case key_type::tok:
            return "tok";
        case key_type::ip:
            return "ip";
    }
    return "ip";
}

key_resolver::key_resolver(const keying_config& config)
    : trusted_org_sources_(config.trusted_org_sources),
      trusted_proxies_(config.trusted_proxies),
      token_secret_(config.token_secret),
      ipv6_prefix_(config.ipv6_prefix),
      trust_forwarded_proto_(config.trust_forwarded_proto) {
    for (const std::string& pattern : config.ip_paths) {
        if (!pattern.empty() && pattern.back() == '*') {
            ip_path_prefixes_.push_back(pattern.substr(0, pattern.size() - 1));
        } else {
            ip_exact_paths_.push_back(pattern);
        }
    }
    // Fail at startup, not on the first request with a token.
    (void)sha256({});
    (void)hmac_sha256(token_secret_, {});
}

bool key_resolver::org_source_trusted(const ip_address& peer) const {
    return any_contains(trusted_org_sources_, peer);
}

bool key_resolver::is_trusted_proxy(const ip_address& address) const {
    return any_contains(trusted_proxies_, address);
}

std::string_view key_resolver::forwarded_proto(const ip_address& peer,
                                               std::optional<std::string_view> sent,
                                               bool tls) const {
    const std::string_view own = tls ? "https" : "http";
    if (!trust_forwarded_proto_ || !sent || !is_trusted_proxy(peer)) {
        return own;
    }
    // A chain of proxies appends: the last element is what the one next to
    // tollgate says; what is left of it may be the client's own.
    std::string_view last = *sent;
    if (const std::size_t comma = last.rfind(','); comma != std::string_view::npos) {
        last.remove_prefix(comma + 1);
    }
    last = trim_ows(last);
    if (iequals(last, "https")) {
        return "https";
    }
    if (iequals(last, "http")) {
        return "http";
    }
    return own;
}

bool key_resolver::is_ip_path(std::string_view path) const {
    for (const std::string& exact : ip_exact_paths_) {
        if (path == exact) {
            return true;
        }
    }
    for (const std::string& prefix : ip_path_prefixes_) {
        if (path.starts_with(prefix)) {
            return true;
        }
    }
    return false;
}

ip_address key_resolver::client_address(const ip_address& peer,
                                        std::string_view forwarded_for) const {
    // XFF from anyone but a trusted proxy is whatever the caller chose to write.
    if (forwarded_for.empty() || !is_trusted_proxy(peer)) {
        return peer;
    }
    ip_address client = peer;
    std::string_view rest = forwarded_for;
    while (!rest.empty()) {
        std::size_t comma = rest.rfind(',');
        std::string_view entry = rest;
        if (comma == std::string_view::npos) {
            rest = {};
        } else {
            entry = rest.substr(comma + 1);
            rest = rest.substr(0, comma);
        }
        entry = trim_ows(entry);
        if (entry.empty()) {
            continue;
        }
        auto address = parse_forwarded_entry(entry);
        if (!address) {
            // Everything from here leftwards came from a hop nobody vouched for.
            return client;
        }
        client = *address;
        if (!is_trusted_proxy(client)) {
            return client;
        }
    }
    return client;
}

resolved_key key_resolver::resolve(const request_facts& facts) const {
    // Each key is built by one append onto a short literal that fits the
    // small-string buffer, so the key string is the only allocation.
    resolved_key out;
    out.client = client_address(facts.peer, facts.forwarded_for);

    if (!is_ip_path(facts.path)) {
        if (facts.org_header && org_source_trusted(facts.peer)) {
            std::string_view id = trim_ows(*facts.org_header);
            if (is_valid_org_id(id)) {
                out.type = key_type::org;
                out.key.assign("org:");
                out.key.append(id);
                return out;
            }
        }
        if (facts.authorization) {
            if (auto token = bearer_token(*facts.authorization)) {
                out.type = key_type::tok;
                out.key.assign("tok:");
                append_hex(out.key, token_secret_.empty() ? sha256(*token)
                                                          : hmac_sha256(token_secret_, *token));
                return out;
            }
        }
    }

    out.type = key_type::ip;
    out.key.assign("ip:");
    if (ipv6_prefix_ < 128 && !out.client.is_v4()) {
        // One bucket per network: a host gets a /64 (or more) to itself and
        // could otherwise take a fresh address, and bucket, per request.
        out.client.masked(ipv6_prefix_).append_to(out.key);
        out.key += '/';
        out.key += std::to_string(ipv6_prefix_);
    } else {
        out.client.append_to(out.key);
    }
    return out;
}

}  // namespace tollgate
