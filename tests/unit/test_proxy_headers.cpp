// Header rewriting between client and upstream (RFC 9110 section 7.6.1),
// and route matching.

#include <catch2/catch.hpp>

#include "tollgate/proxy/framing.hpp"
#include "tollgate/proxy/headers.hpp"
#include "tollgate/server/gateway.hpp"

using namespace tollgate;

namespace {

std::string joined(const http::fields& f, std::string_view name) {
    std::string out;
    for (const auto& field : f) {
        if (beast::iequals(field.name_string(), name)) {
            if (!out.empty()) {
                out += "|";
            }
            out += field.value();
        }
    }
    return out;
}

}  // namespace

TEST_CASE("strip_hop_by_hop removes the fixed list and what Connection names", "[headers]") {
    http::fields f;
    f.insert(http::field::connection, "keep-alive, X-Hop-One");
    f.insert(http::field::connection, "x-hop-two");
    f.insert("X-Hop-One", "1");
    f.insert("X-Hop-Two", "2");
    f.insert(http::field::keep_alive, "timeout=5");
    f.insert("Proxy-Connection", "keep-alive");
    f.insert(http::field::te, "trailers");
    f.insert(http::field::trailer, "X-Checksum");
    f.insert(http::field::transfer_encoding, "chunked");
    f.insert(http::field::upgrade, "h2c");
    f.insert("HTTP2-Settings", "AAMAAABkAAQAAP__");
    f.insert(http::field::content_length, "5");
    f.insert("X-End-To-End", "kept");
    proxy::strip_hop_by_hop(f);
    for (const char* name :
         {"Connection", "X-Hop-One", "X-Hop-Two", "Keep-Alive", "Proxy-Connection", "TE", "Trailer",
          "Transfer-Encoding", "Upgrade", "HTTP2-Settings"}) {
        INFO(name);
        CHECK(f.find(name) == f.end());
    }
    // End-to-end fields and Content-Length (the caller regenerates framing) stay.
    CHECK(f["X-End-To-End"] == "kept");
    CHECK(f[http::field::content_length] == "5");
}

TEST_CASE("strip_hop_by_hop never drops Host, even when Connection names it", "[headers]") {
    http::fields f;
    f.insert(http::field::connection, "Host, X-Other");
    f.insert(http::field::host, "example");
    f.insert("X-Other", "1");
    proxy::strip_hop_by_hop(f);
    CHECK(f[http::field::host] == "example");
    CHECK(f.find("X-Other") == f.end());
}

TEST_CASE("add_forwarding_headers appends to X-Forwarded-For and Via", "[headers]") {
    http::fields f;
    proxy::add_forwarding_headers(f, "127.0.0.1", "http");
    CHECK(joined(f, "X-Forwarded-For") == "127.0.0.1");
    CHECK(f["X-Forwarded-Proto"] == "http");
    CHECK(f[http::field::via] == "1.1 tollgate");

    http::fields g;
    g.insert("X-Forwarded-For", "203.0.113.1");
    g.insert("X-Forwarded-For", " 198.51.100.2 ");
    g.insert("X-Forwarded-Proto", "http");
    g.insert(http::field::via, "1.0 edge");
    proxy::add_forwarding_headers(g, "::1", "https");
    // Repeated fields are merged into one list, the peer last.
    CHECK(joined(g, "X-Forwarded-For") == "203.0.113.1, 198.51.100.2, ::1");
    CHECK(joined(g, "X-Forwarded-Proto") == "https");
    CHECK(g[http::field::via] == "1.0 edge, 1.1 tollgate");

    // The value kept may be the field's own (a trusted proxy's), which set() replaces.
    http::fields h;
    h.insert("X-Forwarded-Proto", "https");
    const std::string_view kept = h["X-Forwarded-Proto"];
    proxy::add_forwarding_headers(h, "::1", kept);
    CHECK(joined(h, "X-Forwarded-Proto") == "https");
}

TEST_CASE("list_contains compares tokens case-insensitively", "[headers]") {
    CHECK(proxy::list_contains("keep-alive, Upgrade", "upgrade"));
    CHECK(proxy::list_contains(" close ", "close"));
    CHECK_FALSE(proxy::list_contains("closed", "close"));
    CHECK_FALSE(proxy::list_contains("", "close"));
    CHECK(proxy::list_contains("a,,b", "b"));
}

TEST_CASE("routes: longest prefix, host-specific first, segment boundaries", "[routes]") {
    auto cfg = std::make_shared<config>();
    auto route = [](std::string name, std::string prefix, std::string host = "") {
        route_config r;
        r.name = std::move(name);
        r.path_prefix = std::move(prefix);
        r.host = std::move(host);
        return r;
    };
    cfg->routes = {route("api", "/api"), route("api-v2", "/api/v2"),
                   route("api-admin-host", "/api", "admin.example"), route("root", "/")};
    auto rt = server::build_runtime(cfg);
    auto name = [&](std::string_view host, std::string_view path) -> std::string {
        int i = rt->match_route(host, path);
        return i < 0 ? "-" : cfg->routes[static_cast<std::size_t>(i)].name;
    };
    CHECK(name("x", "/api") == "api");
    CHECK(name("x", "/api/users") == "api");
    CHECK(name("x", "/api/v2/users") == "api-v2");
    CHECK(name("x", "/apix") == "root");  // /api does not match /apix
    CHECK(name("admin.example", "/api/users") == "api-admin-host");
    CHECK(name("ADMIN.example:8080", "/api") == "api-admin-host");  // case and port ignored
    CHECK(name("x", "/other") == "root");

    auto no_root = std::make_shared<config>();
    no_root->routes = {route("api", "/api/")};
    auto rt2 = server::build_runtime(no_root);
    CHECK(rt2->match_route("x", "/api/") == 0);
    CHECK(rt2->match_route("x", "/api") == -1);
    CHECK(rt2->match_route("x", "/") == -1);
}

namespace {

// What Beast's serializer writes for `msg`'s head.
template <bool isRequest>
std::string beast_head(http::message<isRequest, http::empty_body>& msg) {
    http::serializer<isRequest, http::empty_body> sr(msg);
    sr.split(true);
    std::string out;
    error_code ec;
    while (!sr.is_header_done()) {
        sr.next(ec, [&](error_code&, const auto& buffers) {
            for (auto b : beast::buffers_range_ref(buffers)) {
                out.append(static_cast<const char*>(b.data()), b.size());
            }
            sr.consume(beast::buffer_bytes(buffers));
        });
    }
    return out;
}

}  // namespace

TEST_CASE("render_head writes the bytes Beast's serializer would", "[proxy][headers]") {
    http::request<http::empty_body> req{http::verb::post, "/a/b?c=d", 11};
    req.set(http::field::host, "example.test");
    req.set("X-Forwarded-For", "10.0.0.1, 127.0.0.1");
    req.insert("X-Dup", "1");
    req.insert("X-Dup", "2");
    req.content_length(12);
    std::string out = "kept prefix|";
    proxy::render_head(req.base(), out);
    CHECK(out == "kept prefix|" + beast_head(req));
    CHECK(out.ends_with("\r\n\r\n"));

    http::response<http::empty_body> res{http::status::not_found, 10};
    res.set(http::field::server, "upstream");
    res.keep_alive(true);
    std::string head;
    proxy::render_head(res.base(), head);
    CHECK(head == beast_head(res));
    CHECK(head.rfind("HTTP/1.0 404 Not Found\r\n", 0) == 0);

    http::response<http::empty_body> custom{http::status::ok, 11};
    custom.reason("Fine Thanks");
    custom.chunked(true);
    head.clear();
    proxy::render_head(custom.base(), head);
    CHECK(head == beast_head(custom));
    CHECK(head.rfind("HTTP/1.1 200 Fine Thanks\r\n", 0) == 0);
}

namespace {

// What session's parsed path sends for `head`: Beast's parse, the same edits
// in the same order (on_response_head), then render_head.
std::string parsed_path(std::string_view head, const proxy::response_rewrite& edit) {
    http::response_parser<http::empty_body> parser;
    parser.skip(true);  // the head only
    error_code ec;
    parser.put(asio::buffer(head.data(), head.size()), ec);
    REQUIRE_FALSE(ec);
    REQUIRE(parser.is_header_done());
    auto& res = parser.get();
    proxy::strip_hop_by_hop(res);
    res.version(edit.version);
    if (edit.content_length) {
        res.content_length(*edit.content_length);
    }
    res.keep_alive(edit.keep_alive);
    for (const auto& f : edit.extra) {
        res.set(f.name, f.value);
    }
    std::string out;
    proxy::render_head(res.base(), out);
    return out;
}

}  // namespace

TEST_CASE("render_response_head writes what the parsed path writes", "[proxy][headers]") {
    const std::vector<std::string> heads = {
        "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 23 Nov 2026 09:00:00 GMT\r\n"
        "Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
        "HTTP/1.1 404 \r\ncontent-length:5\r\nX-A:  spaced value \t\r\n\r\n",
        "HTTP/1.0 200 Fine Thanks\r\nContent-Length: 3, 3\r\nKeep-Alive: timeout=5\r\n"
        "Connection: Keep-Alive\r\n\r\n",
        "HTTP/1.1 201 Created\r\nConnection: close, X-Hop\r\nx-hop: 1\r\nX-Kept: 2\r\n"
        "Proxy-Connection: keep-alive\r\nHTTP2-Settings: AAA\r\nTE: trailers\r\n"
        "Trailer: X-T\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 204 No Content\r\nX-RateLimit-Remaining: 999\r\nx-ratelimit-limit: 1\r\n"
        "RateLimit: upstream\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nConnection: host, Date\r\nHost: h\r\n"
        "Date: d\r\n\r\n",
        "HTTP/1.1 200 OK\r\n\r\n",
    };
    limit::decision d;
    d.allowed = true;
    d.limit = 600;
    d.remaining = 598;
    d.reset = std::chrono::seconds(42);
    d.window = std::chrono::seconds(60);
    for (auto mode :
         {headers_mode::draft, headers_mode::ietf, headers_mode::both, headers_mode::none}) {
        const limit::rate_limit_headers rl(d, mode);
        std::vector<limit::header_field> extra;
        rl.for_each([&](const limit::header_field& f) { extra.push_back(f); });
        for (const auto& head : heads) {
            for (unsigned version : {10u, 11u}) {
                for (bool keep : {true, false}) {
                    for (std::optional<std::uint64_t> length :
                         {std::optional<std::uint64_t>{}, std::optional<std::uint64_t>{7}}) {
                        proxy::response_rewrite edit;
                        edit.version = version;
                        edit.keep_alive = keep;
                        edit.content_length = length;
                        edit.extra = extra;
                        proxy::head_info info;
                        REQUIRE_FALSE(proxy::validate_response_head(head, info));
                        std::string raw;
                        proxy::render_response_head(head, info, edit, raw);
                        INFO(head << " version " << version << " keep " << keep << " length "
                                  << length.value_or(0) << " mode " << static_cast<int>(mode));
                        CHECK(raw == parsed_path(head, edit));
                    }
                }
            }
        }
    }
}

TEST_CASE("render_response_head drops hop-by-hop and replaced fields", "[proxy][headers]") {
    const std::string head =
        "HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: s\r\nKeep-Alive: 1\r\n"
        "Content-Length: 2\r\nX-RateLimit-Remaining: 5\r\nX-Other: o\r\n\r\n";
    const std::array<limit::header_field, 1> extra{{{"X-RateLimit-Remaining", "9"}}};
    proxy::response_rewrite edit;
    edit.content_length = 2;
    edit.extra = extra;
    proxy::head_info info;
    REQUIRE_FALSE(proxy::validate_response_head(head, info));
    std::string out;
    proxy::render_response_head(head, info, edit, out);
    CHECK(out ==
          "HTTP/1.1 200 OK\r\nX-Other: o\r\nContent-Length: 2\r\nX-RateLimit-Remaining: 9\r\n\r\n");
}

TEST_CASE("render_response_head adds the Date it is given only when the response has none",
          "[proxy][headers]") {
    proxy::response_rewrite edit;
    edit.date = "Sun, 06 Nov 1994 08:49:37 GMT";
    for (const std::string& head :
         {std::string("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
          std::string("HTTP/1.1 200 OK\r\ndate: Mon, 07 Nov 1994 08:49:37 GMT\r\nContent-Length: "
                      "0\r\n\r\n")}) {
        proxy::head_info info;
        REQUIRE_FALSE(proxy::validate_response_head(head, info));
        std::string out;
        proxy::render_response_head(head, info, edit, out);
        const bool dated = head.find("date:") != std::string::npos;
        INFO(out);
        CHECK((out.find("Date: Sun, 06 Nov 1994") != std::string::npos) == !dated);
        CHECK((out.find("date: Mon, 07 Nov 1994") != std::string::npos) == dated);
    }
}

TEST_CASE("keeps_alive follows the upstream's version and Connection", "[proxy][headers]") {
    auto keeps = [](std::string_view head) {
        proxy::head_info info;
        REQUIRE_FALSE(proxy::validate_response_head(head, info));
        return proxy::keeps_alive(info);
    };
    CHECK(keeps("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    CHECK(keeps("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n"));
    CHECK_FALSE(keeps("HTTP/1.1 200 OK\r\nconnection: Close\r\n\r\n"));
    CHECK_FALSE(keeps("HTTP/1.1 200 OK\r\nConnection: x\r\nConnection: close\r\n\r\n"));
    CHECK_FALSE(keeps("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
    CHECK(keeps("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n"));
    CHECK_FALSE(keeps("HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\n\r\n"));
}

namespace {

// What session sends for a request with a body (forward(), then
// do_write_request_header): the parsed request edited, then rendered.
std::string edited_request(const http::request_header<>& head, const proxy::forward_edit& edit) {
    http::request<http::empty_body> req{head};
    proxy::strip_hop_by_hop(req);
    proxy::add_forwarding_headers(req, edit.client_ip, edit.proto);
    if (!edit.upgrade.empty()) {
        req.set(http::field::connection, "upgrade");
        req.set(http::field::upgrade, edit.upgrade);
    }
    req.version(11);
    if (edit.content_length) {
        req.content_length(*edit.content_length);
    }
    if (req.find(http::field::host) == req.end()) {
        req.set(http::field::host, edit.host);
    }
    std::string out;
    proxy::render_head(req.base(), out);
    return out;
}

http::request_header<> parsed_request(std::string_view head) {
    http::request_parser<http::empty_body> parser;
    error_code ec;
    parser.put(asio::buffer(head.data(), head.size()), ec);
    REQUIRE_FALSE(ec);
    REQUIRE(parser.is_header_done());
    return parser.get().base();
}

}  // namespace

TEST_CASE("render_forwarded_request writes what the edited request writes", "[proxy][headers]") {
    const std::vector<std::string> heads = {
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
        "GET /a?b=c HTTP/1.0\r\nUser-Agent: t\r\n\r\n",
        "DELETE /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nX-Forwarded-For: 10.0.0.1\r\n"
        "x-forwarded-for:  , 10.0.0.2 \r\nVia: 1.0 edge\r\nX-Forwarded-Proto: https\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, X-Hop, host\r\nUpgrade: websocket\r\n"
        "X-Hop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Connection: close\r\n"
        "HTTP2-Settings: AAA\r\nSec-WebSocket-Key: k\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: h\r\nConnection: X-Forwarded-For, Via\r\n"
        "X-Forwarded-For: 1.2.3.4\r\nVia: 1.1 a\r\nVia: 1.1 b\r\nCookie: a\r\nCookie: b\r\n\r\n",
        "POST /v HTTP/1.1\r\nHost: h\r\nVia:\r\nVia:  1.0 a \r\nVia: \t\r\n\r\n",
    };
    for (const auto& head : heads) {
        const auto req = parsed_request(head);
        for (std::string_view proto : {"http", "https"}) {
            for (std::string_view upgrade : {std::string_view{}, std::string_view{"websocket"}}) {
                for (std::optional<std::uint64_t> length :
                     {std::optional<std::uint64_t>{}, std::optional<std::uint64_t>{0}}) {
                    proxy::forward_edit edit;
                    edit.client_ip = "192.0.2.7";
                    edit.proto = proto;
                    edit.upgrade = upgrade;
                    edit.content_length = length;
                    edit.host = "backend:9000";
                    std::string out;
                    proxy::render_forwarded_request(req, edit, out);
                    INFO(head << " proto " << proto << " upgrade " << upgrade);
                    CHECK(out == edited_request(req, edit));
                }
            }
        }
    }
    std::string out;
    proxy::forward_edit edit;
    edit.client_ip = "192.0.2.7";
    edit.host = "backend:9000";
    proxy::render_forwarded_request(parsed_request(heads[1]), edit, out);
    CHECK(out ==
          "GET /a?b=c HTTP/1.1\r\nUser-Agent: t\r\nX-Forwarded-For: 192.0.2.7\r\n"
          "X-Forwarded-Proto: http\r\nVia: 1.1 tollgate\r\nHost: backend:9000\r\n\r\n");
    // Empty Via fields add no empty list member.
    out.clear();
    proxy::render_forwarded_request(parsed_request(heads.back()), edit, out);
    CHECK(out.find("\r\nVia: 1.0 a, 1.1 tollgate\r\n") != std::string::npos);
}

TEST_CASE("render_response_head keeps the upstream's order of repeated names", "[proxy][headers]") {
    // Beast files a repeated name next to its first occurrence; the raw
    // path leaves the fields where the upstream put them.
    const std::string head =
        "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Other: o\r\nset-cookie: b=2\r\n\r\n";
    proxy::head_info info;
    REQUIRE_FALSE(proxy::validate_response_head(head, info));
    std::string out;
    proxy::render_response_head(head, info, {}, out);
    CHECK(out == "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Other: o\r\nset-cookie: b=2\r\n\r\n");
}
