#include <catch2/catch.hpp>

#include "tollgate/http/local_reply.hpp"

using namespace tollgate;

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
