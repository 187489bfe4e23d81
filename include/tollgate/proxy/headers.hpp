#pragma once
/// @file headers.hpp
/// Header rewriting between client and upstream: hop-by-hop removal
/// (RFC 9110 section 7.6.1) and the forwarding headers a backend expects.
/// Stateless functions; safe from any thread.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "tollgate/limit/headers.hpp"
#include "tollgate/net.hpp"

namespace tollgate::proxy {

/// Removes every field named in `Connection`, then `Connection`, `Keep-Alive`,
/// `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`, `HTTP2-Settings` and
/// `Transfer-Encoding`. Framing (`Content-Length` / chunked) is regenerated
/// by the caller from what the parser saw, never copied. `Host` is never
/// removed, even when `Connection` names it.
void strip_hop_by_hop(http::fields& fields);

/// Appends `client_ip` to `X-Forwarded-For` (merging repeated fields into one
/// list), sets `X-Forwarded-Proto` to `proto` (one field; see
/// key_resolver::forwarded_proto) and appends `1.1 tollgate` to `Via`.
void add_forwarding_headers(http::fields& fields, std::string_view client_ip,
                            std::string_view proto);

/// Appends the head of a request or response exactly as Beast's serializer
/// writes it (start line, the fields in order, blank line) to `out`: one
/// contiguous buffer for one write, without walking a buffer sequence per
/// field. Framing fields must already be set.
void render_head(const http::request_header<>& head, std::string& out);
void render_head(const http::response_header<>& head, std::string& out);

/// How a response head from an upstream is rewritten for the client: the
/// same edits session makes on a parsed response (strip_hop_by_hop, then
/// version, Content-Length, keep-alive and the rate-limit fields, in that
/// order), applied to the raw bytes without building Beast's field list.
struct response_rewrite {
    unsigned version = 11;  ///< the client's: 10 or 11
    bool keep_alive = true;
    /// Replaces every upstream Content-Length (for the answer to a HEAD or a
    /// 304: the length a GET would get, as validated); nullopt keeps them.
    std::optional<std::uint64_t> content_length;
    /// Drops every upstream Content-Length: a 204 has none (RFC 9110 8.6).
    bool no_content_length = false;
    /// Set after the rest, each replacing upstream fields of the same name.
    std::span<const limit::header_field> extra;
    /// Added when the upstream sent no Date (RFC 9110 6.6.1); empty: never.
    std::string_view date;
};

/// How a request without a body is rewritten for the upstream.
struct forward_edit {
    std::string_view client_ip;       ///< appended to X-Forwarded-For
    std::string_view proto = "http";  ///< X-Forwarded-Proto (one field)
    std::string_view upgrade;         ///< the protocols of a forwarded Upgrade, or empty
    /// The request's Content-Length as the parser read it (a bodyless
    /// request may say 0), regenerated.
    std::optional<std::uint64_t> content_length;
    std::string_view host;  ///< Host for a request that has none (HTTP/1.0)
};

/// Appends the HTTP/1.1 head to send upstream for `req` to `out`: byte for
/// byte what render_head() writes after strip_hop_by_hop(),
/// add_forwarding_headers(), the Upgrade fields, the version, the
/// Content-Length and the Host fallback are set on it, without changing
/// `req` or building a field list.
void render_forwarded_request(const http::request_header<>& req, const forward_edit& edit,
                              std::string& out);

struct head_facts;
struct head_info;

/// Appends to `out` the client's head for the upstream response head `head`,
/// complete and accepted by validate_response_head, which filled `info`
/// (with at most head_info::max_listed fields): what render_head() writes
/// after the edits above on Beast's parse of `head`, except that fields keep
/// the upstream's order where Beast moves a repeated name next to its first
/// occurrence (same values in the same order per name either way).
void render_response_head(std::string_view head, const head_info& info,
                          const response_rewrite& edit, std::string& out);

/// Whether the connection may carry another exchange after the head that
/// validate_request_head or validate_response_head described in `info`:
/// HTTP/1.1 unless a `Connection` field (any of them) says `close`,
/// HTTP/1.0 only with `keep-alive`. (Beast's keep_alive() reads the first
/// `Connection` field only.)
bool keeps_alive(const head_facts& info);

/// Appends the field line `name: value` CRLF to `out`.
void append_field(std::string& out, std::string_view name, std::string_view value);
void append_field(std::string& out, std::string_view name, std::uint64_t value);

/// `s` without the spaces and tabs around it (RFC 9110 OWS).
inline std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
        s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
        s.remove_suffix(1);
    }
    return s;
}

/// Calls `f(token)` for each element of a comma-separated header list
/// (RFC 9110 5.6.1), spaces and tabs around it trimmed, empty ones skipped.
template <class F>
void for_each_token(std::string_view list, F&& f) {
    while (!list.empty()) {
        const std::size_t comma = list.find(',');
        const std::string_view token = trim_ows(list.substr(0, comma));
        if (!token.empty()) {
            f(token);
        }
        if (comma == std::string_view::npos) {
            break;
        }
        list.remove_prefix(comma + 1);
    }
}

/// True when `value` (a comma-separated list) contains `token`, compared
/// case-insensitively, e.g. `Connection: keep-alive, Upgrade`.
bool list_contains(std::string_view value, std::string_view token);

}  // namespace tollgate::proxy
