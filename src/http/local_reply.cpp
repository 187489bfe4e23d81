#include "tollgate/http/local_reply.hpp"

#include "tollgate/http/date.hpp"
#include "tollgate/proxy/headers.hpp"

namespace tollgate {

namespace {

/// A byte that goes into a JSON string as it is: printable ASCII other than
/// the quote and the backslash.
bool plain_ascii(unsigned char c) {
    return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/// The length of the well-formed UTF-8 sequence at the start of `text`, or
/// 0 when there is none: RFC 3629 section 4, so no overlong form, no
/// surrogate (U+D800..U+DFFF) and nothing above U+10FFFF. The first byte
/// is not ASCII.
std::size_t utf8_sequence(std::string_view text) {
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
    const unsigned char lead = byte(0);
    // The second byte's range is narrower after the leads that would
    // otherwise allow an overlong form (E0, F0), a surrogate (ED) or a
    // code point past U+10FFFF (F4).
    std::size_t length = 0;
    unsigned char low = 0x80;
    unsigned char high = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) {
        length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        length = 3;
        low = lead == 0xE0 ? 0xA0 : 0x80;
        high = lead == 0xED ? 0x9F : 0xBF;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        length = 4;
        low = lead == 0xF0 ? 0x90 : 0x80;
        high = lead == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;  // a continuation byte, C0/C1 (always overlong) or F5..FF
    }
    if (text.size() < length || byte(1) < low || byte(1) > high) {
        return 0;
    }
    for (std::size_t i = 2; i < length; ++i) {
        if ((byte(i) & 0xC0) != 0x80) {
            return 0;
        }
    }
    return length;
}

void append_u00(std::string& out, unsigned char c) {
    static constexpr char hex[] = "0123456789abcdef";
    const char escape[] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
    out.append(escape, sizeof escape);
}

}  // namespace

void append_json_escaped(std::string& out, std::string_view text) {
    std::size_t i = 0;
    while (i < text.size()) {
        // Printable ASCII, all of a usual path, method or key, goes in as
        // one run.
        std::size_t end = i;
        while (end < text.size() && plain_ascii(static_cast<unsigned char>(text[end]))) {
            ++end;
        }
        out.append(text.data() + i, end - i);
        if (end == text.size()) {
            return;
        }
        i = end;
        const auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x80) {
            // Well-formed UTF-8 stays as it is. A byte that does not start
            // one (a stray, truncated or overlong sequence, a surrogate,
            // Latin-1 text) is written as \u00XX: the line stays valid JSON
            // for a strict parser and still shows the byte's value.
            if (const std::size_t length = utf8_sequence(text.substr(i))) {
                out.append(text.data() + i, length);
                i += length;
            } else {
                append_u00(out, c);
                ++i;
            }
            continue;
        }
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
                append_u00(out, c);  // the other control characters
        }
        ++i;
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
    if (!reply.date.empty()) {
        append_field(out, "Date", reply.date);
    }
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
    res.set(http::field::date, http_date_now());
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
