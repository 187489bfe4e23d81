#include "tollgate/proxy/framing.hpp"

#include "tollgate/ascii.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <utility>

namespace tollgate::proxy {
namespace {

using detail::framing_facts;

// Character classes, one table lookup per byte.
enum : std::uint8_t {
    c_tchar = 1 << 0,  // token (RFC 9110 5.6.2)
    c_field = 1 << 1,  // field-vchar / SP / HTAB (VCHAR, obs-text, SP, HTAB)
    c_path = 1 << 2,   // pchar without pct-encoded, and "/" (RFC 3986)
    c_query = 1 << 3,  // visible ASCII but "#"
    c_host = 1 << 4,   // unreserved: what a DNS name or an IP literal is made of
    c_hex = 1 << 5,
    c_digit = 1 << 6,
    c_ows = 1 << 7,  // SP / HTAB
};

constexpr bool in(char c, std::string_view set) {
    for (char s : set) {
        if (s == c) {
            return true;
        }
    }
    return false;
}

constexpr std::array<std::uint8_t, 256> make_classes() {
    std::array<std::uint8_t, 256> t{};
    constexpr std::string_view sub_delims = "!$&'()*+,;=";
    constexpr std::string_view unreserved_marks = "-._~";
    for (int i = 0; i < 256; ++i) {
        const char c = static_cast<char>(i);
        const bool alpha = (i >= 'a' && i <= 'z') || (i >= 'A' && i <= 'Z');
        const bool digit = i >= '0' && i <= '9';
        const bool vchar = i >= 0x21 && i <= 0x7e;
        std::uint8_t v = 0;
        if (alpha || digit || in(c, "!#$%&'*+-.^_`|~")) {
            v |= c_tchar;
        }
        if (vchar || i >= 0x80 || i == ' ' || i == '\t') {
            v |= c_field;
        }
        const bool unreserved = alpha || digit || in(c, unreserved_marks);
        if (unreserved || in(c, sub_delims) || c == ':' || c == '@' || c == '/') {
            v |= c_path;
        }
        if (vchar && c != '#') {
            v |= c_query;
        }
        if (unreserved) {
            v |= c_host;
        }
        if (digit || (i >= 'a' && i <= 'f') || (i >= 'A' && i <= 'F')) {
            v |= c_hex;
        }
        if (digit) {
            v |= c_digit;
        }
        if (c == ' ' || c == '\t') {
            v |= c_ows;
        }
        t[static_cast<std::size_t>(i)] = v;
    }
    return t;
}

constexpr auto classes = make_classes();

inline bool is(char c, std::uint8_t cls) {
    return (classes[static_cast<unsigned char>(c)] & cls) != 0;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && is(s.front(), c_ows)) {
        s.remove_prefix(1);
    }
    while (!s.empty() && is(s.back(), c_ows)) {
        s.remove_suffix(1);
    }
    return s;
}

constexpr framing_error bad(std::string_view message) {
    return framing_error{400, message};
}

// authority = host [ ":" port ], host = IP-literal / IPv4address / reg-name
// (RFC 3986 3.2). No userinfo: RFC 9110 4.2.4 says to treat it as an error.
// reg-name may also hold sub-delims ("a,b", "a;b"), which no DNS name has
// and which components disagree on (a comma reads as a list to some):
// refused.
bool valid_authority(std::string_view a) {
    std::size_t i = 0;
    if (!a.empty() && a[0] == '[') {
        // IP-literal: IPv6address or IPvFuture; a precise IPv6 grammar buys
        // nothing here, the characters it may use are enough to keep
        // delimiters and whitespace out.
        i = 1;
        while (i < a.size() && a[i] != ']') {
            if (!is(a[i], c_host) && a[i] != ':') {
                return false;
            }
            ++i;
        }
        if (i == 1 || i == a.size()) {
            return false;
        }
        ++i;
    } else {
        while (i < a.size() && a[i] != ':') {
            if (a[i] == '%') {
                if (i + 2 >= a.size() || !is(a[i + 1], c_hex) || !is(a[i + 2], c_hex)) {
                    return false;
                }
                i += 3;
                continue;
            }
            if (!is(a[i], c_host)) {
                return false;
            }
            ++i;
        }
    }
    if (i == a.size()) {
        return true;
    }
    if (a[i] != ':') {
        return false;
    }
    for (++i; i < a.size(); ++i) {
        if (!is(a[i], c_digit)) {
            return false;
        }
    }
    return true;
}

// path-abempty [ "?" query ]: pchars with valid %HH that spell no unreserved
// character, no dot segments; the query any visible ASCII but "#".
std::optional<framing_error> check_path_query(std::string_view s) {
    std::size_t i = 0;
    // The current segment: how many dots it has, and whether anything else
    // came before a ';' parameter.
    unsigned dots = 0;
    bool other = false;
    bool params = false;
    auto end_segment = [&]() {
        const bool dot_segment = !other && (dots == 1 || dots == 2);
        dots = 0;
        other = false;
        params = false;
        return dot_segment;
    };
    for (; i < s.size() && s[i] != '?'; ++i) {
        const char c = s[i];
        if (c == '%') {
            if (i + 2 >= s.size() || !is(s[i + 1], c_hex) || !is(s[i + 2], c_hex)) {
                return bad("invalid percent-encoding in request target");
            }
            // An encoded letter, digit, "-", "." or "_" is the same path as
            // the plain one (RFC 3986 6.2.2.2) to a backend, not to the route
            // and ip_paths prefixes: /log%69n would dodge a /login limit.
            // "~" stays allowed: Java's URLEncoder and older Pythons encode it.
            const char decoded = static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
            if (decoded != '~' && is(decoded, c_host)) {
                return bad("percent-encoded unreserved character in request path");
            }
            // Encoded "/" and "\" end a segment for a backend that decodes
            // them before resolving dot segments.
            if (decoded == '/' || decoded == '\\') {
                if (end_segment()) {
                    return bad("dot segment in request target");
                }
            } else if (!params) {
                other = true;
            }
            i += 2;
            continue;
        }
        if (!is(c, c_path)) {
            return bad("invalid character in request target");
        }
        if (c == '/') {
            if (end_segment()) {
                return bad("dot segment in request target");
            }
        } else if (c == ';') {
            params = true;
        } else if (!params) {
            if (c == '.') {
                ++dots;
            } else {
                other = true;
            }
        }
    }
    if (end_segment()) {
        return bad("dot segment in request target");
    }
    for (; i < s.size(); ++i) {
        if (!is(s[i], c_query)) {
            return bad("invalid character in request target");
        }
    }
    return std::nullopt;
}

std::optional<framing_error> check_target(std::string_view method, std::string_view target,
                                          head_facts& info) {
    if (target == "*") {
        info.form = target_form::asterisk;
        if (method != "OPTIONS") {
            return bad("asterisk-form target is only for OPTIONS");
        }
        return std::nullopt;
    }
    if (target[0] == '/') {
        info.form = target_form::origin;
        return check_path_query(target);
    }
    std::size_t scheme = 0;
    if (istarts_with(target, "http://")) {
        scheme = 7;
    } else if (istarts_with(target, "https://")) {
        scheme = 8;
    } else {
        // authority-form is CONNECT's only (refused before this), and
        // tollgate proxies nothing but http(s).
        return bad("invalid request target");
    }
    info.form = target_form::absolute;
    const std::string_view rest = target.substr(scheme);
    const std::size_t end = rest.find_first_of("/?");
    const std::string_view authority = rest.substr(0, end);
    if (authority.empty() || authority[0] == ':' || !valid_authority(authority)) {
        return bad("invalid authority in request target");
    }
    if (end == std::string_view::npos) {
        return std::nullopt;
    }
    return check_path_query(rest.substr(end));
}

// Content-Length = 1*DIGIT; a list of identical values is one value
// (RFC 9110 8.6). Returns the error, or records the value.
std::optional<framing_error> add_content_length(std::string_view value, framing_facts& f,
                                                unsigned status) {
    const framing_error invalid{status, "invalid Content-Length"};
    std::size_t i = 0;
    for (;;) {
        while (i < value.size() && is(value[i], c_ows)) {
            ++i;
        }
        const std::size_t start = i;
        std::uint64_t v = 0;
        for (; i < value.size() && is(value[i], c_digit); ++i) {
            const auto d = static_cast<std::uint64_t>(value[i] - '0');
            if (v > (std::numeric_limits<std::uint64_t>::max() - d) / 10) {
                return invalid;
            }
            v = v * 10 + d;
        }
        if (i == start) {
            return invalid;  // empty element, sign, or another character
        }
        if (f.cl && v != f.cl_value) {
            return framing_error{status, "conflicting Content-Length values"};
        }
        f.cl = true;
        f.cl_value = v;
        while (i < value.size() && is(value[i], c_ows)) {
            ++i;
        }
        if (i == value.size()) {
            return std::nullopt;
        }
        if (value[i] != ',') {
            return invalid;
        }
        ++i;
    }
}

// Transfer-Encoding = #transfer-coding; transfer-coding = token *( OWS ";"
// OWS transfer-parameter ); transfer-parameter = token BWS "=" BWS ( token /
// quoted-string ). Several lines are one list.
void add_transfer_encoding(std::string_view value, framing_facts& f) {
    f.te = true;
    std::size_t i = 0;
    auto skip_ows = [&]() {
        while (i < value.size() && is(value[i], c_ows)) {
            ++i;
        }
    };
    auto token = [&]() {
        const std::size_t start = i;
        while (i < value.size() && is(value[i], c_tchar)) {
            ++i;
        }
        return value.substr(start, i - start);
    };
    for (;;) {
        skip_ows();
        const std::string_view coding = token();
        if (coding.empty()) {
            f.te_malformed = true;  // empty element, quoted coding, junk
            return;
        }
        const bool chunked = iequals(coding, "chunked");
        skip_ows();
        bool parameters = false;
        while (i < value.size() && value[i] == ';') {
            parameters = true;
            ++i;
            skip_ows();
            if (token().empty()) {
                f.te_malformed = true;
                return;
            }
            skip_ows();
            if (i == value.size() || value[i] != '=') {
                f.te_malformed = true;
                return;
            }
            ++i;
            skip_ows();
            if (i < value.size() && value[i] == '"') {
                for (++i; i < value.size() && value[i] != '"'; ++i) {
                    if (value[i] == '\\') {
                        ++i;
                    }
                }
                if (i >= value.size()) {
                    f.te_malformed = true;
                    return;
                }
                ++i;
            } else if (token().empty()) {
                f.te_malformed = true;
                return;
            }
            skip_ows();
        }
        if (chunked) {
            if (parameters) {
                f.te_malformed = true;  // chunked has no parameters (RFC 9112 7)
                return;
            }
            f.te_chunked++;
        } else {
            f.te_other = true;
        }
        f.te_chunked_last = chunked;
        if (i == value.size()) {
            return;
        }
        if (value[i] != ',') {
            f.te_malformed = true;
            return;
        }
        ++i;
    }
}

// Connection = #connection-option (RFC 9110 7.6.1), a list of tokens; so is
// Proxy-Connection (Beast checks both). The proxy removes the fields a
// request's options name before forwarding, so there an option naming a
// field that frames or routes the request (`Connection: Host`) would make
// tollgate forward something other than what it checked.
// A list of tokens; with `info`, what it says about the connection.
bool valid_connection(std::string_view value, bool restrict_options, head_facts* info) {
    std::size_t i = 0;
    for (;;) {
        while (i < value.size() && is(value[i], c_ows)) {
            ++i;
        }
        const std::size_t start = i;
        while (i < value.size() && is(value[i], c_tchar)) {
            ++i;
        }
        const std::string_view option = value.substr(start, i - start);
        if (info && !option.empty()) {
            if (iequals(option, "keep-alive")) {
                info->connection_keep_alive = true;
            } else {
                info->connection_close = info->connection_close || iequals(option, "close");
                info->connection_options = true;
            }
        }
        if (restrict_options && (iequals(option, "host") || iequals(option, "content-length") ||
                                 iequals(option, "transfer-encoding"))) {
            return false;
        }
        while (i < value.size() && is(value[i], c_ows)) {
            ++i;
        }
        if (i == value.size()) {
            return true;
        }
        if (value[i] != ',') {
            return false;
        }
        ++i;
    }
}

// Where the checks of one head stand. Every byte is read through at(), and
// no decision depends on the head's length but the one after its blank
// line: so when a check of a head's first bytes fails without looking past
// them (`ran_out` false), the same check of any longer head fails the same
// way (head_start_check).
struct cursor {
    std::string_view h;
    std::size_t pos = 0;
    mutable bool ran_out = false;

    // '\0' past the end: NUL is invalid wherever a byte is looked at, so a
    // short head fails the same checks as a bad one.
    char at(std::size_t i) const {
        if (i < h.size()) {
            return h[i];
        }
        ran_out = true;
        return '\0';
    }
    bool crlf_at(std::size_t i) const { return at(i) == '\r' && at(i + 1) == '\n'; }
};

// The message for a byte that ended a line or a value where CRLF belonged.
std::string_view line_error(char c, std::size_t next_index, const cursor& cur) {
    if (c == '\r' && cur.at(next_index) != '\n') {
        return "bare CR";
    }
    if (c == '\n') {
        return "bare LF";
    }
    return "control character in header";
}

// The field lines, from cur.pos to the blank line that must end the head.
// `request` decides the `_` and Connection rules and the status of errors;
// `max_fields` is the 431 limit; `listed` (if any) gets the first fields.
// A line counts (cur.pos past it, `f` and `info` updated) once it was
// found whole: on running out, cur.pos is where the unfinished line starts.
std::optional<framing_error> check_fields(cursor& cur, bool request, std::size_t max_fields,
                                          framing_facts& f, head_facts& info, raw_field* listed) {
    const unsigned status = request ? 400 : 502;
    auto error = [status](std::string_view message) { return framing_error{status, message}; };
    for (;;) {
        const std::size_t line = cur.pos;
        const char first = cur.at(line);
        if (first == '\r' && cur.at(line + 1) == '\n') {
            cur.pos = line + 2;
            if (cur.pos != cur.h.size()) {
                return error("data after the end of the header");
            }
            return std::nullopt;
        }
        if (is(first, c_ows)) {
            return error(info.fields == 0 ? "whitespace before the first header field"
                                          : "obsolete line folding");
        }
        // field-name ":" OWS field-value OWS CRLF
        std::size_t i = line;
        bool underscore = false;
        while (is(cur.at(i), c_tchar)) {
            underscore |= cur.at(i) == '_';
            ++i;
        }
        const std::string_view name = cur.h.substr(line, i - line);
        if (cur.at(i) != ':') {
            if (name.empty()) {
                const char c = cur.at(i);
                if (c == '\r' || c == '\n') {
                    return error(line_error(c, i + 1, cur));
                }
                return error("invalid header field name");
            }
            if (is(cur.at(i), c_ows)) {
                return error("whitespace between header field name and colon");
            }
            return error("invalid header field name");
        }
        if (name.empty()) {
            return error("empty header field name");
        }
        if (underscore && request) {
            return error("underscore in header field name");
        }
        ++i;
        while (is(cur.at(i), c_ows)) {
            ++i;
        }
        const std::size_t value_start = i;
        while (is(cur.at(i), c_field)) {
            ++i;
        }
        if (!cur.crlf_at(i)) {
            return error(line_error(cur.at(i), i + 1, cur));
        }
        const std::string_view value = trim_ows(cur.h.substr(value_start, i - value_start));
        cur.pos = i + 2;
        if (listed && info.fields < head_info::max_listed) {
            listed[info.fields] = {name, value};
        }
        info.fields++;
        if (info.fields > max_fields) {
            return framing_error{431, "too many request header fields"};
        }
        // Only the fields that decide framing or routing are looked at.
        switch (name.size()) {
            case 4:
                if (request && iequals(name, "host")) {
                    f.hosts++;
                    if (f.hosts == 1) {
                        f.host = value;
                        f.host_malformed = !valid_authority(value);
                    }
                }
                break;
            case 2:
                info.hop_by_hop |= iequals(name, "te");
                break;
            case 7:
                info.hop_by_hop |= iequals(name, "trailer") || iequals(name, "upgrade");
                break;
            case 10:
                if (iequals(name, "connection")) {
                    info.hop_by_hop = true;
                    if (!valid_connection(value, request, &info)) {
                        return error("invalid Connection");
                    }
                } else {
                    info.hop_by_hop |= iequals(name, "keep-alive");
                }
                break;
            case 16:
                if (iequals(name, "proxy-connection")) {
                    info.hop_by_hop = true;
                    if (!valid_connection(value, false, nullptr)) {
                        return error("invalid Proxy-Connection");
                    }
                }
                break;
            case 14:
                if (iequals(name, "content-length")) {
                    if (auto e = add_content_length(value, f, status)) {
                        return e;
                    }
                } else {
                    info.hop_by_hop |= iequals(name, "http2-settings");
                }
                break;
            case 17:
                if (iequals(name, "transfer-encoding")) {
                    info.hop_by_hop = true;
                    add_transfer_encoding(value, f);
                }
                break;
            default:
                break;
        }
    }
}

// Parses "HTTP/d.d" at `at`. 0 = malformed; otherwise 10 * major + minor.
unsigned parse_version(const cursor& cur, std::size_t at) {
    constexpr std::string_view name = "HTTP/";
    for (std::size_t k = 0; k < name.size(); ++k) {
        if (cur.at(at + k) != name[k]) {
            return 0;
        }
    }
    if (!is(cur.at(at + 5), c_digit) || cur.at(at + 6) != '.' || !is(cur.at(at + 7), c_digit)) {
        return 0;
    }
    const unsigned v = static_cast<unsigned>(cur.h[at + 5] - '0') * 10 +
                       static_cast<unsigned>(cur.h[at + 7] - '0');
    return v == 0 ? 100 : v;  // "HTTP/0.0" is well-formed, just unsupported
}

}  // namespace

std::size_t find_head_end(std::string_view data) {
    std::size_t end = std::string_view::npos;
    for (std::size_t i = data.find('\n'); i != std::string_view::npos; i = data.find('\n', i + 1)) {
        if (i + 1 < data.size() && data[i + 1] == '\n') {
            end = i + 2;
            break;
        }
        if (i + 2 < data.size() && data[i + 1] == '\r' && data[i + 2] == '\n') {
            end = i + 3;
            break;
        }
    }
    // A CR that is not followed by LF can never become a valid line end.
    const std::string_view scan = data.substr(0, end);
    for (std::size_t at = scan.find('\r'); at != std::string_view::npos;
         at = scan.find('\r', at + 1)) {
        if (at + 1 < data.size() && data[at + 1] != '\n') {
            return at + 1;
        }
    }
    return end;
}

std::optional<framing_error> validate_request_head(std::string_view head,
                                                   const head_limits& limits) {
    head_info info;
    return validate_request_head(head, limits, info);
}

namespace {

// The request line; after it, cur.pos is at the first field line.
std::optional<framing_error> check_request_line(cursor& cur, head_facts& info) {
    const std::string_view head = cur.h;

    // method SP request-target SP HTTP-version CRLF, single spaces (RFC 9112 3).
    std::size_t i = 0;
    while (is(cur.at(i), c_tchar)) {
        ++i;
    }
    if (i == 0) {
        if (cur.crlf_at(0)) {
            return bad("empty line before the request line");
        }
        return bad("invalid request method");
    }
    if (cur.at(i) != ' ') {
        return bad("invalid request line");
    }
    info.method = head.substr(0, i);
    if (info.method == "CONNECT") {
        return framing_error{501, "CONNECT is not supported"};
    }
    const std::size_t target_start = ++i;
    while (is(cur.at(i), c_query) || cur.at(i) == '#') {  // any visible ASCII
        ++i;
    }
    if (i == target_start || cur.at(i) != ' ') {
        return bad(i == target_start ? "invalid request line" : "invalid request target");
    }
    info.target = head.substr(target_start, i - target_start);
    const std::size_t version_at = i + 1;
    const unsigned version = parse_version(cur, version_at);
    if (version == 0 || !cur.crlf_at(version_at + 8)) {
        return bad("invalid HTTP version");
    }
    if (version != 10 && version != 11) {
        return framing_error{505, "HTTP version not supported"};
    }
    info.version = version;
    if (auto e = check_target(info.method, info.target, info)) {
        return e;
    }
    cur.pos = version_at + 10;
    return std::nullopt;
}

// What only the whole request head can tell, from what its fields said.
std::optional<framing_error> check_request_framing(const framing_facts& f, head_facts& info) {
    // Framing (RFC 9112 6.1, 6.3).
    if (f.te) {
        if (f.te_malformed) {
            return bad("invalid Transfer-Encoding");
        }
        if (f.cl) {
            return bad("both Content-Length and Transfer-Encoding");
        }
        if (info.version == 10) {
            return bad("Transfer-Encoding in an HTTP/1.0 request");
        }
        if (f.te_chunked > 1 || (f.te_chunked == 1 && !f.te_chunked_last)) {
            return bad("chunked is not the final transfer coding");
        }
    }
    // Host (RFC 9112 3.2).
    if (f.hosts > 1) {
        return bad("more than one Host");
    }
    if (f.hosts == 0 && info.version == 11) {
        return bad("missing Host");
    }
    if (f.host_malformed) {
        return bad("invalid Host");
    }
    info.has_host = f.hosts == 1;
    info.host = f.host;
    if (info.form == target_form::absolute && info.has_host) {
        // The backend must route on the target's authority (RFC 9112 3.2.2)
        // while tollgate routes on Host: they must be the same.
        if (!iequals(request_authority(info.target), info.host)) {
            return bad("Host does not match the request target");
        }
    }
    if (f.te && f.te_other) {
        return framing_error{501, "unsupported transfer coding"};
    }
    info.chunked = f.te;
    if (f.cl) {
        info.content_length = f.cl_value;
    }
    return std::nullopt;
}

std::optional<framing_error> check_request(cursor& cur, const head_limits& limits,
                                           head_info& info) {
    static_cast<head_facts&>(info) = head_facts{};
    if (auto e = check_request_line(cur, info)) {
        return e;
    }
    framing_facts f;
    if (auto e = check_fields(cur, true, limits.max_headers, f, info, info.listed.data())) {
        return e;
    }
    return check_request_framing(f, info);
}

framing_error bad_response(std::string_view message) {
    return framing_error{502, message};
}

// The status line; after it, cur.pos is at the first field line.
std::optional<framing_error> check_status_line(cursor& cur, head_facts& info) {
    const auto& error = bad_response;
    const std::string_view head = cur.h;

    // HTTP-version SP status-code SP [ reason-phrase ] CRLF (RFC 9112 4).
    const unsigned version = parse_version(cur, 0);
    if (version != 10 && version != 11) {
        return error(version == 0 ? "invalid status line" : "unsupported HTTP version");
    }
    info.version = version;
    // The SP before an empty reason is required by the grammar but often
    // left out (`HTTP/1.1 200`): the line is unambiguous either way, and
    // nginx and HAProxy take it too.
    if (cur.at(8) != ' ' || !is(cur.at(9), c_digit) || !is(cur.at(10), c_digit) ||
        !is(cur.at(11), c_digit) || (cur.at(12) != ' ' && !cur.crlf_at(12))) {
        return error("invalid status line");
    }
    info.status = static_cast<unsigned>(head[9] - '0') * 100 +
                  static_cast<unsigned>(head[10] - '0') * 10 +
                  static_cast<unsigned>(head[11] - '0');
    if (info.status < 100 || info.status > 599) {
        return error("invalid status code");
    }
    std::size_t i = cur.at(12) == ' ' ? 13 : 12;
    while (is(cur.at(i), c_field)) {
        ++i;
    }
    if (!cur.crlf_at(i)) {
        return error(cur.at(i) == '\r' || cur.at(i) == '\n' ? line_error(cur.at(i), i + 1, cur)
                                                            : "invalid reason phrase");
    }
    cur.pos = i + 2;
    return std::nullopt;
}

// What only the whole response head can tell, from what its fields said.
std::optional<framing_error> check_response_framing(const framing_facts& f, head_facts& info) {
    const auto& error = bad_response;
    if (f.te) {
        // Anything but exactly `chunked` would be relayed with a coding the
        // client is never told about, or read until close while the
        // upstream meant something else.
        if (f.te_malformed || f.te_other || f.te_chunked != 1) {
            return error("unsupported Transfer-Encoding");
        }
        if (f.cl) {
            return error("both Content-Length and Transfer-Encoding");
        }
        if (info.version == 10) {
            return error("Transfer-Encoding in an HTTP/1.0 response");
        }
    }
    // A 1xx or 204 has no body whatever its fields say (RFC 9110 8.6, RFC
    // 9112 6.1): fields announcing one mean the upstream frames differently.
    const bool no_body_status = info.status < 200 || info.status == 204;
    if (no_body_status && (f.te || (f.cl && f.cl_value != 0))) {
        return error("body framing on a response without body");
    }
    info.chunked = f.te;
    if (f.cl) {
        info.content_length = f.cl_value;
    }
    return std::nullopt;
}

std::optional<framing_error> check_response(cursor& cur, head_info& info) {
    static_cast<head_facts&>(info) = head_facts{};
    if (auto e = check_status_line(cur, info)) {
        return e;
    }
    framing_facts f;
    if (auto e = check_fields(cur, false, std::numeric_limits<std::size_t>::max(), f, info,
                              info.listed.data())) {
        return e;
    }
    return check_response_framing(f, info);
}

// Whether bytes from `from` on could change a verdict on the head they
// end: any byte in its first KiB; later only a line end (a field line is
// judged whole) or a character no head may contain (a TLS record's binary,
// whatever its length).
bool worth_a_look(std::string_view head, std::size_t from) {
    if (from <= 1024) {
        return true;
    }
    return std::any_of(head.begin() + static_cast<std::ptrdiff_t>(from), head.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u == '\n' || u == 0x7f || (u < 0x20 && u != '\t' && u != '\r');
    });
}

}  // namespace

std::optional<framing_error> validate_request_head(std::string_view head, const head_limits& limits,
                                                   head_info& info) {
    cursor cur{head};
    return check_request(cur, limits, info);
}

std::optional<framing_error> check_request_head_start(std::string_view data,
                                                      const head_limits& limits) {
    return head_start_check(limits).feed(data);
}

std::optional<framing_error> validate_response_head(std::string_view head) {
    head_info info;
    return validate_response_head(head, info);
}

std::optional<framing_error> validate_response_head(std::string_view head, head_info& info) {
    cursor cur{head};
    return check_response(cur, info);
}

std::optional<framing_error> check_response_head_start(std::string_view data) {
    return head_start_check().feed(data);
}

std::optional<framing_error> head_start_check::feed(std::string_view data) {
    const std::size_t from = std::min(std::exchange(seen_, data.size()), data.size());
    if (data.empty() || !worth_a_look(data, from)) {
        return std::nullopt;
    }
    cursor cur{data};
    if (line_ == 0) {
        facts_ = head_facts{};
        auto e = request_ ? check_request_line(cur, facts_) : check_status_line(cur, facts_);
        if (cur.ran_out) {
            return std::nullopt;
        }
        if (e) {
            return e;
        }
        line_ = cur.pos;
    }
    cur.pos = line_;
    const std::size_t max_fields =
        request_ ? limits_.max_headers : std::numeric_limits<std::size_t>::max();
    // On copies: what the lines taught is kept only with the line they end
    // at, when the bytes ran out. A verdict keeps nothing, so feeding the
    // same bytes (or more) again gives it again instead of counting lines twice.
    head_facts facts = facts_;
    detail::framing_facts fields = fields_;
    auto e = check_fields(cur, request_, max_fields, fields, facts, nullptr);
    if (cur.ran_out) {
        line_ = cur.pos;
        facts_ = facts;
        fields_ = fields;
        return std::nullopt;
    }
    if (e) {
        return e;
    }
    // The blank line came: the head is whole, and judged whole (facts_ holds
    // views into the bytes of earlier calls).
    return request_ ? validate_request_head(data, limits_) : validate_response_head(data);
}

std::string_view beast_response_head(std::string_view head, std::string& scratch) {
    if (head.size() <= 12 || head[12] != '\r') {
        return head;
    }
    scratch.assign(head.substr(0, 12)).append(" ").append(head.substr(12));
    return scratch;
}

std::string_view request_authority(std::string_view target) {
    if (target.empty() || target[0] == '/') {
        return {};
    }
    const std::size_t scheme = target.find("://");
    if (scheme == std::string_view::npos) {
        return {};
    }
    const std::string_view rest = target.substr(scheme + 3);
    return rest.substr(0, rest.find_first_of("/?"));
}

std::string_view request_path(std::string_view target) {
    if (target.empty() || target[0] == '/' || target == "*") {
        return target.substr(0, target.find('?'));
    }
    const std::size_t scheme = target.find("://");
    if (scheme == std::string_view::npos) {
        return target.substr(0, target.find('?'));
    }
    const std::string_view rest = target.substr(scheme + 3);
    const std::size_t start = rest.find_first_of("/?");
    if (start == std::string_view::npos || rest[start] == '?') {
        return "/";
    }
    const std::string_view path = rest.substr(start);
    return path.substr(0, path.find('?'));
}

namespace {

// One segment with its `;params` cut and unreserved escapes decoded.
void append_segment(std::string& out, std::string_view segment) {
    segment = segment.substr(0, segment.find(';'));
    for (std::size_t i = 0; i < segment.size(); ++i) {
        if (segment[i] == '%' && i + 2 < segment.size()) {
            const bool hex = is(segment[i + 1], c_hex) && is(segment[i + 2], c_hex);
            const char decoded =
                static_cast<char>(hex_value(segment[i + 1]) * 16 + hex_value(segment[i + 2]));
            if (hex && is(decoded, c_host)) {  // an unreserved character
                out += decoded;
                i += 2;
                continue;
            }
        }
        out += segment[i];
    }
}

/// Where `path` has an encoded slash (`%2F`, `%2f`) from `from` on, or npos.
std::size_t find_encoded_slash(std::string_view path, std::size_t from = 0) {
    for (std::size_t i = path.find('%', from); i != std::string_view::npos;
         i = path.find('%', i + 1)) {
        if (i + 2 < path.size() && path[i + 1] == '2' &&
            (path[i + 2] == 'F' || path[i + 2] == 'f')) {
            return i;
        }
    }
    return std::string_view::npos;
}

}  // namespace

std::string_view normalize_path(std::string_view path, std::string& scratch) {
    if (std::size_t slash = find_encoded_slash(path);
        !path.empty() && path[0] == '/' && slash != std::string_view::npos) {
        // A backend that decodes %2F before routing (nginx does) reads
        // /login%2Fx as /login/x: matched the same way, so that it meets the
        // /login route's limit. Rare, so the copy is no concern.
        std::string decoded(path);
        for (; slash != std::string::npos; slash = find_encoded_slash(decoded, slash + 1)) {
            decoded.replace(slash, 3, "/");
        }
        const std::string_view normal = normalize_path(decoded, scratch);
        if (normal.data() != scratch.data()) {
            scratch.assign(normal);  // `decoded` needed nothing more: keep it past this call
        }
        return scratch;
    }
    if (path.empty() || path[0] != '/' ||
        (path.find("//") == std::string_view::npos && path.find(';') == std::string_view::npos &&
         path.find('%') == std::string_view::npos && path.find("/.") == std::string_view::npos)) {
        return path;  // `*`, or nothing a backend would read differently
    }
    scratch.clear();
    std::size_t pos = 1;
    bool trailing_slash = false;
    while (pos <= path.size()) {
        std::size_t end = path.find('/', pos);
        if (end == std::string_view::npos) {
            end = path.size();
        }
        const std::size_t mark = scratch.size();
        append_segment(scratch, path.substr(pos, end - pos));
        const std::string_view segment = std::string_view(scratch).substr(mark);
        const bool last = end == path.size();
        if (segment.empty() || segment == ".") {
            scratch.resize(mark);
            trailing_slash = last;
        } else if (segment == "..") {
            scratch.resize(mark);
            const std::size_t parent = scratch.rfind('/');
            scratch.resize(parent == std::string::npos ? 0 : parent);
            trailing_slash = last;
        } else {
            scratch.insert(mark, 1, '/');
            trailing_slash = false;
        }
        pos = end + 1;
    }
    if (scratch.empty() || trailing_slash) {
        scratch += '/';
    }
    return scratch;
}

std::optional<framing_error> chunk_extension_budget::add(std::string_view extensions) {
    for (char c : extensions) {
        const auto u = static_cast<unsigned char>(c);
        if ((u < 0x20 && c != '\t') || u == 0x7f) {
            return framing_error{400, "control character in chunk extension"};
        }
    }
    used_ += extensions.size();
    if (used_ > max_total) {
        return framing_error{400, "chunk extensions too large"};
    }
    return std::nullopt;
}

bool chunked_line_check::feed(std::string_view bytes) {
    constexpr std::uint64_t saturated = std::numeric_limits<std::uint64_t>::max() / 16;
    std::size_t i = 0;
    while (i < bytes.size() && state_ != state::done && state_ != state::failed) {
        const char c = bytes[i];
        switch (state_) {
            case state::size_first:
                // chunk-size = 1*HEXDIG (RFC 9112 7.1)
                state_ = is(c, c_hex) ? state::size : state::failed;
                remaining_ = state_ == state::size ? hex_value(c) : 0;
                break;
            case state::size:
                if (c == '\r') {
                    state_ = state::size_lf;
                } else if (c == '\n') {
                    state_ = state::failed;
                } else if (in_extension_) {
                    break;  // Beast checks the extensions' syntax at CRLF
                } else if (is(c, c_hex)) {
                    // Too many digits: Beast refuses the size; stop counting.
                    remaining_ =
                        remaining_ >= saturated ? saturated : remaining_ * 16 + hex_value(c);
                } else if (c == ';' || is(c, c_ows)) {
                    in_extension_ = true;  // BWS ";" chunk-ext (RFC 9112 7.1.1)
                } else {
                    state_ = state::failed;
                }
                break;
            case state::size_lf:
                state_ = c != '\n'         ? state::failed
                         : remaining_ == 0 ? state::line_start
                                           : state::data;
                break;
            case state::data: {
                const std::uint64_t take = std::min<std::uint64_t>(remaining_, bytes.size() - i);
                remaining_ -= take;
                i += static_cast<std::size_t>(take);
                if (remaining_ == 0) {
                    state_ = state::data_cr;
                }
                continue;
            }
            case state::data_cr:
                state_ = c == '\r' ? state::data_lf : state::failed;
                break;
            case state::data_lf:
                state_ = c == '\n' ? state::size_first : state::failed;
                in_extension_ = false;
                break;
            case state::line_start:
                state_ = c == '\r' ? state::end_lf : c == '\n' ? state::failed : state::line;
                break;
            case state::line:
                state_ = c == '\r' ? state::line_lf : c == '\n' ? state::failed : state::line;
                break;
            case state::line_lf:
                state_ = c == '\n' ? state::line_start : state::failed;
                break;
            case state::end_lf:
                state_ = c == '\n' ? state::done : state::failed;
                break;
            case state::done:
            case state::failed:
                break;
        }
        ++i;
    }
    return state_ != state::failed;
}

}  // namespace tollgate::proxy
