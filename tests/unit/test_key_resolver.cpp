// Keying policy (DESIGN.md section 2) and the token hashes behind tok: keys.

#include <catch2/catch.hpp>

#include <string>

#include "tollgate/config/config.hpp"
#include "tollgate/keying/hash.hpp"
#include "tollgate/keying/key_resolver.hpp"

using namespace tollgate;

namespace {

constexpr std::string_view sha256_abc =
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

ip_address ip(std::string_view text) {
    auto parsed = ip_address::parse(text);
    REQUIRE(parsed.has_value());
    return *parsed;
}

cidr range(std::string_view text) {
    auto parsed = cidr::parse(text);
    REQUIRE(parsed.has_value());
    return *parsed;
}

request_facts facts_from(std::string_view peer, std::string_view path = "/api") {
    request_facts facts;
    facts.peer = ip(peer);
    facts.path = path;
    return facts;
}

/// Key for an untrusted peer presenting only an Authorization header.
std::string key_for_authorization(const key_resolver& resolver, std::string_view value) {
    auto facts = facts_from("203.0.113.5");
    facts.authorization = value;
    return resolver.resolve(facts).key;
}

}  // namespace

// ---------------------------------------------------------------- hashes

TEST_CASE("sha256_hex matches the FIPS 180-2 vectors", "[keying][hash]") {
    CHECK(sha256_hex("abc") == sha256_abc);
    CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    // Repeated calls reuse the per-thread context; the answer must not drift.
    CHECK(sha256_hex("abc") == sha256_abc);
}

TEST_CASE("hmac_sha256_hex matches RFC 4231 and survives key changes", "[keying][hash]") {
    const std::string jefe_vector =
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
    CHECK(hmac_sha256_hex("Jefe", "what do ya want for nothing?") == jefe_vector);
    // Same key again takes the "reuse prepared key" path.
    CHECK(hmac_sha256_hex("Jefe", "what do ya want for nothing?") == jefe_vector);
    // Key change (e.g. after a reload) must re-key, not reuse the old pads.
    CHECK(hmac_sha256_hex("s3cret", "abc") ==
          "4f2f30aaf4a57bd60ab473c8e9c2cdfefc186723d4727ed6f31f04353c91389a");
    CHECK(hmac_sha256_hex("", "") ==
          "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
    // Key "Jef" is a prefix of "Jefe": a prefix must not count as the same key.
    CHECK(hmac_sha256_hex("Jef", "what do ya want for nothing?") != jefe_vector);
    CHECK(hmac_sha256_hex("Jefe", "what do ya want for nothing?") == jefe_vector);
}

TEST_CASE("append_hex writes lowercase pairs after existing text", "[keying][hash]") {
    std::string out = "k:";
    const std::uint8_t bytes[] = {0x00, 0x0f, 0xa5, 0xff};
    append_hex(out, bytes);
    CHECK(out == "k:000fa5ff");
}

// ---------------------------------------------------------------- names

TEST_CASE("key_type names are the metric label values", "[keying]") {
    CHECK(to_string(key_type::org) == "org");
    CHECK(to_string(key_type::tok) == "tok");
    CHECK(to_string(key_type::ip) == "ip");
}

// ---------------------------------------------------------------- org

TEST_CASE("org header is honoured only from trusted sources", "[keying][org]") {
    key_resolver resolver{keying_config{}};  // trusted: 127.0.0.0/8, ::1/128

    auto trusted = facts_from("127.0.0.1");
    trusted.org_header = "acme";
    auto key = resolver.resolve(trusted);
    CHECK(key.type == key_type::org);
    CHECK(key.key == "org:acme");
    CHECK(key.client == ip("127.0.0.1"));
    CHECK(resolver.org_source_trusted(ip("127.0.0.1")));
    CHECK(resolver.org_source_trusted(ip("127.255.0.9")));
    CHECK(resolver.org_source_trusted(ip("::1")));
    CHECK(resolver.org_source_trusted(ip("::ffff:127.0.0.1")));

    auto v6 = facts_from("::1");
    v6.org_header = "acme";
    CHECK(resolver.resolve(v6).key == "org:acme");

    auto untrusted = facts_from("203.0.113.5");
    untrusted.org_header = "acme";
    auto spoofed = resolver.resolve(untrusted);
    CHECK(spoofed.type == key_type::ip);
    CHECK(spoofed.key == "ip:203.0.113.5");
    CHECK_FALSE(resolver.org_source_trusted(ip("203.0.113.5")));
    CHECK_FALSE(resolver.org_source_trusted(ip("::2")));
}

TEST_CASE("org trust follows the configured list", "[keying][org]") {
    keying_config config;
    config.trusted_org_sources = {range("10.0.0.0/8")};
    key_resolver resolver{config};
    CHECK(resolver.org_source_trusted(ip("10.9.8.7")));
    CHECK_FALSE(resolver.org_source_trusted(ip("127.0.0.1")));

    keying_config none;
    none.trusted_org_sources.clear();
    key_resolver closed{none};
    auto facts = facts_from("127.0.0.1");
    facts.org_header = "acme";
    CHECK_FALSE(closed.org_source_trusted(ip("127.0.0.1")));
    CHECK(closed.resolve(facts).type == key_type::ip);
}

TEST_CASE("org values are trimmed and validated", "[keying][org]") {
    key_resolver resolver{keying_config{}};
    auto resolve_org = [&](std::string_view value) {
        auto facts = facts_from("127.0.0.1");
        facts.org_header = value;
        return resolver.resolve(facts);
    };

    CHECK(resolve_org("  acme\t").key == "org:acme");
    CHECK(resolve_org("A-z_0.9:x").key == "org:A-z_0.9:x");
    CHECK(resolve_org(std::string(128, 'a')).key == "org:" + std::string(128, 'a'));

    for (std::string bad :
         {std::string{}, std::string("   "), std::string(129, 'a'), std::string("ac me"),
          std::string("acme/1"), std::string("acme,b"), std::string("caf\xc3\xa9"),
          std::string("a\0b", 3), std::string("a\r\nb"), std::string("*")}) {
        INFO(bad);
        auto key = resolve_org(bad);
        CHECK(key.type == key_type::ip);
        CHECK(key.key == "ip:127.0.0.1");
    }
}

TEST_CASE("an invalid org value falls through to the token", "[keying][org]") {
    key_resolver resolver{keying_config{}};
    auto facts = facts_from("127.0.0.1");
    facts.org_header = "not valid!";
    facts.authorization = "Bearer abc";
    auto key = resolver.resolve(facts);
    CHECK(key.type == key_type::tok);
    CHECK(key.key == "tok:" + std::string(sha256_abc));
}

// ---------------------------------------------------------------- tok

TEST_CASE("bearer tokens are hashed with SHA-256", "[keying][tok]") {
    key_resolver resolver{keying_config{}};
    auto facts = facts_from("203.0.113.5");
    facts.authorization = "Bearer abc";
    auto key = resolver.resolve(facts);
    CHECK(key.type == key_type::tok);
    CHECK(key.key == "tok:" + std::string(sha256_abc));
    CHECK(key.client == ip("203.0.113.5"));
}

TEST_CASE("token_secret switches to HMAC-SHA256", "[keying][tok]") {
    keying_config config;
    config.token_secret = "s3cret";
    key_resolver resolver{config};
    auto key = key_for_authorization(resolver, "Bearer abc");
    CHECK(key == "tok:4f2f30aaf4a57bd60ab473c8e9c2cdfefc186723d4727ed6f31f04353c91389a");
    CHECK(key != "tok:" + std::string(sha256_abc));
}

TEST_CASE("bearer scheme and spacing are parsed leniently", "[keying][tok]") {
    key_resolver resolver{keying_config{}};
    const std::string expected = "tok:" + std::string(sha256_abc);
    for (const char* value : {"Bearer abc", "bearer abc", "BEARER abc", "bEaReR abc",
                              "Bearer   abc  ", "Bearer\tabc", "Bearer \t abc\t", "  Bearer abc"}) {
        INFO(value);
        CHECK(key_for_authorization(resolver, value) == expected);
    }
}

TEST_CASE("non-bearer or malformed credentials fall through to ip", "[keying][tok]") {
    key_resolver resolver{keying_config{}};
    for (const char* value :
         {"", "Bearer", "Bearer ", "Bearer \t ", "Bearertoken", "Bearer:abc", "Basic abc",
          "Basic dXNlcjpwYXNz", "Token abc", "Bearer a b", "Bearer abc,def", "Bearer ab\"c",
          "Bearer =abc", "Bearer abc=d", "Bearer ab\x01", "Bear abc", "Bearer\nabc"}) {
        INFO(value);
        CHECK(key_for_authorization(resolver, value) == "ip:203.0.113.5");
    }
}

TEST_CASE("b64token characters and padding are accepted", "[keying][tok]") {
    key_resolver resolver{keying_config{}};
    const std::string token = "aZ09-._~+/xyz==";
    CHECK(key_for_authorization(resolver, "Bearer " + token) == "tok:" + sha256_hex(token));
    CHECK(key_for_authorization(resolver, "Bearer =") == "ip:203.0.113.5");
}

TEST_CASE("different tokens get different keys, and the raw token is never in the key",
          "[keying][tok]") {
    key_resolver resolver{keying_config{}};
    auto a = key_for_authorization(resolver, "Bearer tok-A");
    auto b = key_for_authorization(resolver, "Bearer tok-B");
    CHECK(a == "tok:717876b49cd1155c2f9dc247c7438b0ba82066a6ea71ae5a069f506bb52c7f8e");
    CHECK(b == "tok:cb5ddacc0c4daa2eec3a6498d013f1988a45cfec1193f42fa2e97b7b85186289");
    CHECK(a != b);

    const std::string secret_token = "super-secret-token-value";
    auto key = key_for_authorization(resolver, "Bearer " + secret_token);
    CHECK(key.size() == 4 + 64);
    CHECK(key.find(secret_token) == std::string::npos);
    CHECK(key.find("super") == std::string::npos);
}

// ---------------------------------------------------------------- precedence

TEST_CASE("precedence is org, then tok, then ip", "[keying]") {
    key_resolver resolver{keying_config{}};
    auto facts = facts_from("127.0.0.1");
    facts.org_header = "acme";
    facts.authorization = "Bearer abc";
    CHECK(resolver.resolve(facts).key == "org:acme");

    // Several tokens in one trusted org share the org bucket.
    facts.authorization = "Bearer other";
    CHECK(resolver.resolve(facts).key == "org:acme");

    facts.org_header.reset();
    CHECK(resolver.resolve(facts).type == key_type::tok);

    facts.authorization.reset();
    auto key = resolver.resolve(facts);
    CHECK(key.type == key_type::ip);
    CHECK(key.key == "ip:127.0.0.1");
}

// ---------------------------------------------------------------- ip paths

TEST_CASE("ip_paths match exactly or by trailing-* prefix", "[keying][paths]") {
    key_resolver resolver{keying_config{}};  // /health, /buildinfo, /registry/*
    CHECK(resolver.is_ip_path("/health"));
    CHECK(resolver.is_ip_path("/buildinfo"));
    CHECK(resolver.is_ip_path("/registry/"));
    CHECK(resolver.is_ip_path("/registry/a/b"));
    CHECK_FALSE(resolver.is_ip_path("/registry"));
    CHECK_FALSE(resolver.is_ip_path("/healthz"));
    CHECK_FALSE(resolver.is_ip_path("/health/"));
    CHECK_FALSE(resolver.is_ip_path("/Health"));
    CHECK_FALSE(resolver.is_ip_path("/api/health"));
    CHECK_FALSE(resolver.is_ip_path(""));

    keying_config config;
    config.ip_paths = {"/a*b", "/v1/*", "/exact"};
    key_resolver custom{config};
    CHECK(custom.is_ip_path("/a*b"));  // '*' not at the end is literal
    CHECK_FALSE(custom.is_ip_path("/axb"));
    CHECK(custom.is_ip_path("/v1/x"));
    CHECK_FALSE(custom.is_ip_path("/health"));
}

TEST_CASE("ip_paths override org and token keys", "[keying][paths]") {
    key_resolver resolver{keying_config{}};
    auto facts = facts_from("127.0.0.1", "/registry/boot");
    facts.org_header = "acme";
    facts.authorization = "Bearer abc";
    auto key = resolver.resolve(facts);
    CHECK(key.type == key_type::ip);
    CHECK(key.key == "ip:127.0.0.1");

    facts.path = "/registryx";
    CHECK(resolver.resolve(facts).key == "org:acme");
}

// ---------------------------------------------------------------- ip and XFF

namespace {

key_resolver proxy_resolver() {
    keying_config config;
    config.trusted_proxies = {range("10.0.0.0/8"), range("fd00::/8")};
    return key_resolver{config};
}

std::string ip_key(const key_resolver& resolver, std::string_view peer, std::string_view xff) {
    auto facts = facts_from(peer);
    facts.forwarded_for = xff;
    auto key = resolver.resolve(facts);
    CHECK(key.type == key_type::ip);
    CHECK(key.key == "ip:" + key.client.to_string());
    return key.key;
}

}  // namespace

TEST_CASE("peer address keys when there is no trusted proxy", "[keying][ip]") {
    key_resolver resolver{keying_config{}};
    CHECK(ip_key(resolver, "198.51.100.7", "") == "ip:198.51.100.7");
    CHECK(ip_key(resolver, "2001:db8::1", "") == "ip:2001:db8::1");
    CHECK(ip_key(resolver, "::ffff:198.51.100.7", "") == "ip:198.51.100.7");
    CHECK(ip_key(resolver, "2001:db8:0:0:0:0:0:1", "") == "ip:2001:db8::1");
}

TEST_CASE("XFF from an untrusted peer changes nothing", "[keying][ip]") {
    auto resolver = proxy_resolver();
    CHECK(ip_key(resolver, "198.51.100.7", "1.1.1.1") == "ip:198.51.100.7");
    CHECK(ip_key(resolver, "198.51.100.7", "10.0.0.1, 1.1.1.1") == "ip:198.51.100.7");
    key_resolver no_proxies{keying_config{}};
    CHECK(ip_key(no_proxies, "127.0.0.1", "1.1.1.1") == "ip:127.0.0.1");
}

TEST_CASE("XFF is walked right to left past trusted proxies", "[keying][ip]") {
    auto resolver = proxy_resolver();
    CHECK(ip_key(resolver, "10.0.0.1", "198.51.100.7") == "ip:198.51.100.7");
    // Client-supplied entries left of the first untrusted hop are ignored.
    CHECK(ip_key(resolver, "10.0.0.1", "6.6.6.6, 198.51.100.7, 10.0.0.2") == "ip:198.51.100.7");
    CHECK(ip_key(resolver, "10.0.0.1", "6.6.6.6,198.51.100.7,10.0.0.2,10.0.0.3") ==
          "ip:198.51.100.7");
    // Several header lines joined with ",".
    CHECK(ip_key(resolver, "10.0.0.1", "6.6.6.6, 198.51.100.7,10.0.0.9") == "ip:198.51.100.7");
    // All hops trusted: the leftmost one.
    CHECK(ip_key(resolver, "10.0.0.1", "10.0.0.3, 10.0.0.2") == "ip:10.0.0.3");
    // Empty header or only empty entries: the peer.
    CHECK(ip_key(resolver, "10.0.0.1", "") == "ip:10.0.0.1");
    CHECK(ip_key(resolver, "10.0.0.1", " , ,") == "ip:10.0.0.1");
    // Empty list elements are skipped.
    CHECK(ip_key(resolver, "10.0.0.1", "198.51.100.7,, 10.0.0.2 ,") == "ip:198.51.100.7");
}

TEST_CASE("XFF entries with ports, brackets and spaces", "[keying][ip]") {
    auto resolver = proxy_resolver();
    CHECK(ip_key(resolver, "10.0.0.1", "  198.51.100.7\t") == "ip:198.51.100.7");
    CHECK(ip_key(resolver, "10.0.0.1", "198.51.100.7:5678") == "ip:198.51.100.7");
    CHECK(ip_key(resolver, "10.0.0.1", "[2001:db8::1]") == "ip:2001:db8::1");
    CHECK(ip_key(resolver, "10.0.0.1", "[2001:db8::1]:443") == "ip:2001:db8::1");
    CHECK(ip_key(resolver, "10.0.0.1", "2001:DB8:0::1") == "ip:2001:db8::1");
    CHECK(ip_key(resolver, "10.0.0.1", "::ffff:198.51.100.7") == "ip:198.51.100.7");
    CHECK(ip_key(resolver, "10.0.0.1", "2001:db8::1, [fd00::2]:80, 10.0.0.2:1") ==
          "ip:2001:db8::1");
}

TEST_CASE("IPv6 trusted proxies and peers", "[keying][ip]") {
    auto resolver = proxy_resolver();
    CHECK(ip_key(resolver, "fd00::1", "198.51.100.7") == "ip:198.51.100.7");
    CHECK(ip_key(resolver, "fd00::1", "2001:db8::5, fd12::9") == "ip:2001:db8::5");
    CHECK(ip_key(resolver, "2001:db8::99", "198.51.100.7") == "ip:2001:db8::99");
}

TEST_CASE("an unparsable XFF entry stops the walk at the hop to its right", "[keying][ip]") {
    auto resolver = proxy_resolver();
    // Garbage right next to the peer: the peer itself.
    CHECK(ip_key(resolver, "10.0.0.1", "198.51.100.7, unknown") == "ip:10.0.0.1");
    // Garbage behind a trusted hop: that hop, never anything left of the garbage.
    CHECK(ip_key(resolver, "10.0.0.1", "6.6.6.6, garbage, 10.0.0.2") == "ip:10.0.0.2");
    for (const char* bad :
         {"1.2.3.4:", "1.2.3.4:x", "1.2.3.4:123456", "[2001:db8::1", "[2001:db8::1]x",
          "[2001:db8::1]:", "2001:db8::1:80:zz", "_hidden", "fe80::1%eth0", "1.2.3.4 5.6.7.8"}) {
        INFO(bad);
        CHECK(ip_key(resolver, "10.0.0.1", std::string("6.6.6.6, ") + bad) == "ip:10.0.0.1");
    }
}

TEST_CASE("client is filled for org and tok keys too", "[keying][ip]") {
    keying_config config;
    config.trusted_proxies = {range("127.0.0.0/8")};
    key_resolver resolver{config};
    auto facts = facts_from("127.0.0.1");
    facts.forwarded_for = "198.51.100.7";
    facts.org_header = "acme";
    auto org = resolver.resolve(facts);
    CHECK(org.key == "org:acme");
    CHECK(org.client == ip("198.51.100.7"));
    // Org trust is about the TCP peer, not the forwarded client.
    CHECK(resolver.client_address(facts.peer, facts.forwarded_for) == ip("198.51.100.7"));
}

TEST_CASE("X-Forwarded-Proto is a trusted proxy's to say when asked, else the listener's scheme",
          "[keying][forwarded]") {
    keying_config config;
    config.trusted_proxies = {range("10.0.0.0/8")};
    config.trust_forwarded_proto = true;
    key_resolver resolver{config};
    const auto proxy = ip("10.1.2.3");
    const auto client = ip("198.51.100.7");
    using sent = std::optional<std::string_view>;

    // A load balancer that ends TLS says https; tollgate itself heard plain HTTP.
    CHECK(resolver.forwarded_proto(proxy, sent{"https"}, false) == "https");
    CHECK(resolver.forwarded_proto(proxy, sent{"http"}, true) == "http");
    CHECK(resolver.forwarded_proto(proxy, sent{" HTTPS "}, false) == "https");
    // A chain appends: only the last element is the trusted proxy's word.
    CHECK(resolver.forwarded_proto(proxy, sent{"https, http"}, false) == "http");
    CHECK(resolver.forwarded_proto(proxy, sent{"gopher,https"}, false) == "https");
    // Nothing sent, several fields, or not a scheme: the listener's own.
    CHECK(resolver.forwarded_proto(proxy, std::nullopt, false) == "http");
    CHECK(resolver.forwarded_proto(proxy, std::nullopt, true) == "https");
    for (std::string_view bad :
         {"", " ", "ftp", "https,", "https;x", "https\r\nX-Admin: 1", "httpss"}) {
        INFO(bad);
        CHECK(resolver.forwarded_proto(proxy, sent{bad}, false) == "http");
    }
    // A client cannot claim a scheme.
    CHECK(resolver.forwarded_proto(client, sent{"https"}, false) == "http");
    CHECK(resolver.forwarded_proto(client, sent{"http"}, true) == "https");
    // Without the setting a trusted proxy's X-Forwarded-For counts, its
    // X-Forwarded-Proto does not (a balancer may pass the client's through).
    config.trust_forwarded_proto = false;
    CHECK(key_resolver{config}.forwarded_proto(proxy, sent{"https"}, false) == "http");
    key_resolver nobody_trusted{keying_config{}};
    CHECK(nobody_trusted.forwarded_proto(proxy, sent{"https"}, false) == "http");
}

TEST_CASE("ipv6_prefix keys an IPv6 client by its network", "[keying][ip]") {
    keying_config config;
    config.ipv6_prefix = 64;
    config.trusted_proxies = {range("10.0.0.0/8")};
    key_resolver resolver{config};
    const auto key_of = [&](std::string_view peer, std::string_view xff = "") {
        auto facts = facts_from(peer);
        facts.forwarded_for = xff;
        return resolver.resolve(facts);
    };
    // Every address of a /64 is one client: a host holds a whole /64.
    CHECK(key_of("2001:db8:1:2::1").key == "ip:2001:db8:1:2::/64");
    CHECK(key_of("2001:db8:1:2:ffff:ffff:ffff:ffff").key == "ip:2001:db8:1:2::/64");
    CHECK(key_of("2001:db8:1:3::1").key == "ip:2001:db8:1:3::/64");
    // The client itself stays the full address.
    CHECK(key_of("2001:db8:1:2::1").client == ip("2001:db8:1:2::1"));
    // Behind a trusted proxy too; IPv4 and mapped IPv4 by address alone.
    CHECK(key_of("10.0.0.1", "2001:db8:1:2::7").key == "ip:2001:db8:1:2::/64");
    CHECK(key_of("198.51.100.7").key == "ip:198.51.100.7");
    CHECK(key_of("::ffff:198.51.100.7").key == "ip:198.51.100.7");

    config.ipv6_prefix = 56;
    CHECK(key_resolver{config}.resolve(facts_from("2001:db8:1:2ff::1")).key ==
          "ip:2001:db8:1:200::/56");
    config.ipv6_prefix = 128;  // the default: each address on its own
    CHECK(key_resolver{config}.resolve(facts_from("2001:db8:1:2::1")).key == "ip:2001:db8:1:2::1");
}
