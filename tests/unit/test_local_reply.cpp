#include <catch2/catch.hpp>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <string_view>

#include "tollgate/http/date.hpp"
#include "tollgate/http/local_reply.hpp"

using namespace tollgate;
using namespace std::string_view_literals;

namespace {

std::string escaped(std::string_view text) {
    std::string out;
    append_json_escaped(out, text);
    return out;
}

/// `text` escaped, read back by a strict JSON parser (nlohmann rejects
/// ill-formed UTF-8 and raw control characters in a string).
std::string read_back(std::string_view text) {
    return nlohmann::json::parse("\"" + escaped(text) + "\"").get<std::string>();
}

/// `code_point` in UTF-8.
std::string utf8(char32_t code_point) {
    std::string out;
    if (code_point < 0x80) {
        out += static_cast<char>(code_point);
    } else if (code_point < 0x800) {
        out += static_cast<char>(0xC0 | (code_point >> 6));
        out += static_cast<char>(0x80 | (code_point & 0x3F));
    } else if (code_point < 0x10000) {
        out += static_cast<char>(0xE0 | (code_point >> 12));
        out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (code_point & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (code_point >> 18));
        out += static_cast<char>(0x80 | ((code_point >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (code_point & 0x3F));
    }
    return out;
}

}  // namespace

TEST_CASE("local reply: rendered bytes are exactly the response", "[local_reply]") {
    auto res = make_error_reply(http::status::too_many_requests, "slow \"down\"", 11, false);
    res.set("X-RateLimit-Remaining", "0");
    res.prepare_payload();
    std::string out = "stale bytes that must go";
    render_local(res, out);
    CHECK(out.rfind("HTTP/1.1 429 Too Many Requests\r\n", 0) == 0);
    CHECK(out.find("\r\nConnection: close\r\n") != std::string::npos);
    CHECK(out.find("stale") == std::string::npos);
    const std::string body = R"({"error":"slow \"down\""})";
    CHECK(out.size() > body.size());
    CHECK(out.substr(out.size() - body.size()) == body);

    // Beast reads back the same message, field for field.
    http::response_parser<http::string_body> parser;
    error_code ec;
    parser.eager(true);
    const std::size_t used = parser.put(asio::buffer(out), ec);
    REQUIRE_FALSE(ec);
    CHECK(used == out.size());
    REQUIRE(parser.is_done());
    const auto& back = parser.get();
    CHECK(back.result_int() == 429);
    CHECK(back.body() == body);
    CHECK(back["Server"] == "tollgate");
    CHECK(back["Content-Type"] == "application/json");
    CHECK(back["X-RateLimit-Remaining"] == "0");
    CHECK(back[http::field::content_length] == std::to_string(body.size()));
    CHECK_FALSE(back.keep_alive());
}

TEST_CASE("local reply: HTTP/1.0 keeps its version and keep-alive", "[local_reply]") {
    auto res = make_error_reply(http::status::bad_gateway, "upstream unavailable", 10, true);
    std::string out;
    render_local(res, out);
    CHECK(out.rfind("HTTP/1.0 502 Bad Gateway\r\n", 0) == 0);
    CHECK(out.find("\r\nConnection: keep-alive\r\n") != std::string::npos);
}

TEST_CASE("render_refusal writes the refusal a local_response would carry", "[local_reply]") {
    limit::decision d;
    d.allowed = false;
    d.limit = 600;
    d.remaining = 0;
    d.reset = std::chrono::milliseconds(2500);
    d.retry_after = std::chrono::milliseconds(1500);
    d.window = std::chrono::seconds(60);
    for (auto mode :
         {headers_mode::draft, headers_mode::ietf, headers_mode::both, headers_mode::none}) {
        const limit::rate_limit_headers rl(d, mode);
        std::vector<limit::header_field> limits;
        rl.for_each([&](const limit::header_field& f) { limits.push_back(f); });
        const limit::refusal_body body(limit::refusal_reason::rate, 2);
        for (unsigned version : {10u, 11u}) {
            for (bool keep : {true, false}) {
                // The message session::refuse used to build, field by field.
                local_response res{http::status::too_many_requests, version};
                res.set(http::field::server, "tollgate");
                res.set(http::field::date, "Sun, 06 Nov 1994 08:49:37 GMT");
                for (const auto& f : limits) {
                    res.set(f.name, f.value);
                }
                res.set(http::field::retry_after, "2");
                res.set(http::field::content_type, limit::refusal_body::content_type);
                res.body() = std::string(body.view());
                res.keep_alive(keep);
                res.prepare_payload();
                std::string expected;
                render_local(res, expected);

                refusal_reply reply;
                reply.version = version;
                reply.keep_alive = keep;
                reply.limits = limits;
                reply.retry_after = 2;
                reply.body = body.view();
                reply.date = "Sun, 06 Nov 1994 08:49:37 GMT";
                std::string out = "stale";
                render_refusal(reply, out);
                INFO("version " << version << " keep " << keep << " mode "
                                << static_cast<int>(mode));
                CHECK(out == expected);
            }
        }
    }
}

TEST_CASE("http_date writes IMF-fixdate whatever the locale", "[local_reply]") {
    CHECK(http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT");
    CHECK(http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT");  // RFC 9110 5.6.7
    CHECK(http_date(951782400) == "Tue, 29 Feb 2000 00:00:00 GMT");
    CHECK(http_date(4102444799) == "Thu, 31 Dec 2099 23:59:59 GMT");
    // The cached one is the current second's.
    const std::time_t before = std::time(nullptr);
    const std::string now(http_date_now());
    const std::time_t after = std::time(nullptr);
    CHECK((now == http_date(before) || now == http_date(after)));
    CHECK(make_error_reply(http::status::bad_gateway, "x", 11, true).count(http::field::date) == 1);
}

TEST_CASE("json escaping: ASCII, quotes, backslashes and control characters", "[local_reply]") {
    CHECK(escaped("") == "");
    CHECK(escaped("/api/v1/users?x=1") == "/api/v1/users?x=1");
    CHECK(escaped("a\"b\\c") == "a\\\"b\\\\c");
    CHECK(escaped("\n\r\t") == "\\n\\r\\t");
    CHECK(escaped("\x01\x1f\0"sv) == "\\u0001\\u001f\\u0000");
    CHECK(escaped("\x7f") == "\x7f");  // DEL is allowed in a JSON string
    std::string out = "{\"path\":\"";
    append_json_escaped(out, "/x");
    CHECK(out == "{\"path\":\"/x");  // appends
    CHECK(read_back("a\"b\\c\n\x01") == "a\"b\\c\n\x01");
}

TEST_CASE("json escaping: well-formed UTF-8 is kept as it is", "[local_reply]") {
    for (std::string_view text : {
             "caf\xc3\xa9"sv,
             "\xc2\x80"sv,             // U+0080, the first two-byte code point
             "\xdf\xbf"sv,             // U+07FF
             "\xe0\xa0\x80"sv,         // U+0800, the first three-byte one
             "\xe2\x82\xac"sv,         // the euro sign
             "\xed\x9f\xbf"sv,         // U+D7FF, just below the surrogates
             "\xee\x80\x80"sv,         // U+E000, just above them
             "\xef\xbf\xbf"sv,         // U+FFFF
             "\xf0\x90\x80\x80"sv,     // U+10000, the first four-byte one
             "/\xf0\x9f\x98\x80/x"sv,  // an emoji between ASCII
             "\xf4\x8f\xbf\xbf"sv,     // U+10FFFF, the last code point
         }) {
        INFO(escaped(text));
        CHECK(escaped(text) == text);
        CHECK(read_back(text) == text);
    }
}

TEST_CASE("json escaping: each byte of ill-formed UTF-8 is written as its value", "[local_reply]") {
    const std::pair<std::string_view, std::string_view> cases[] = {
        {"/caf\xe9"sv, "/caf\\u00e9"},                           // Latin-1
        {"\xff"sv, "\\u00ff"},                                   // never in UTF-8
        {"\xf5\x80\x80\x80"sv, "\\u00f5\\u0080\\u0080\\u0080"},  // a lead past U+10FFFF
        {"\x80x"sv, "\\u0080x"},                                 // a stray continuation byte
        {"\xc3"sv, "\\u00c3"},                                   // cut at the end
        {"\xe2\x82"sv, "\\u00e2\\u0082"},                        // three bytes, two there
        {"\xf0\x9f\x98"sv, "\\u00f0\\u009f\\u0098"},             // four bytes, three there
        {"\xe2\x82/"sv, "\\u00e2\\u0082/"},                      // cut short by ASCII
        {"\xc3\xc3\xa9"sv, "\\u00c3\xc3\xa9"},                   // cut short by a new sequence
        {"\xc0\xaf"sv, "\\u00c0\\u00af"},                        // overlong '/'
        {"\xc1\xbf"sv, "\\u00c1\\u00bf"},                        // overlong U+007F
        {"\xe0\x80\xaf"sv, "\\u00e0\\u0080\\u00af"},             // overlong '/', three bytes
        {"\xe0\x9f\xbf"sv, "\\u00e0\\u009f\\u00bf"},             // overlong U+07FF
        {"\xf0\x80\x80\xaf"sv, "\\u00f0\\u0080\\u0080\\u00af"},  // overlong '/', four bytes
        {"\xf0\x8f\xbf\xbf"sv, "\\u00f0\\u008f\\u00bf\\u00bf"},  // overlong U+FFFF
        {"\xed\xa0\x80"sv, "\\u00ed\\u00a0\\u0080"},             // surrogate U+D800
        {"\xed\xbf\xbf"sv, "\\u00ed\\u00bf\\u00bf"},             // surrogate U+DFFF
        {"\xf4\x90\x80\x80"sv, "\\u00f4\\u0090\\u0080\\u0080"},  // U+110000
        {"\xc3\xa9\xe9"sv, "\xc3\xa9\\u00e9"},                   // a good sequence, then a bad byte
    };
    for (const auto& [text, expected] : cases) {
        INFO(expected);
        CHECK(escaped(text) == expected);
        CHECK_NOTHROW(read_back(text));
    }
    // The byte's value is what a parser reads: U+00E9 for 0xE9.
    CHECK(read_back("/caf\xe9") == "/caf\xc3\xa9");
}

TEST_CASE("json escaping: any bytes make a string a strict parser accepts", "[local_reply]") {
    std::mt19937 rng(20240611);
    // Bytes around the UTF-8 boundaries are where the cases are.
    const unsigned char interesting[] = {0x00, 0x1f, '"',  '\\', 'a',  0x7f, 0x80, 0x8f,
                                         0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf,
                                         0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff};
    std::uniform_int_distribution<std::size_t> length(0, 12);
    std::uniform_int_distribution<std::size_t> pick(0, std::size(interesting) - 1);
    std::uniform_int_distribution<int> any_byte(0, 255);
    std::bernoulli_distribution from_list(0.7);
    for (int n = 0; n < 50000; ++n) {
        std::string text(length(rng), '\0');
        for (auto& c : text) {
            c = static_cast<char>(from_list(rng) ? interesting[pick(rng)] : any_byte(rng));
        }
        INFO(escaped(text));
        REQUIRE_NOTHROW(read_back(text));
    }
    // Well-formed text of random code points, of every encoded length,
    // comes back byte for byte.
    const std::uint32_t highest[] = {0x7F, 0x7FF, 0xFFFF, 0x10FFFF};
    std::uniform_int_distribution<std::size_t> width(0, std::size(highest) - 1);
    for (int n = 0; n < 20000; ++n) {
        std::string text;
        for (std::size_t i = length(rng); i > 0; --i) {
            auto cp = static_cast<char32_t>(
                std::uniform_int_distribution<std::uint32_t>(0x20, highest[width(rng)])(rng));
            if (cp >= 0xD800 && cp <= 0xDFFF) {
                cp = 0xFFFD;  // a surrogate is no code point to encode
            }
            text += utf8(cp);
        }
        INFO(escaped(text));
        REQUIRE(read_back(text) == text);
    }
}
