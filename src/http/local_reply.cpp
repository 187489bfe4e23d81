#include "tollgate/http/local_reply.hpp"

#include "tollgate/proxy/headers.hpp"

#include <cstdio>

namespace tollgate {

void append_json_escaped(std::string& out, std::string_view text) {
    for (char c : text) {
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
                    out += buf;
                } else {
                    out += c;
                }
        }
    }
}

void render_local(const local_response& res, std::string& out) {
    out.clear();
    proxy::render_head(res.base(), out);
    out += res.body();
}

void render_refusal(const refusal_reply& reply, std::string& out) {
    using proxy::append_field;
    out.clear();
    out += reply.version == 10 ? "HTTP/1.0 429 Too Many Requests\r\n"
                               : "HTTP/1.1 429 Too Many Requests\r\n";
    append_field(out, "Server", "tollgate");
    for (const auto& f : reply.limits) {
        if (!beast::iequals(f.name, "Retry-After")) {  // set once, below
            append_field(out, f.name, f.value);
        }
    }
    append_field(out, "Retry-After", reply.retry_after);
    append_field(out, "Content-Type", "application/json");
    if (reply.version == 10 && reply.keep_alive) {
        append_field(out, "Connection", "keep-alive");
    } else if (reply.version != 10 && !reply.keep_alive) {
        append_field(out, "Connection", "close");
    }
    append_field(out, "Content-Length", std::uint64_t{reply.body.size()});
    out += "\r\n";
    out.append(reply.body);
}

local_response make_error_reply(http::status status, std::string_view message, unsigned version,
                                bool keep_alive) {
    local_response res{status, version < 10 ? 11 : version};
    res.set(http::field::server, "tollgate");
    res.set(http::field::content_type, "application/json");
    std::string body = "{\"error\":\"";
    append_json_escaped(body, message);
    body += "\"}";
    res.body() = std::move(body);
    res.keep_alive(keep_alive);
    res.prepare_payload();
    return res;
}

}  // namespace tollgate
