// libFuzzer target: the key resolver (org header, bearer token, X-Forwarded-
// For walk, ip_paths) on arbitrary header values and peers.
//
// Input: byte 0 chooses the resolver and which headers are present; the rest
// is split on '\n' into peer, path, org header, Authorization, X-Forwarded-For.
// Oracles: the key has the form of its type; an org key only from a trusted
// peer; a tok key is 64 lowercase hex; an ip key is the client address, which
// is the peer itself unless the peer is a trusted proxy; ip_paths force ip.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "tollgate/keying/key_resolver.hpp"

namespace {

using namespace tollgate;

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

keying_config config_with_proxies() {
    keying_config c;
    c.trusted_proxies = {*cidr::parse("10.0.0.0/8"), *cidr::parse("127.0.0.0/8"),
                         *cidr::parse("::1/128"), *cidr::parse("2001:db8::/32")};
    c.trusted_org_sources = {*cidr::parse("10.1.0.0/16"), *cidr::parse("::1/128")};
    c.token_secret = "fuzz-secret";
    c.ip_paths = {"/health", "/registry/*", "/a*b", "*x"};
    return c;
}

const key_resolver& plain() {
    static const key_resolver r{keying_config{}};
    return r;
}

const key_resolver& with_proxies() {
    static const key_resolver r{config_with_proxies()};
    return r;
}

std::string_view next_field(std::string_view& rest) {
    const std::size_t nl = rest.find('\n');
    const std::string_view field = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
    return field;
}

bool in_cidrs(const std::vector<cidr>& list, const ip_address& a) {
    for (const auto& c : list) {
        if (c.contains(a)) {
            return true;
        }
    }
    return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    const std::uint8_t flags = data[0];
    std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
    const bool proxies = flags & 1;
    const key_resolver& resolver = proxies ? with_proxies() : plain();
    static const keying_config configs[2] = {keying_config{}, config_with_proxies()};
    const keying_config& cfg = configs[proxies ? 1 : 0];

    request_facts facts;
    const std::string_view peer_text = next_field(rest);
    static const ip_address fallback[4] = {
        *ip_address::parse("127.0.0.1"), *ip_address::parse("10.1.2.3"),
        *ip_address::parse("203.0.113.7"), *ip_address::parse("::1")};
    facts.peer = ip_address::parse(peer_text).value_or(fallback[(flags >> 1) & 3]);
    facts.path = next_field(rest);
    const std::string_view org = next_field(rest);
    const std::string_view auth = next_field(rest);
    if (flags & 8) {
        facts.org_header = org;
    }
    if (flags & 16) {
        facts.authorization = auth;
    }
    facts.forwarded_for = rest;  // may hold '\n': the resolver must cope

    const resolved_key key = resolver.resolve(facts);
    const resolved_key again = resolver.resolve(facts);
    check(key.key == again.key && key.type == again.type);

    const ip_address client = resolver.client_address(facts.peer, facts.forwarded_for);
    check(key.client == client);
    if (!in_cidrs(cfg.trusted_proxies, facts.peer)) {
        check(client == facts.peer);  // spoofed XFF changes nothing
    }
    const std::string_view k = key.key;
    switch (key.type) {
        case key_type::org: {
            check(k.substr(0, 4) == "org:");
            check(facts.org_header.has_value() && resolver.org_source_trusted(facts.peer));
            check(in_cidrs(cfg.trusted_org_sources, facts.peer));
            const std::string_view id = k.substr(4);
            check(!id.empty() && id.size() <= 128);
            for (char c : id) {
                check((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == ':' || c == '-');
            }
            check(!resolver.is_ip_path(facts.path));
            break;
        }
        case key_type::tok: {
            check(k.substr(0, 4) == "tok:" && k.size() == 4 + 64);
            for (char c : k.substr(4)) {
                check((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
            }
            check(facts.authorization.has_value());
            check(!resolver.is_ip_path(facts.path));
            break;
        }
        case key_type::ip: {
            check(k.substr(0, 3) == "ip:");
            const auto parsed = ip_address::parse(k.substr(3));
            check(parsed.has_value() && *parsed == client);
            check(k.substr(3) == client.to_string());
            break;
        }
    }
    return 0;
}
