#include "tollgate/proxy/headers.hpp"

#include "tollgate/proxy/framing.hpp"

#include <array>
#include <charconv>
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

namespace {

// The fields that concern one connection only (RFC 9110 7.6.1, and the
// HTTP/2 upgrade's), besides whatever `Connection` names.
bool is_hop_by_hop(std::string_view name) {
    static constexpr std::array<std::string_view, 8> names{
        "Connection",       "Keep-Alive",    "TE", "Trailer", "Transfer-Encoding", "Upgrade",
        "Proxy-Connection", "HTTP2-Settings"};
    for (std::string_view n : names) {
        if (name.size() == n.size() && beast::iequals(name, n)) {
            return true;
        }
    }
    return false;
}

// Collects the options a `Connection` value lists, except Host, which a
// request needs whatever the client says (see strip_hop_by_hop).
void add_named(std::string_view connection, std::vector<std::string_view>& named) {
    for_each_token(connection, [&](std::string_view t) {
        if (!beast::iequals(t, "host")) {
            named.push_back(t);
        }
    });
}

// Whether `name` is one of the options `Connection` listed.
bool named_in(std::string_view name, const std::vector<std::string_view>& named) {
    for (std::string_view n : named) {
        if (beast::iequals(name, n)) {
            return true;
        }
    }
    return false;
}

}  // namespace

void append_field(std::string& out, std::string_view name, std::string_view value) {
    // One size check and two copies: heads are rendered field by field.
    const std::size_t at = out.size();
    out.resize(at + name.size() + value.size() + 4);
    char* p = out.data() + at;
    std::char_traits<char>::copy(p, name.data(), name.size());
    p += name.size();
    *p++ = ':';
    *p++ = ' ';
    std::char_traits<char>::copy(p, value.data(), value.size());
    p += value.size();
    *p++ = '\r';
    *p = '\n';
}

void append_field(std::string& out, std::string_view name, std::uint64_t value) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
    append_field(out, name, std::string_view(digits, static_cast<std::size_t>(end - digits)));
}

void strip_hop_by_hop(http::fields& fields) {
    // Most heads carry none: one look at each name, nothing erased.
    bool any = false;
    for (const auto& f : fields) {
        if (is_hop_by_hop(f.name_string())) {
            any = true;
            break;
        }
    }
    if (!any) {
        return;
    }
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

bool keeps_alive(const head_facts& info) {
    if (info.connection_close) {
        return false;
    }
    return info.version >= 11 || info.connection_keep_alive;
}

void render_response_head(std::string_view head, const head_info& info,
                          const response_rewrite& edit, std::string& out) {
    // The status line: `HTTP/1.x NNN reason` or `HTTP/1.x NNN`
    // (validate_response_head).
    const std::string_view line = head.substr(0, head.find("\r\n"));
    std::string_view reason = line.substr(std::min<std::size_t>(13, line.size()));
    if (reason.empty()) {
        reason = http::obsolete_reason(static_cast<http::status>(info.status));
    }
    out += edit.version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
    out.append(line.substr(9, 3));
    out += ' ';
    out.append(reason);
    out += "\r\n";

    const std::span<const raw_field> fields(info.listed.data(), info.fields);
    // Names that `Connection` lists go too.
    std::vector<std::string_view> named;
    if (info.connection_options) {
        for (const auto& f : fields) {
            if (beast::iequals(f.name, "Connection")) {
                add_named(f.value, named);
            }
        }
    }
    auto dropped = [&](std::string_view name) {
        if (info.hop_by_hop && is_hop_by_hop(name)) {
            return true;
        }
        if ((edit.content_length || edit.no_content_length) && name.size() == 14 &&
            beast::iequals(name, "Content-Length")) {
            return true;
        }
        if (named_in(name, named)) {
            return true;
        }
        for (const auto& f : edit.extra) {
            if (name.size() == f.name.size() && beast::iequals(name, f.name)) {
                return true;
            }
        }
        return false;
    };
    bool dated = false;
    for (const auto& f : fields) {
        if (!dropped(f.name)) {
            append_field(out, f.name, f.value);
            dated = dated || (f.name.size() == 4 && beast::iequals(f.name, "Date"));
        }
    }
    if (edit.content_length) {
        append_field(out, "Content-Length", *edit.content_length);
    }
    // What Beast's keep_alive() leaves once Connection is gone.
    if (edit.version == 10 && edit.keep_alive) {
        append_field(out, "Connection", "keep-alive");
    } else if (edit.version != 10 && !edit.keep_alive) {
        append_field(out, "Connection", "close");
    }
    for (const auto& f : edit.extra) {
        append_field(out, f.name, f.value);
    }
    if (!dated && !edit.date.empty()) {
        append_field(out, "Date", edit.date);  // where the parsed path sets it: last
    }
    out += "\r\n";
}

void add_forwarding_headers(http::fields& fields, std::string_view client_ip,
                            std::string_view proto) {
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
    const std::string scheme(proto);  // `proto` may be the field set() erases
    fields.set("X-Forwarded-Proto", scheme);

    std::string via;
    for (const auto& f : boost::make_iterator_range(fields.equal_range(http::field::via))) {
        std::string_view v = trim_ows(f.value());
        if (v.empty()) {
            continue;
        }
        if (!via.empty()) {
            via += ", ";
        }
        via += v;
    }
    if (!via.empty()) {
        via += ", ";
    }
    via += "1.1 tollgate";
    fields.set(http::field::via, via);
}

void render_forwarded_request(const http::request_header<>& req, const forward_edit& edit,
                              std::string& out) {
    out.append(req.method_string());
    out += ' ';
    out.append(req.target());
    out += " HTTP/1.1\r\n";

    // What strip_hop_by_hop() would remove: names `Connection` lists first.
    std::vector<std::string_view> named;
    bool hop = false;
    bool has_host = false;
    for (const auto& f : req) {
        const std::string_view name = f.name_string();
        hop = hop || is_hop_by_hop(name);
        has_host = has_host || f.name() == http::field::host;
        if (f.name() == http::field::connection) {
            add_named(f.value(), named);
        }
    }
    auto stripped = [&](std::string_view name) {
        if (hop && is_hop_by_hop(name)) {
            return true;
        }
        if (named_in(name, named)) {
            return true;
        }
        return false;
    };
    // Fields kept in place; the forwarding lists and framing are set at the
    // end, in the order forward() sets them on the parsed request.
    std::string forwarded_for;
    std::string via;
    for (const auto& f : req) {
        const std::string_view name = f.name_string();
        if (stripped(name)) {
            continue;
        }
        if (beast::iequals(name, "X-Forwarded-For")) {
            const std::string_view v = trim_ows(f.value());
            if (!v.empty()) {
                forwarded_for.append(v);
                forwarded_for += ", ";
            }
            continue;
        }
        if (f.name() == http::field::via) {
            const std::string_view v = trim_ows(f.value());
            if (!v.empty()) {
                via.append(v);
                via += ", ";
            }
            continue;
        }
        if (beast::iequals(name, "X-Forwarded-Proto") ||
            (edit.content_length && f.name() == http::field::content_length)) {
            continue;
        }
        append_field(out, name, f.value());
    }
    forwarded_for.append(edit.client_ip);
    append_field(out, "X-Forwarded-For", forwarded_for);
    append_field(out, "X-Forwarded-Proto", edit.proto);
    via += "1.1 tollgate";
    append_field(out, "Via", via);
    if (!edit.upgrade.empty()) {
        append_field(out, "Connection", "upgrade");
        append_field(out, "Upgrade", edit.upgrade);
    }
    if (edit.content_length) {
        append_field(out, "Content-Length", *edit.content_length);
    }
    if (!has_host) {
        append_field(out, "Host", edit.host);
    }
    out += "\r\n";
}

namespace {

void append(std::string& out, std::string_view text) {
    out.append(text.data(), text.size());
}

void render_fields(const http::fields& fields, std::string& out) {
    for (const auto& f : fields) {
        append_field(out, f.name_string(), f.value());
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
