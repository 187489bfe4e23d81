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
                std::string out = "stale";
                render_refusal(reply, out);
                INFO("version " << version << " keep " << keep << " mode "
                                << static_cast<int>(mode));
                CHECK(out == expected);
            }
        }
    }
}
