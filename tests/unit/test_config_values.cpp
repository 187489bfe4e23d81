// Value parsers of config/values.hpp: every accepted form and the exact
// message for each kind of rejection.

#include <catch2/catch.hpp>

#include "tollgate/config/values.hpp"

using namespace tollgate;
using std::chrono::milliseconds;

namespace {

template <class T>
std::string error_of(const parse_result<T>& r) {
    REQUIRE_FALSE(r.has_value());
    return r.error();
}

}  // namespace

TEST_CASE("config: durations: accepted forms", "[config][values]") {
    CHECK(*parse_duration("500ms") == milliseconds{500});
    CHECK(*parse_duration("60s") == milliseconds{60000});
    CHECK(*parse_duration("1m") == milliseconds{60000});
    CHECK(*parse_duration("1h") == milliseconds{3600000});
    CHECK(*parse_duration("0s") == milliseconds{0});
    CHECK(*parse_duration("0") == milliseconds{0});
    CHECK(*parse_duration("0ms") == milliseconds{0});
    CHECK(*parse_duration("8760h") == milliseconds{8760LL * 3600 * 1000});
    CHECK(*parse_duration("31536000000ms") == milliseconds{31536000000LL});
}

TEST_CASE("config: durations: rejections name the problem", "[config][values]") {
    CHECK(error_of(parse_duration("60")) ==
          "needs a unit (ms, s, m or h), e.g. 60s or 500ms, got \"60\"");
    CHECK(error_of(parse_duration("-1s")) == "must not be negative, got \"-1s\"");
    CHECK(error_of(parse_duration("1.5s")) ==
          "must be a whole number of ms, s, m or h (write 1500ms, not 1.5s), got \"1.5s\"");
    CHECK(error_of(parse_duration("abc")) ==
          "must be a duration like 500ms, 60s, 1m or 1h, got \"abc\"");
    CHECK(error_of(parse_duration("")) == "must be a duration like 500ms, 60s, 1m or 1h, got \"\"");
    CHECK(error_of(parse_duration("10d")) ==
          "must be a duration like 500ms, 60s, 1m or 1h (units: ms, s, m, h), got \"10d\"");
    CHECK(error_of(parse_duration("60S")).find("(units: ms, s, m, h)") != std::string::npos);
    CHECK(error_of(parse_duration("60 s")).find("(units: ms, s, m, h)") != std::string::npos);
    CHECK(error_of(parse_duration("1m30s")).find("(units: ms, s, m, h)") != std::string::npos);
    CHECK(error_of(parse_duration("8761h")) == "is too long (at most 8760h), got \"8761h\"");
    CHECK(error_of(parse_duration("99999999999999999999999ms")) ==
          "is too long (at most 8760h), got \"99999999999999999999999ms\"");
    CHECK(error_of(parse_duration("+5s")) ==
          "must be a duration like 500ms, 60s, 1m or 1h, got \"+5s\"");
}

TEST_CASE("config: positive durations reject zero", "[config][values]") {
    CHECK(*parse_positive_duration("1ms") == milliseconds{1});
    CHECK(error_of(parse_positive_duration("0s")) == "must be greater than 0, got \"0s\"");
    CHECK(error_of(parse_positive_duration("0")) == "must be greater than 0, got \"0\"");
}

TEST_CASE("config: sizes: binary and decimal units", "[config][values]") {
    CHECK(*parse_size("16384") == 16384u);
    CHECK(*parse_size("0") == 0u);
    CHECK(*parse_size("512KiB") == 512u * 1024);
    CHECK(*parse_size("10MiB") == 10u * 1024 * 1024);
    CHECK(*parse_size("1GiB") == 1024ull * 1024 * 1024);
    CHECK(*parse_size("2TiB") == 2ull << 40);
    CHECK(*parse_size("10MB") == 10000000u);
    CHECK(*parse_size("1KB") == 1000u);
    CHECK(*parse_size("3GB") == 3000000000ull);
    CHECK(*parse_size("1TB") == 1000000000000ull);
    CHECK(*parse_size("7B") == 7u);
    CHECK(*parse_size("18446744073709551615") == UINT64_MAX);
}

TEST_CASE("config: sizes: rejections", "[config][values]") {
    CHECK(error_of(parse_size("10mb")) ==
          "must be a size like 16384, 512KiB, 10MiB or 1GB (units: B, KiB, MiB, GiB, TiB, KB, MB, "
          "GB, TB; case-sensitive), got \"10mb\"");
    CHECK_FALSE(parse_size("10K").has_value());
    CHECK_FALSE(parse_size("10 MiB").has_value());
    CHECK(error_of(parse_size("-1")) == "must not be negative, got \"-1\"");
    CHECK(error_of(parse_size("1.5MiB")) ==
          "must be a whole number (write 1536KiB, not 1.5MiB), got \"1.5MiB\"");
    CHECK(error_of(parse_size("huge")) ==
          "must be a size like 16384, 512KiB, 10MiB or 1GB, got \"huge\"");
    CHECK(error_of(parse_size("17179869184GiB")) == "is too large, got \"17179869184GiB\"");
    CHECK(error_of(parse_size("18446744073709551616")) ==
          "is too large, got \"18446744073709551616\"");
    CHECK(error_of(parse_positive_size("0KiB")) == "must be greater than 0, got \"0KiB\"");
}

TEST_CASE("config: integers", "[config][values]") {
    CHECK(*parse_positive_integer("1") == 1u);
    CHECK(*parse_positive_integer("600") == 600u);
    CHECK(*parse_positive_integer("18446744073709551615") == UINT64_MAX);
    CHECK(*parse_non_negative_integer("0") == 0u);
    CHECK(*parse_non_negative_integer("1024", 1024) == 1024u);

    CHECK(error_of(parse_positive_integer("ten")) == "must be a positive integer, got \"ten\"");
    CHECK(error_of(parse_positive_integer("-1")) == "must be a positive integer, got \"-1\"");
    CHECK(error_of(parse_positive_integer("1.5")) == "must be a positive integer, got \"1.5\"");
    CHECK(error_of(parse_positive_integer("0")) == "must be a positive integer, got \"0\"");
    CHECK(error_of(parse_positive_integer("")) == "must be a positive integer, got \"\"");
    CHECK(error_of(parse_positive_integer("+5")) == "must be a positive integer, got \"+5\"");
    CHECK(error_of(parse_positive_integer(" 5")) == "must be a positive integer, got \" 5\"");
    CHECK(error_of(parse_positive_integer("1e3")) == "must be a positive integer, got \"1e3\"");
    CHECK(error_of(parse_positive_integer("010")) ==
          "must be a positive integer without leading zeros, got \"010\"");
    CHECK(error_of(parse_positive_integer("18446744073709551616")) ==
          "must be at most 18446744073709551615, got \"18446744073709551616\"");
    CHECK(error_of(parse_non_negative_integer("1025", 1024)) ==
          "must be at most 1024, got \"1025\"");
    CHECK(error_of(parse_non_negative_integer("-0")) ==
          "must be a non-negative integer, got \"-0\"");
}

TEST_CASE("config: booleans", "[config][values]") {
    for (const char* t : {"true", "True", "TRUE"}) {
        CHECK(*parse_bool(t) == true);
    }
    for (const char* f : {"false", "False", "FALSE"}) {
        CHECK(*parse_bool(f) == false);
    }
    CHECK(error_of(parse_bool("yes")) == "must be true or false, got \"yes\"");
    CHECK_FALSE(parse_bool("on").has_value());
    CHECK_FALSE(parse_bool("1").has_value());
    CHECK_FALSE(parse_bool("").has_value());
}

TEST_CASE("config: enums list the allowed values", "[config][values]") {
    CHECK(*parse_algorithm("gcra") == algorithm_kind::gcra);
    CHECK(*parse_algorithm("token_bucket") == algorithm_kind::token_bucket);
    CHECK(*parse_algorithm("fixed_window") == algorithm_kind::fixed_window);
    CHECK(*parse_algorithm("sliding_window") == algorithm_kind::sliding_window);
    // Case and - for _ are the usual slips: said.
    CHECK(error_of(parse_algorithm("GCRA")) ==
          "must be one of gcra, token_bucket, fixed_window, sliding_window; got \"GCRA\" (did you "
          "mean gcra?)");
    CHECK(error_of(parse_algorithm("token-bucket")) ==
          "must be one of gcra, token_bucket, fixed_window, sliding_window; got \"token-bucket\" "
          "(did you mean token_bucket?)");
    CHECK(error_of(parse_log_level("DEBUG")) ==
          "must be one of debug, info, warn, error; got \"DEBUG\" (did you mean debug?)");
    CHECK(*parse_headers_mode("ietf") == headers_mode::ietf);
    CHECK(*parse_headers_mode("both") == headers_mode::both);
    CHECK(error_of(parse_headers_mode("rfc")) ==
          "must be one of draft, ietf, both, none; got \"rfc\"");
    CHECK(*parse_store_kind("redis") == store_kind::redis);
    CHECK_FALSE(parse_store_kind("memcached").has_value());
    CHECK(*parse_failure_mode("closed") == failure_mode::closed);
    CHECK(error_of(parse_failure_mode("fail")) == "must be one of open, closed; got \"fail\"");
    CHECK(*parse_log_level("warn") == log_level::warn);
    CHECK(error_of(parse_log_level("warning")) ==
          "must be one of debug, info, warn, error; got \"warning\"");
    CHECK(to_string(algorithm_kind::sliding_window) == "sliding_window");
    CHECK(to_string(headers_mode::none) == "none");
    CHECK(to_string(store_kind::memory) == "memory");
    CHECK(to_string(failure_mode::open) == "open");
    CHECK(to_string(log_level::debug) == "debug");
}

TEST_CASE("config: listen addresses", "[config][values]") {
    auto v4 = parse_listen_address("0.0.0.0:8080");
    REQUIRE(v4);
    CHECK(v4->host == "0.0.0.0");
    CHECK(v4->port == 8080);
    auto v6 = parse_listen_address("[::1]:9090");
    REQUIRE(v6);
    CHECK(v6->host == "::1");
    CHECK(v6->port == 9090);
    CHECK(parse_listen_address("[::]:80")->host == "::");
    CHECK(parse_listen_address("127.0.0.1:0")->port == 0);
    CHECK(parse_listen_address("127.0.0.1:65535")->port == 65535);

    CHECK(error_of(parse_listen_address(":8080")) ==
          "needs an address before the port: 0.0.0.0:PORT (all IPv4) or [::]:PORT (all IPv6), "
          "got \":8080\"");
    CHECK(error_of(parse_listen_address("8080")) ==
          "must be address:port, e.g. 0.0.0.0:8080 or [::1]:8080, got \"8080\"");
    CHECK(error_of(parse_listen_address("localhost:8080")) ==
          "must use an IP address, not a host name, e.g. 127.0.0.1:8080, got \"localhost:8080\"");
    CHECK(error_of(parse_listen_address("1.2.3:80")) ==
          "is not a valid IPv4 address (four numbers 0-255, no leading zeros), e.g. "
          "127.0.0.1:8080, got \"1.2.3:80\"");
    CHECK(error_of(parse_listen_address("10.0.0.256:80")) ==
          "is not a valid IPv4 address (four numbers 0-255, no leading zeros), e.g. "
          "127.0.0.1:8080, got "
          "\"10.0.0.256:80\"");
    CHECK(error_of(parse_listen_address("::1:8080")) ==
          "needs brackets around an IPv6 address, e.g. [::1]:8080, got \"::1:8080\"");
    CHECK(error_of(parse_listen_address("0.0.0.0:65536")) ==
          "port must be 0-65535, got \"0.0.0.0:65536\"");
    CHECK(error_of(parse_listen_address("0.0.0.0:")) == "port must be 0-65535, got \"0.0.0.0:\"");
    CHECK(error_of(parse_listen_address("0.0.0.0:http")) ==
          "port must be 0-65535, got \"0.0.0.0:http\"");
    CHECK(error_of(parse_listen_address("[1.2.3.4]:80")) ==
          "must have an IPv6 address inside [ ], got \"[1.2.3.4]:80\"");
    CHECK_FALSE(parse_listen_address("[::1]").has_value());
    CHECK_FALSE(parse_listen_address("[::1]8080").has_value());
    CHECK_FALSE(parse_listen_address("256.0.0.1:80").has_value());
    CHECK_FALSE(parse_listen_address("").has_value());
}

TEST_CASE("config: upstream URLs: accepted forms", "[config][values]") {
    auto plain = parse_upstream_url("http://127.0.0.1:9000");
    REQUIRE(plain);
    CHECK(plain->scheme == "http");
    CHECK(plain->host == "127.0.0.1");
    CHECK(plain->port == 9000);
    CHECK(plain->url == "http://127.0.0.1:9000");

    auto named = parse_upstream_url("http://backend.internal");
    REQUIRE(named);
    CHECK(named->host == "backend.internal");
    CHECK(named->port == 80);

    auto v6 = parse_upstream_url("http://[::1]:9000/");
    REQUIRE(v6);
    CHECK(v6->host == "::1");
    CHECK(v6->port == 9000);
    CHECK(parse_upstream_url("HTTP://api-1:8000")->host == "api-1");
    CHECK(parse_upstream_url("HTTP://api-1:8000")->scheme == "http");
}

TEST_CASE("config: upstream URLs: https", "[config][values]") {
    auto secure = parse_upstream_url("https://api.example.com");
    REQUIRE(secure);
    CHECK(secure->scheme == "https");
    CHECK(secure->host == "api.example.com");
    CHECK(secure->port == 443);
    CHECK(secure->url == "https://api.example.com");

    auto v6 = parse_upstream_url("https://[2001:db8::7]:8443/");
    REQUIRE(v6);
    CHECK(v6->scheme == "https");
    CHECK(v6->host == "2001:db8::7");
    CHECK(v6->port == 8443);
    CHECK(parse_upstream_url("https://[::1]")->port == 443);
    CHECK(parse_upstream_url("https://10.0.0.1:80")->port == 80);  // explicit port wins
    // The scheme is case-insensitive and stored lower-case; the url is kept as written.
    auto upper = parse_upstream_url("HTTPS://Backend:9443");
    REQUIRE(upper);
    CHECK(upper->scheme == "https");
    CHECK(upper->url == "HTTPS://Backend:9443");
    CHECK(format_upstream_url(*v6) == "https://[2001:db8::7]:8443");
    CHECK(format_upstream_url(*secure) == "https://api.example.com:443");
    // The same rules as for http:// apply to the rest of the URL.
    CHECK(error_of(parse_upstream_url("https://a:b@backend")) ==
          "must not contain user info (user:password@)");
    CHECK(error_of(parse_upstream_url("https://backend/api")) ==
          "must not have a path, query or fragment (the request path is forwarded as is), got "
          "\"https://backend/api\"");
    CHECK(error_of(parse_upstream_url("https://backend:0")) ==
          "port must be 1-65535, got \"https://backend:0\"");
    CHECK(error_of(parse_upstream_url("https://::1")) ==
          "needs brackets around an IPv6 host, e.g. [::1], got \"https://::1\"");
}

TEST_CASE("config: upstream URLs: rejections", "[config][values]") {
    CHECK(error_of(parse_upstream_url("ftp://example.com")) ==
          "only http:// and https:// upstreams are supported, got \"ftp://example.com\"");
    CHECK(error_of(parse_upstream_url("ws://example.com")) ==
          "only http:// and https:// upstreams are supported, got \"ws://example.com\"");
    CHECK(error_of(parse_upstream_url("httpss://example.com")) ==
          "only http:// and https:// upstreams are supported, got \"httpss://example.com\"");
    CHECK(error_of(parse_upstream_url("127.0.0.1:9000")) ==
          "must be an http:// or https:// URL like http://127.0.0.1:9000, got "
          "\"127.0.0.1:9000\"");
    CHECK(error_of(parse_upstream_url("http://a:b@backend")) ==
          "must not contain user info (user:password@)");
    CHECK(error_of(parse_upstream_url("http://backend/api")) ==
          "must not have a path, query or fragment (the request path is forwarded as is), got "
          "\"http://backend/api\"");
    CHECK_FALSE(parse_upstream_url("http://backend?x=1").has_value());
    CHECK_FALSE(parse_upstream_url("http://backend#frag").has_value());
    CHECK(error_of(parse_upstream_url("http://backend:0")) ==
          "port must be 1-65535, got \"http://backend:0\"");
    CHECK(error_of(parse_upstream_url("http://backend:70000")) ==
          "port must be 1-65535, got \"http://backend:70000\"");
    CHECK(error_of(parse_upstream_url("http://backend:")) ==
          "port must be 1-65535, got \"http://backend:\"");
    CHECK(error_of(parse_upstream_url("http://:80")) == "has no host, got \"http://:80\"");
    CHECK(error_of(parse_upstream_url("http://")) == "has no host, got \"http://\"");
    CHECK(error_of(parse_upstream_url("http://::1:80")) ==
          "needs brackets around an IPv6 host, e.g. [::1], got \"http://::1:80\"");
    CHECK(error_of(parse_upstream_url("http://999.1.1.1")) ==
          "has an invalid IPv4 address, got \"http://999.1.1.1\"");
    CHECK(error_of(parse_upstream_url("http://bad_host")) ==
          "has an invalid host name, got \"http://bad_host\"");
    CHECK(error_of(parse_upstream_url("http://[zz]:80")) ==
          "has an invalid IPv6 address in brackets, got \"http://[zz]:80\"");
}

TEST_CASE("config: upstream lists (TOLLGATE_UPSTREAM form)", "[config][values]") {
    auto two = parse_upstream_list("http://a:1, http://b:2");
    REQUIRE(two);
    REQUIRE(two->size() == 2);
    CHECK((*two)[0].host == "a");
    CHECK((*two)[1].port == 2);
    CHECK((*two)[1].url == "http://b:2");
    CHECK(error_of(parse_upstream_list("http://a:1,,http://b:2")) ==
          "item 2: is empty (comma-separated http:// or https:// URLs), got "
          "\"http://a:1,,http://b:2\"");
    auto mixed = parse_upstream_list("http://a:1,https://b");
    REQUIRE(mixed);
    REQUIRE(mixed->size() == 2);
    CHECK((*mixed)[0].scheme == "http");
    CHECK((*mixed)[1].scheme == "https");
    CHECK((*mixed)[1].port == 443);
    CHECK(error_of(parse_upstream_list("http://a:1,ftp://b")) ==
          "item 2: only http:// and https:// upstreams are supported, got \"ftp://b\"");
    CHECK(error_of(parse_upstream_list("ftp://b")) ==
          "only http:// and https:// upstreams are supported, got \"ftp://b\"");
    CHECK(error_of(parse_upstream_list(" ")) == "must list at least one http:// or https:// URL");
}

TEST_CASE("config: CIDRs explain what is wrong", "[config][values]") {
    CHECK(parse_cidr("10.0.0.0/8")->to_string() == "10.0.0.0/8");
    CHECK(parse_cidr("::1/128")->to_string() == "::1/128");
    CHECK(parse_cidr("192.168.1.7")->to_string() == "192.168.1.7/32");
    CHECK(error_of(parse_cidr("10.0.0.1/8")) ==
          "has host bits set after the /8 prefix (did you mean 10.0.0.0/8?), got \"10.0.0.1/8\"");
    CHECK(error_of(parse_cidr("fd00::1/8")) ==
          "has host bits set after the /8 prefix (did you mean fd00::/8?), got \"fd00::1/8\"");
    CHECK(error_of(parse_cidr("::ffff:127.0.0.1/8")) ==
          "counts its prefix in IPv6 bits (did you mean ::ffff:127.0.0.0/104, or 127.0.0.0/8?), "
          "got \"::ffff:127.0.0.1/8\"");
    CHECK(error_of(parse_cidr("10.0.0.0/33")) == "prefix length must be 0-32, got \"10.0.0.0/33\"");
    CHECK(error_of(parse_cidr("::/129")) == "prefix length must be 0-128, got \"::/129\"");
    CHECK(error_of(parse_cidr("10.0.0.0/")) == "prefix length must be 0-32, got \"10.0.0.0/\"");
    CHECK(error_of(parse_cidr("example.com/8")) ==
          "must be an IP address or CIDR range like 10.0.0.0/8, got \"example.com/8\"");
}

TEST_CASE("config: redis URLs", "[config][values]") {
    auto plain = parse_redis_url("redis://127.0.0.1:6379");
    REQUIRE(plain);
    CHECK(plain->host == "127.0.0.1");
    CHECK(plain->port == 6379);
    CHECK(plain->password.empty());
    CHECK(plain->db == 0);

    auto full = parse_redis_url("redis://app:s3cr@t@cache.internal:6380/2");
    REQUIRE(full);
    CHECK(full->username == "app");
    CHECK(full->password == "s3cr@t");
    CHECK(full->host == "cache.internal");
    CHECK(full->port == 6380);
    CHECK(full->db == 2);

    auto password_only = parse_redis_url("redis://:pw@[::1]");
    REQUIRE(password_only);
    CHECK(password_only->username.empty());
    CHECK(password_only->password == "pw");
    CHECK(password_only->host == "::1");
    CHECK(password_only->port == 6379);

    CHECK(error_of(parse_redis_url("rediss://:pw@host")) ==
          "TLS (rediss://) is not supported; use redis://, got \"rediss://:<redacted>@host\"");
    CHECK(error_of(parse_redis_url("http://host")) ==
          "must be a redis:// URL like redis://127.0.0.1:6379, got \"http://host\"");
    CHECK(error_of(parse_redis_url("redis://:topsecret@host:99999")) ==
          "port must be 1-65535, got \"redis://:<redacted>@host:99999\"");
    CHECK(error_of(parse_redis_url("redis://host/x")) ==
          "database must be a number after '/', e.g. /0, got \"redis://host/x\"");
    // User info is percent-decoded (RFC 3986): secrets may hold @ : / %.
    auto encoded = parse_redis_url("redis://us%65r%3A1:p%40ss%2Fw%3Ard%25@cache:6380");
    REQUIRE(encoded);
    CHECK(encoded->username == "user:1");
    CHECK(encoded->password == "p@ss/w:rd%");
    CHECK(encoded->host == "cache");
    CHECK(parse_redis_url("redis://:%2a%2A@h")->password == "**");
    CHECK(error_of(parse_redis_url("redis://:50%@h")) ==
          "password has an invalid %-escape (write %XX with two hex digits, e.g. %40 for @, %25 "
          "for %), got \"redis://:<redacted>@h\"");
    CHECK(error_of(parse_redis_url("redis://a%zz:pw@h")) ==
          "user name has an invalid %-escape (write %XX with two hex digits, e.g. %40 for @, %25 "
          "for %), got \"redis://a%zz:<redacted>@h\"");

    // No message may ever carry the password.
    for (const char* bad : {"rediss://u:hunter2@h", "redis://:hunter2@h:0", "redis://:hunter2@",
                            "redis://hunter2@h", "redis://:hunter2%4@h", "redis://:hunter2%g0@h"}) {
        auto r = parse_redis_url(bad);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().find("hunter2") == std::string::npos);
    }
}

TEST_CASE("config: redact_redis_url hides only the password", "[config][values]") {
    CHECK(redact_redis_url("redis://:pw@h:6379") == "redis://:<redacted>@h:6379");
    CHECK(redact_redis_url("redis://user:pw@h") == "redis://user:<redacted>@h");
    CHECK(redact_redis_url("redis://pw@h") == "redis://<redacted>@h");
    CHECK(redact_redis_url("redis://h:6379/0") == "redis://h:6379/0");
}

TEST_CASE("config: rate keys are checked and canonicalised", "[config][values]") {
    CHECK(*parse_rate_key("org:acme") == "org:acme");
    CHECK(*parse_rate_key("org:a.b_c:d-e") == "org:a.b_c:d-e");
    CHECK(*parse_rate_key("ip:10.0.0.1") == "ip:10.0.0.1");
    CHECK(*parse_rate_key("ip:::ffff:10.0.0.1") == "ip:10.0.0.1");
    CHECK(*parse_rate_key("ip:2001:DB8:0:0::1") == "ip:2001:db8::1");
    std::string hex(64, 'A');
    CHECK(*parse_rate_key("tok:" + hex) == "tok:" + std::string(64, 'a'));

    CHECK(error_of(parse_rate_key("acme")) ==
          "must be a rate key starting with org:, tok: or ip:, got \"acme\"");
    CHECK(error_of(parse_rate_key("org:")) ==
          "org id must match [A-Za-z0-9._:-]{1,128}, got \"org:\"");
    CHECK_FALSE(parse_rate_key("org:has space").has_value());
    CHECK_FALSE(parse_rate_key("org:" + std::string(129, 'x')).has_value());
    CHECK(error_of(parse_rate_key("ip:example.com")) ==
          "ip: must be followed by an IP address, got \"ip:example.com\"");
    // A raw token pasted by mistake is not echoed back.
    auto raw = parse_rate_key("tok:my-raw-api-token");
    REQUIRE_FALSE(raw.has_value());
    CHECK(raw.error().find("my-raw-api-token") == std::string::npos);
    CHECK_FALSE(parse_rate_key("tok:" + std::string(63, 'a')).has_value());
}

TEST_CASE("config: formatters produce text the parsers accept back", "[config][values]") {
    CHECK(format_duration(milliseconds{0}) == "0");
    CHECK(format_duration(milliseconds{20}) == "20ms");
    CHECK(format_duration(milliseconds{1500}) == "1500ms");
    CHECK(format_duration(milliseconds{90000}) == "90s");
    CHECK(format_duration(milliseconds{60000}) == "1m");
    CHECK(format_duration(milliseconds{7200000}) == "2h");
    for (long long ms : {0LL, 1LL, 999LL, 61000LL, 3600000LL, 8760LL * 3600000}) {
        CHECK(*parse_duration(format_duration(milliseconds{ms})) == milliseconds{ms});
    }
    CHECK(format_size(16384) == "16KiB");
    CHECK(format_size(10u * 1024 * 1024) == "10MiB");
    CHECK(format_size(10000000) == "10000000");
    CHECK(format_size(0) == "0");
    for (std::uint64_t b :
         std::initializer_list<std::uint64_t>{0, 1, 1000, 1024, 1ull << 40, UINT64_MAX}) {
        CHECK(*parse_size(format_size(b)) == b);
    }
    CHECK(format_listen_address({"::1", 80}) == "[::1]:80");
    CHECK(format_listen_address({"0.0.0.0", 8080}) == "0.0.0.0:8080");
    upstream_server s;
    s.host = "::1";
    s.port = 9000;
    CHECK(format_upstream_url(s) == "http://[::1]:9000");
}

TEST_CASE("config: quote_value escapes and shortens", "[config][values]") {
    CHECK(quote_value("a\"b\\c") == "\"a\\\"b\\\\c\"");
    CHECK(quote_value("x\ny") == "\"x\\x0ay\"");
    std::string quoted = quote_value(std::string(200, 'z'));
    CHECK(quoted.size() == 80 + 2);
    CHECK(quoted.ends_with("...\""));
}
