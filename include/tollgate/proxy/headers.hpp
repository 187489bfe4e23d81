#pragma once
/// @file headers.hpp
/// Header rewriting between client and upstream: hop-by-hop removal
/// (RFC 9110 section 7.6.1) and the forwarding headers a backend expects.
/// Stateless functions; safe from any thread.

#include <string>
#include <string_view>

#include "tollgate/net.hpp"

namespace tollgate::proxy {

/// Removes every field named in `Connection`, then `Connection`, `Keep-Alive`,
/// `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`, `HTTP2-Settings` and
/// `Transfer-Encoding`. Framing (`Content-Length` / chunked) is regenerated
/// by the caller from what the parser saw, never copied. `Host` is never
/// removed, even when `Connection` names it.
void strip_hop_by_hop(http::fields& fields);

/// Appends `client_ip` to `X-Forwarded-For` (merging repeated fields into one
/// list), sets `X-Forwarded-Proto` and appends `1.1 tollgate` to `Via`.
void add_forwarding_headers(http::fields& fields, std::string_view client_ip, bool tls);

/// Appends the head of a request or response exactly as Beast's serializer
/// writes it (start line, the fields in order, blank line) to `out`: one
/// contiguous buffer for one write, without walking a buffer sequence per
/// field. Framing fields must already be set.
void render_head(const http::request_header<>& head, std::string& out);
void render_head(const http::response_header<>& head, std::string& out);

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
