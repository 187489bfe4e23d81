#include "tollgate/proxy/headers.hpp"

#include <array>
#include <string>
#include <vector>

#include <boost/range/iterator_range.hpp>

namespace tollgate::proxy {
bool list_contains(std::string_view value, std::string_view token) {
    bool found = false;
    for_each_token(value, [&](std::string_view t) {
        if (beast::iequals(t, token)) {
            found = true;
        }
    });
    return found;
}

void strip_hop_by_hop(http::fields& fields) {
    // Names listed in Connection are hop-by-hop too; collect them first since
    // erasing while iterating the Connection values would invalidate them.
    std::vector<std::string> named;
    for (const auto& f : boost::make_iterator_range(fields.equal_range(http::field::connection))) {
        for_each_token(f.value(), [&](std::string_view t) { named.emplace_back(t); });
    }
    for (const auto& name : named) {
        // A request without Host is invalid upstream; naming it in
        // Connection is an attempt to break the next hop, not a hop header.
        if (!beast::iequals(name, "host")) {
            fields.erase(name);
        }
    }
    static constexpr std::array<http::field, 6> known{
        http::field::connection, http::field::keep_alive,        http::field::te,
        http::field::trailer,    http::field::transfer_encoding, http::field::upgrade};
    for (http::field f : known) {
        fields.erase(f);
    }
    fields.erase("Proxy-Connection");
    fields.erase("HTTP2-Settings");
}

void add_forwarding_headers(http::fields& fields, std::string_view client_ip, bool tls) {
    std::string forwarded_for;
    for (const auto& f : boost::make_iterator_range(fields.equal_range("X-Forwarded-For"))) {
        std::string_view v = trim_ows(f.value());
        if (v.empty()) {
            continue;
        }
        if (!forwarded_for.empty()) {
            forwarded_for += ", ";
        }
        forwarded_for += v;
    }
    if (!forwarded_for.empty()) {
        forwarded_for += ", ";
    }
    forwarded_for += client_ip;
    fields.set("X-Forwarded-For", forwarded_for);
    fields.set("X-Forwarded-Proto", tls ? "https" : "http");

    std::string via;
    for (const auto& f : boost::make_iterator_range(fields.equal_range(http::field::via))) {
        if (!via.empty()) {
            via += ", ";
        }
        via += f.value();
    }
    if (!via.empty()) {
        via += ", ";
    }
    via += "1.1 tollgate";
    fields.set(http::field::via, via);
}

namespace {

void append(std::string& out, std::string_view text) {
    out.append(text.data(), text.size());
}

void render_fields(const http::fields& fields, std::string& out) {
    for (const auto& f : fields) {
        append(out, f.name_string());
        out += ": ";
        append(out, f.value());
        out += "\r\n";
    }
    out += "\r\n";
}

}  // namespace

void render_head(const http::request_header<>& head, std::string& out) {
    append(out, head.method_string());
    out += ' ';
    append(out, head.target());
    out += head.version() == 10 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n";
    render_fields(head, out);
}

void render_head(const http::response_header<>& head, std::string& out) {
    out += head.version() == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
    out += std::to_string(head.result_int());
    out += ' ';
    append(out, head.reason());
    out += "\r\n";
    render_fields(head, out);
}

}  // namespace tollgate::proxy
