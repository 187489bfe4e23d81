// The admin listener's own HTTP handling, whatever the path: HEAD, methods,
// requests that are not HTTP, and its connection cap. Raw bytes over real
// sockets, every read with a deadline, so a listener that never answers
// fails the test instead of hanging it.

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include "test_clients.hpp"
#include "tollgate/admin/admin_server.hpp"

using namespace tollgate;
using namespace tollgate::test;
using namespace std::chrono_literals;

namespace {

/// Sends `bytes` on a fresh connection to the admin port and returns all
/// it answers up to its close (empty when it stayed open 5 s).
std::string exchange(std::uint16_t port, std::string_view bytes) {
    raw_connection c(port);
    try {
        c.write(bytes);
    } catch (const boost::system::system_error&) {
        // Closed before it read everything: what it answered is still there.
    }
    auto out = c.read_to_close(5s);
    INFO("still open after 5 s");
    CHECK(out.has_value());
    return out.value_or("");
}

/// The first response in `bytes`, status 0 when there is none (a failed
/// check, and the caller's checks go on); `head` for the answer to a HEAD
/// request. `used` is set to the bytes it took.
response parse_response(std::string_view bytes, bool head = false, std::size_t* used = nullptr) {
    http::response_parser<http::string_body> parser;
    parser.eager(true);
    parser.skip(head);
    error_code ec;
    const std::size_t n = parser.put(asio::buffer(bytes.data(), bytes.size()), ec);
    if (ec || !parser.is_done()) {
        FAIL_CHECK("no complete response in: " << bytes.substr(0, 200));
        response none;
        none.result(0u);
        return none;
    }
    if (used != nullptr) {
        *used = n;
    }
    return parser.release();
}

std::string admin_get(std::string_view target) {
    return "GET " + std::string(target) + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
}

}  // namespace

TEST_CASE("admin: a reply to HEAD has the head a GET gets and no body, on every path", "[admin]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    // /metrics and /debug/keys change between two requests (durations,
    // window_seconds): their length is only checked to be there.
    const struct {
        std::string_view path;
        unsigned status;
        bool stable;
    } cases[] = {{"/healthz", 200, true},         {"/readyz", 200, true},
                 {"/status", 200, true},          {"/nope", 404, true},
                 {"/metrics", 200, false},        {"/debug/keys", 200, false},
                 {"/debug/keys?top=x", 400, true}};
    for (const auto& c : cases) {
        INFO(c.path);
        // A GET on the same connection right after: a body sent after the
        // HEAD answer would be read as the start of the GET's answer.
        const std::string bytes =
            exchange(gw.admin_port(), "HEAD " + std::string(c.path) +
                                          " HTTP/1.1\r\nHost: x\r\n\r\n" + admin_get("/readyz"));
        std::size_t used = 0;
        const auto head = parse_response(bytes, true, &used);
        CHECK(head.result_int() == c.status);
        CHECK(head.keep_alive());
        const std::string_view rest = std::string_view(bytes).substr(used);
        CHECK(rest.starts_with("HTTP/1.1 200 OK\r\n"));
        CHECK(rest.ends_with("\r\n\r\nready\n"));
        const auto get = parse_response(exchange(gw.admin_port(), admin_get(c.path)));
        CHECK(head[http::field::content_type] == get[http::field::content_type]);
        CHECK(get.count(http::field::date) == 1);  // RFC 9110 6.6.1, as the proxy's own replies
        if (c.stable) {
            CHECK(head[http::field::content_length] == std::to_string(get.body().size()));
        } else {
            CHECK(std::stoul(std::string(head[http::field::content_length])) > 0);
        }
    }
}

TEST_CASE("admin: empty lines before a request line are ignored", "[admin]") {
    // RFC 9112 2.2: some clients send a CRLF after a request's body.
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    const auto r = parse_response(exchange(gw.admin_port(), "\r\n\r\n" + admin_get("/healthz")));
    CHECK(r.result_int() == 200);
    CHECK(r.body() == "ok\n");
}

TEST_CASE("admin: a method other than GET or HEAD gets 405 with Allow, on every path", "[admin]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    for (std::string_view path : {"/metrics", "/healthz", "/readyz", "/debug/keys", "/status"}) {
        for (std::string_view method : {"POST", "PUT", "DELETE", "PATCH", "TRACE", "FOO"}) {
            INFO(method << " " << path);
            const auto res = parse_response(
                exchange(gw.admin_port(), std::string(method) + " " + std::string(path) +
                                              " HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                              "Connection: close\r\n\r\n{}"));
            CHECK(res.result_int() == 405);
            CHECK(res[http::field::allow] == "GET, HEAD");
            CHECK(res.body() == "method not allowed\n");
        }
    }
    // An unknown path is still unknown, whatever the method.
    const auto res = parse_response(exchange(
        gw.admin_port(),
        "POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"));
    CHECK(res.result_int() == 404);
    CHECK(get(gw.admin_port(), "/healthz").result_int() == 200);
}

TEST_CASE("admin: a malformed or oversized request is answered, then the connection closed",
          "[admin]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    const std::string big_body(100 * 1024, 'b');
    std::string chunked = "POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 4; ++i) {
        chunked += "6400\r\n" + std::string(0x6400, 'c') + "\r\n";  // 4 x 25 KiB
    }
    chunked += "0\r\n\r\n";
    const struct {
        std::string_view name;
        std::string bytes;
        unsigned status;
    } cases[] = {
        {"TLS ClientHello bytes", std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11),
         400},
        {"garbage with line ends", std::string("\x00\x01garbage\r\n\r\n", 13), 400},
        // Only the request line, ended by a bare LF: nothing more will come.
        {"bare-LF request line", "GET /healthz HTTP/1.1\n", 400},
        {"bare-LF request", "GET /healthz HTTP/1.1\nHost: x\n\n", 400},
        {"bare CR", "GET /healthz HTTP/1.1\rHost: x", 400},
        {"20 KB header",
         "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20 * 1024, 'a') + "\r\n\r\n",
         431},
        {"100 KB body",
         "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 102400\r\n\r\n" + big_body, 413},
        {"100 KB chunked body", chunked, 413},
        {"Content-Length and Transfer-Encoding",
         "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         400},
        {"malformed chunk",
         "POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
        {"HTTP/2.0", "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 400},
        {"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400},
    };
    for (const auto& c : cases) {
        INFO(c.name);
        const auto res = parse_response(exchange(gw.admin_port(), c.bytes));
        CHECK(res.result_int() == c.status);
        CHECK(res[http::field::connection] == "close");
        CHECK_FALSE(res.body().empty());
    }
    // A HEAD refused for its body gets no body either.
    const std::string bytes = exchange(
        gw.admin_port(), "HEAD /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 102400\r\n\r\n");
    std::size_t used = 0;
    CHECK(parse_response(bytes, true, &used).result_int() == 413);
    CHECK(used == bytes.size());
    CHECK(get(gw.admin_port(), "/healthz").result_int() == 200);
}

TEST_CASE("admin: /debug/keys refuses a top that is not UTF-8 with a JSON 400", "[admin]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    // A raw 0xFF; its percent-encoded form; and a value that quote_value
    // cuts inside the two bytes of an "é".
    for (const std::string& top :
         {std::string("\xff"), std::string("%FF"), std::string(76, 'a') + "\xc3\xa9" + "bbbb"}) {
        INFO(top);
        const auto res = get(gw.admin_port(), "/debug/keys?top=" + top);
        CHECK(res.result_int() == 400);
        CHECK(res[http::field::content_type] == "application/json");
        CHECK(res.body().find("exception") == std::string::npos);
        // A strict parser: it refuses bytes that are not UTF-8.
        const auto doc = nlohmann::json::parse(res.body(), nullptr, false);
        const std::string error = doc.is_object() ? doc.value("error", "") : "";
        CHECK(error.starts_with("top: must be a positive integer"));
    }
}

TEST_CASE("admin: at the cap a new connection takes the place of the longest idle one", "[admin]") {
    // Idle connections (opened and left, as a careless or hostile client
    // does) must not lock probes and scrapes out until their read timeout.
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    std::vector<std::unique_ptr<client>> open;
    for (std::size_t i = 0; i < admin::admin_server::max_connections; ++i) {
        open.push_back(std::make_unique<client>(gw.admin_port()));
    }
    // Idle: after a second without a byte.
    CHECK(eventually([&] {
        try {
            return get(gw.admin_port(), "/healthz").result_int() == 200;
        } catch (const boost::system::system_error&) {
            return false;  // a 503's close can reset the connection before it is read
        }
    }));
    CHECK(open.front()->closed_by_peer());  // the first one waited longest
    request req{http::verb::get, "/healthz", 11};
    req.set(http::field::host, "localhost");
    for (std::size_t i = 2; i < open.size(); ++i) {
        CHECK(open[i]->send(req).result_int() == 200);
    }
}

TEST_CASE("admin: at the cap with every connection inside a request, a new one gets 503",
          "[admin]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    std::vector<std::unique_ptr<client>> open;
    for (std::size_t i = 0; i < admin::admin_server::max_connections; ++i) {
        open.push_back(std::make_unique<client>(gw.admin_port()));
        open.back()->write_raw("GET /healthz HTTP/1.1\r\n");  // a head on its way
    }
    // A connection whose bytes are not read yet has waited less than the
    // second that makes it idle: never the one closed.
    raw_connection extra(gw.admin_port());
    const auto refused = extra.read_to_close(5s);
    REQUIRE(refused.has_value());
    CHECK(parse_response(*refused).result_int() == 503);
    for (auto& c : open) {
        c->write_raw("Host: localhost\r\n\r\n");
        CHECK(c->read().result_int() == 200);
    }
    // One closed makes room for a new one.
    open.pop_back();
    CHECK(eventually([&] {
        try {
            return get(gw.admin_port(), "/healthz").result_int() == 200;
        } catch (const boost::system::system_error&) {
            return false;  // refused before the server saw the close: a reset
        }
    }));
}
