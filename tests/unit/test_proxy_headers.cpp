// Header rewriting between client and upstream (RFC 9110 section 7.6.1),
// and route matching.

#include <catch2/catch.hpp>

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
    proxy::add_forwarding_headers(f, "127.0.0.1", false);
    CHECK(joined(f, "X-Forwarded-For") == "127.0.0.1");
    CHECK(f["X-Forwarded-Proto"] == "http");
    CHECK(f[http::field::via] == "1.1 tollgate");

    http::fields g;
    g.insert("X-Forwarded-For", "203.0.113.1");
    g.insert("X-Forwarded-For", " 198.51.100.2 ");
    g.insert("X-Forwarded-Proto", "https");
    g.insert(http::field::via, "1.0 edge");
    proxy::add_forwarding_headers(g, "::1", true);
    // Repeated fields are merged into one list, the peer last.
    CHECK(joined(g, "X-Forwarded-For") == "203.0.113.1, 198.51.100.2, ::1");
    CHECK(joined(g, "X-Forwarded-Proto") == "https");
    CHECK(g[http::field::via] == "1.0 edge, 1.1 tollgate");
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
