// ip_address / cidr parsing, formatting and matching edge cases.

#include <catch2/catch.hpp>

#include <string>

#include "tollgate/keying/cidr.hpp"

using tollgate::cidr;
using tollgate::ip_address;

namespace {

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

}  // namespace

TEST_CASE("ip_address parses IPv4 and stores it mapped", "[cidr]") {
    auto a = ip("192.0.2.1");
    CHECK(a.is_v4());
    CHECK(a.to_string() == "192.0.2.1");
    const auto& b = a.bytes();
    CHECK(b[10] == 0xff);
    CHECK(b[11] == 0xff);
    CHECK(b[12] == 192);
    CHECK(b[15] == 1);
    CHECK(ip("0.0.0.0").to_string() == "0.0.0.0");
    CHECK(ip("255.255.255.255").to_string() == "255.255.255.255");
}

TEST_CASE("ip_address rejects malformed IPv4", "[cidr]") {
    for (const char* bad :
         {"",          "1",         "1.2.3",    "1.2.3.4.5", "1.2.3.",     ".1.2.3",    "1..2.3",
          "256.0.0.1", "1.2.3.999", "01.2.3.4", "1.2.3.04",  "1.2.3.4 ",   " 1.2.3.4",  "1.2.3.+4",
          "1.2.3.-4",  "1.2.3.0x4", "a.b.c.d",  "1.2.3.4/8", "1.2.3.4:80", "1234.1.1.1"}) {
        INFO(bad);
        CHECK_FALSE(ip_address::parse(bad).has_value());
    }
}

TEST_CASE("ip_address parses IPv6 forms", "[cidr]") {
    CHECK(ip("::").to_string() == "::");
    CHECK(ip("::1").to_string() == "::1");
    CHECK(ip("2001:db8::1").to_string() == "2001:db8::1");
    CHECK(ip("2001:DB8:0:0:0:0:0:1").to_string() == "2001:db8::1");
    CHECK(ip("2001:0db8:0000:0000:0000:0000:0000:0001").to_string() == "2001:db8::1");
    CHECK(ip("1::").to_string() == "1::");
    CHECK(ip("1:2:3:4:5:6:7::").to_string() == "1:2:3:4:5:6:7:0");
    CHECK(ip("::2:3:4:5:6:7:8").to_string() == "0:2:3:4:5:6:7:8");
    CHECK(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").to_string() ==
          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    CHECK_FALSE(ip("2001:db8::1").is_v4());
    CHECK_FALSE(ip("::1").is_v4());
}

TEST_CASE("ip_address formats IPv6 per RFC 5952", "[cidr]") {
    // Longest zero run compressed; the first one on ties; a single zero group is not.
    CHECK(ip("2001:db8:0:0:1:0:0:1").to_string() == "2001:db8::1:0:0:1");
    CHECK(ip("2001:0:0:1:0:0:0:1").to_string() == "2001:0:0:1::1");
    CHECK(ip("2001:db8:0:1:1:1:1:1").to_string() == "2001:db8:0:1:1:1:1:1");
    CHECK(ip("0:0:0:0:0:0:0:0").to_string() == "::");
    CHECK(ip("fe80:0:0:0:0:0:0:0").to_string() == "fe80::");
    CHECK(ip("0:0:0:0:0:0:0:1").to_string() == "::1");
    CHECK(ip("abcd:ef01:2345:6789:abcd:ef01:2345:6789").to_string() ==
          "abcd:ef01:2345:6789:abcd:ef01:2345:6789");
}

TEST_CASE("IPv4-mapped IPv6 equals the IPv4 address", "[cidr]") {
    auto mapped = ip("::ffff:192.0.2.1");
    CHECK(mapped.is_v4());
    CHECK(mapped == ip("192.0.2.1"));
    CHECK(mapped.to_string() == "192.0.2.1");
    CHECK(ip("::ffff:c000:201") == ip("192.0.2.1"));
    CHECK(ip("0:0:0:0:0:ffff:192.0.2.1") == ip("192.0.2.1"));
    // IPv4-compatible (deprecated) is a different address, not IPv4.
    CHECK_FALSE(ip("::192.0.2.1").is_v4());
    CHECK_FALSE(ip("::192.0.2.1") == ip("192.0.2.1"));
    // Not mapped: ::fffe:...
    CHECK_FALSE(ip("::fffe:192.0.2.1").is_v4());
}

TEST_CASE("ip_address rejects malformed IPv6", "[cidr]") {
    for (const char* bad : {":",
                            ":::",
                            "1:::2",
                            "1::2::3",
                            ":1:2:3:4:5:6:7",
                            "1:2:3:4:5:6:7:",
                            "1:2:3:4:5:6:7",
                            "1:2:3:4:5:6:7:8:9",
                            "1:2:3:4:5:6:7:8::",
                            "::1:2:3:4:5:6:7:8",
                            "12345::",
                            "g::1",
                            "::1%eth0",
                            "fe80::1%1",
                            "[::1]",
                            "::1/128",
                            "::ffff:1.2.3",
                            "::ffff:1.2.3.256",
                            "::1.2.3.4:5",
                            "1.2.3.4::",
                            "1:2:3:4:5:6:7:1.2.3.4",
                            "1:2:3:4:5:6::1.2.3.4",
                            "::ffff:01.2.3.4",
                            "::-1",
                            "::+1",
                            "::0x1",
                            "2001:db8::1 "}) {
        INFO(bad);
        CHECK_FALSE(ip_address::parse(bad).has_value());
    }
    // The longest legal forms with an embedded IPv4 still parse.
    CHECK(ip_address::parse("1:2:3:4:5:6:1.2.3.4").has_value());
    CHECK(ip_address::parse("1:2:3:4:5::1.2.3.4").has_value());
}

TEST_CASE("append_to appends the canonical text", "[cidr]") {
    std::string out = "ip:";
    ip("2001:db8::1").append_to(out);
    CHECK(out == "ip:2001:db8::1");
    out = "x";
    ip("10.1.2.3").append_to(out);
    CHECK(out == "x10.1.2.3");
    out.clear();
    ip("1111:2222:3333:4444:5555:6666:7777:8888").append_to(out);
    CHECK(out.size() == ip_address::max_text_size);
}

TEST_CASE("cidr parses ranges and bare addresses", "[cidr]") {
    CHECK(range("10.0.0.0/8").to_string() == "10.0.0.0/8");
    CHECK(range("192.0.2.7").to_string() == "192.0.2.7/32");
    CHECK(range("::1").to_string() == "::1/128");
    CHECK(range("2001:db8::/32").to_string() == "2001:db8::/32");
    CHECK(range("0.0.0.0/0").to_string() == "0.0.0.0/0");
    CHECK(range("::/0").to_string() == "::/0");
    // An IPv4-mapped range written in IPv6 is the same as the IPv4 range.
    CHECK(range("::ffff:10.0.0.0/104") == range("10.0.0.0/8"));
}

TEST_CASE("cidr rejects host bits and malformed prefixes", "[cidr]") {
    for (const char* bad :
         {"10.0.0.1/8", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8/8", "10.0.0.0/a",
          "10.0.0.0/ 8", "/8", "", "2001:db8::1/32", "2001:db8::/129", "::ffff:10.0.0.0/8",
          "192.0.2.128/24", "10.0.0.0/4294967304", "10.0.0.0/+8", "[::1]/128"}) {
        INFO(bad);
        CHECK_FALSE(cidr::parse(bad).has_value());
    }
}

TEST_CASE("cidr contains checks the prefix bits only", "[cidr]") {
    auto net = range("10.0.0.0/8");
    CHECK(net.contains(ip("10.0.0.0")));
    CHECK(net.contains(ip("10.255.255.255")));
    CHECK(net.contains(ip("::ffff:10.1.2.3")));
    CHECK_FALSE(net.contains(ip("11.0.0.0")));
    CHECK_FALSE(net.contains(ip("9.255.255.255")));
    // IPv4 ranges never match IPv6 addresses that merely share low bytes.
    CHECK_FALSE(net.contains(ip("::a00:1")));

    auto odd = range("192.0.2.128/25");  // prefix not on a byte boundary
    CHECK(odd.contains(ip("192.0.2.128")));
    CHECK(odd.contains(ip("192.0.2.255")));
    CHECK_FALSE(odd.contains(ip("192.0.2.127")));

    auto v6 = range("2001:db8::/33");
    CHECK(v6.contains(ip("2001:db8:7fff::1")));
    CHECK_FALSE(v6.contains(ip("2001:db8:8000::1")));
    CHECK_FALSE(v6.contains(ip("192.0.2.1")));

    auto host = range("::1/128");
    CHECK(host.contains(ip("::1")));
    CHECK_FALSE(host.contains(ip("::2")));
    CHECK_FALSE(host.contains(ip("127.0.0.1")));

    // Families never mix: 0.0.0.0/0 is every IPv4 address and ::/0 every
    // IPv6 one (a trust list with "::/0" must not trust all IPv4 clients).
    // A range inside ::ffff:0:0/96 is an IPv4 range however it is written.
    CHECK(range("0.0.0.0/0").contains(ip("203.0.113.9")));
    CHECK_FALSE(range("0.0.0.0/0").contains(ip("2001:db8::1")));
    CHECK(range("::/0").contains(ip("2001:db8::1")));
    CHECK_FALSE(range("::/0").contains(ip("203.0.113.9")));
    CHECK_FALSE(range("::/8").contains(ip("127.0.0.1")));
    CHECK(range("::/8").contains(ip("::1")));
    CHECK(range("::ffff:0:0/96").contains(ip("203.0.113.9")));
    CHECK(range("::ffff:127.0.0.0/104").contains(ip("127.0.0.1")));
    CHECK_FALSE(range("::ffff:127.0.0.0/104").contains(ip("::1")));
    CHECK_FALSE(range("::fffe:0:0/95").contains(ip("203.0.113.9")));
}

TEST_CASE("ip_address::masked keeps the first bits of the prefix", "[cidr]") {
    const auto a = *ip_address::parse("2001:db8:1:2ff:aaaa:bbbb:cccc:dddd");
    CHECK(a.masked(128) == a);
    CHECK(a.masked(64).to_string() == "2001:db8:1:2ff::");
    CHECK(a.masked(56).to_string() == "2001:db8:1:200::");
    CHECK(a.masked(60).to_string() == "2001:db8:1:2f0::");
    CHECK(a.masked(33).to_string() == "2001:db8::");
    CHECK(a.masked(24).to_string() == "2001:d00::");
    CHECK(a.masked(0).to_string() == "::");
}
