#pragma once
/// @file local_reply.hpp
/// Responses tollgate makes itself (DESIGN.md section 5): small JSON bodies,
/// `Connection: close` when the connection will not be reused.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "tollgate/limit/headers.hpp"
#include "tollgate/net.hpp"

namespace tollgate {

using local_response = http::response<http::string_body>;

/// `{"error": message}` with `status` and the current Date. `keep_alive`
/// false adds `Connection: close`.
local_response make_error_reply(http::status status, std::string_view message, unsigned version,
                                bool keep_alive);

/// The whole of `res` as it goes on the wire, into `out` (replacing what was
/// there): status line, fields in order, blank line, body. The caller has
/// set Content-Length (prepare_payload). One buffer, one write, and none of
/// Beast's per-field buffer sequences for a reply of a few hundred bytes.
void render_local(const local_response& res, std::string& out);

/// A 429 as session::refuse answers it.
struct refusal_reply {
    unsigned version = 11;  ///< 10 or 11
    bool keep_alive = true;
    /// The rate-limit fields, when a rate decision was made.
    std::span<const limit::header_field> limits;
    std::uint64_t retry_after = 1;  ///< Retry-After, seconds
    std::string_view body;          ///< limit::refusal_body
    std::string_view date;          ///< the Date field (http_date_now), or none when empty
};

/// The whole refusal as it goes on the wire, into `out` (replacing what was
/// there): the bytes render_local writes for the local_response with
/// `Server: tollgate`, the Date, the limits, Retry-After, `Content-Type:
/// application/json`, the keep-alive and Content-Length set in that order,
/// without building one. Refusing is the hot path of a limited key.
void render_refusal(const refusal_reply& reply, std::string& out);

/// Escapes `text` as the inside of a JSON string, for the access log and
/// the error bodies. The result is valid JSON for any bytes: well-formed
/// UTF-8 (RFC 3629) is copied as it is; each byte that is not part of one
/// (a truncated or overlong sequence, a surrogate, a stray byte such as
/// Latin-1 `\xE9`) is written `\u00XX` with its value, as are the control
/// characters but `\n`, `\r` and `\t`. A parser reads such a byte back as
/// U+00XX.
void append_json_escaped(std::string& out, std::string_view text);

}  // namespace tollgate
