#pragma once
/// @file framing.hpp
/// Strict checks of a message head (start line + header fields + blank
/// line) on its raw bytes, before Beast parses it. Beast's parser is
/// lenient in ways a proxy cannot afford (RFC 9112 sections 2.2, 3, 5, 6.1,
/// 6.3): anything a backend could frame differently must be refused here.
///
/// Each head is checked in one pass over its bytes, with no allocation.
/// What is refused (request -> status; a response -> 502):
///
/// * Lines: anything but CRLF line endings (bare CR, bare LF); empty lines
///   before the start line; whitespace before the first field or before a
///   colon; obs-fold (a line starting with SP/HTAB); control characters
///   other than HTAB (NUL, DEL, ...) anywhere; field names that are not
///   tokens. Names containing `_` are refused in requests (CGI/WSGI
///   backends alias `Content_Length` to `Content-Length`, `X_Org_Id` to
///   `X-Org-Id`, ...), allowed in responses.
/// * Request line: `method SP target SP HTTP/1.x CRLF` with single spaces;
///   method a token; `CONNECT` -> 501 (not supported); other versions of
///   the form `HTTP/d.d` -> 505, anything else -> 400. Targets:
///   origin-form (`/path?query`), absolute-form (`http(s)://authority/...`,
///   no userinfo, authority equal to Host), `*` for OPTIONS only. Routes
///   and `keying.ip_paths` match on the raw path, so a path a backend would
///   read as another one is refused: the path must be RFC 3986 pchars with
///   valid %HH, no percent-encoded letter, digit, `-`, `.` or `_`
///   (`/log%69n` is `/login` to a backend), and no dot segments (`.`/`..`,
///   also before a `;param` or between `%2f`/`%5c`). The query may hold any
///   visible ASCII but `#` (tollgate does not interpret it).
/// * Host: exactly one in HTTP/1.1, at most one in HTTP/1.0, a valid
///   `host[:port]` (empty allowed, RFC 9110 7.2) whose host is made of
///   unreserved characters and %HH, or an IP literal: the sub-delims RFC
///   3986 also allows (`a,b`) are in no DNS name and read as lists by some.
/// * Connection and Proxy-Connection: lists of tokens; in a request no
///   Connection option may name Host, Content-Length or Transfer-Encoding
///   (RFC 9110 7.6.1: the proxy removes the fields options name).
/// * Content-Length: 1*DIGIT fitting 64 bits; identical duplicates (as
///   lines or as a list `5, 5`) are merged, different ones refused.
/// * Transfer-Encoding: only exactly one `chunked` (case-insensitive,
///   surrounding OWS allowed) is accepted. With Content-Length, in
///   HTTP/1.0, malformed, or `chunked` not last/more than once -> 400;
///   otherwise any other coding (`gzip, chunked`, `identity`, `xchunked`)
///   -> 501. Several TE lines are one list.
/// * Responses additionally: status 100..599, reason of HTAB/SP/VCHAR/
///   obs-text, no Transfer-Encoding and no non-zero Content-Length in a
///   1xx or 204 (the body bytes would be left on a pooled connection).
///
/// Pure functions over bytes; safe from any thread.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::proxy {

/// Why a head is refused: the status to answer (400, 431, 501, 505 for
/// requests; 502 for a response) and a short reason.
struct framing_error {
    unsigned status = 400;
    std::string_view message;
};

struct head_limits {
    std::size_t max_headers = 100;
};

/// How the request target was written (RFC 9112 3.2).
enum class target_form { origin, absolute, asterisk };

/// A header field as written: its name, and its value without the spaces
/// and tabs around it. Views into the head.
struct raw_field {
    std::string_view name;
    std::string_view value;
};

/// What the checks learned about an acceptable head. Views point into the
/// head. Filled as far as the checks got when the head is refused.
struct head_facts {
    unsigned version = 11;  ///< 10 or 11
    std::size_t fields = 0;
    bool chunked = false;
    std::optional<std::uint64_t> content_length;
    /// Any field a proxy must not forward: Connection, Keep-Alive,
    /// Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade,
    /// HTTP2-Settings.
    bool hop_by_hop = false;
    /// `Connection` options: close, and any option naming a field to remove
    /// (everything but keep-alive, which names a hop-by-hop field anyway).
    bool connection_close = false;
    bool connection_keep_alive = false;
    bool connection_options = false;
    // Requests only.
    std::string_view method;
    std::string_view target;
    target_form form = target_form::origin;
    bool has_host = false;
    std::string_view host;  ///< the Host value, OWS trimmed
    // Responses only.
    unsigned status = 0;
};

/// The facts, and the fields themselves. Each check resets the facts only:
/// `listed` is written as far as `fields` goes, never cleared (1 KiB).
struct head_info : head_facts {
    /// The first fields of the head, in order: all of them when
    /// `fields <= max_listed`.
    static constexpr std::size_t max_listed = 32;
    std::array<raw_field, max_listed> listed;
};

/// Index one past the blank line that ends the head at the start of `data`
/// (`\r\n\r\n`, or a bare-LF variant so that it can be refused rather than
/// waited on), or npos when the head is not complete yet. A bare CR (one
/// followed by anything but LF) also ends the search early: the index
/// returned is just past it, so the caller hands validate_*_head a
/// truncated head that it refuses, instead of waiting for a line end the
/// peer may never send.
std::size_t find_head_end(std::string_view data);

/// Checks a complete request head. nullopt = acceptable.
std::optional<framing_error> validate_request_head(std::string_view head,
                                                   const head_limits& limits);
/// Same, and reports what it found in `info`.
std::optional<framing_error> validate_request_head(std::string_view head, const head_limits& limits,
                                                   head_info& info);

/// Checks the first bytes of a request head still arriving (`data` holds
/// no complete head): the error validate_request_head gives every head that
/// starts with `data`, or nullopt while that depends on bytes to come. A
/// method that is not a token, a field line without a colon or a bare LF is
/// refused as soon as it arrives, not after client.header_timeout.
std::optional<framing_error> check_request_head_start(std::string_view data,
                                                      const head_limits& limits);

/// Checks a complete response head from an upstream. nullopt = acceptable;
/// an error always carries status 502.
std::optional<framing_error> validate_response_head(std::string_view head);
/// Same, and reports what it found in `info`.
std::optional<framing_error> validate_response_head(std::string_view head, head_info& info);

/// check_request_head_start for a response head (always 502): an upstream
/// that is no HTTP server (an SSH banner, a TLS record) is refused at its
/// first bytes, not after upstream.response_timeout.
std::optional<framing_error> check_response_head_start(std::string_view data);

namespace detail {

/// What the field lines of a head said about its framing so far.
struct framing_facts {
    bool te = false;
    bool te_malformed = false;
    unsigned te_chunked = 0;
    bool te_chunked_last = false;
    bool te_other = false;
    bool cl = false;
    std::uint64_t cl_value = 0;
    unsigned hosts = 0;
    bool host_malformed = false;
    std::string_view host;
};

}  // namespace detail

/// check_request_head_start / check_response_head_start for a head read in
/// pieces: give feed() the head's bytes so far after each read (each time
/// the same bytes and more). It looks only when the new bytes could change
/// the verdict (in the first KiB always, later when they bring a line end
/// or a control character) and goes on from the first line it has not
/// seen whole, so a head trickled a line or a byte at a time costs about
/// one pass over its bytes, not one per line.
class head_start_check {
public:
    /// For a request head.
    explicit head_start_check(head_limits limits) : request_(true), limits_(limits) {}
    /// For a response head (every error is a 502).
    head_start_check() : request_(false) {}

    /// nullopt while the verdict depends on bytes to come; otherwise the
    /// error every head starting with `data` gets.
    std::optional<framing_error> feed(std::string_view data);

    /// For the next head.
    void reset() { *this = request_ ? head_start_check(limits_) : head_start_check(); }

    /// Where the next look starts: the first line not seen whole (0 while
    /// the start line is not).
    std::size_t resume_at() const { return line_; }

private:
    bool request_;
    head_limits limits_;
    std::size_t seen_ = 0;  ///< bytes the previous feed() had
    std::size_t line_ = 0;
    head_facts facts_;  ///< of the lines before line_ (views into earlier bytes: not read again)
    detail::framing_facts fields_;
};

/// An accepted response head as Beast's parser takes it: `HTTP/1.x NNN`
/// (no reason, no SP) gets the SP Beast requires. Returns `head` itself, or
/// a view of `scratch` holding the amended copy.
std::string_view beast_response_head(std::string_view head, std::string& scratch);

/// The path of an accepted request target, without the query: the target
/// itself up to `?` for origin-form; for absolute-form the part after the
/// authority (`/` when empty); `*` for asterisk-form. What routes and
/// `keying.ip_paths` should match on.
std::string_view request_path(std::string_view target);

/// The authority of an absolute-form target (`http://a.test:8080/x` gives
/// `a.test:8080`), empty for any other form. An HTTP/1.0 request may come
/// without Host: its target's authority is the host it asks for.
std::string_view request_authority(std::string_view target);

/// The path as a backend is likely to understand it, for matching routes
/// and `keying.ip_paths` only (the forwarded target is never rewritten):
/// `;params` cut from every segment (Tomcat, Jetty), percent-encoded
/// unreserved characters decoded (RFC 3986 6.2.2.2), empty and `.`
/// segments dropped, `..` resolved (never above the root), a trailing `/`
/// kept. `path` is what request_path() returned. Returns `path` itself when
/// it needs no change, otherwise a view of `scratch`.
std::string_view normalize_path(std::string_view path, std::string& scratch);

/// Chunk extensions of one message (RFC 9112 7.1.1), checked as Beast
/// reports them (`on_chunk_header`): Beast validates their syntax but lets
/// control characters (even LF and NUL) through inside quoted strings and
/// sets no size limit. Extensions are never forwarded (framing is
/// regenerated), so the only use a client has for them is to desynchronise
/// a lenient front end or to make the proxy read bytes that carry no data.
class chunk_extension_budget {
public:
    /// Total extension bytes allowed in one message (Node.js uses the same).
    static constexpr std::size_t max_total = 16 * 1024;

    /// Accounts for the extensions of one chunk header; an error (400) for
    /// a control character other than HTAB, or once the total passes
    /// max_total.
    std::optional<framing_error> add(std::string_view extensions);

private:
    std::size_t used_ = 0;
};

/// Follows the line structure of a chunked body (RFC 9112 7.1) byte by byte
/// as it arrives, to refuse what Beast's parser would wait on forever: a
/// bare LF, or a CR without LF, where a chunk-size line, the CRLF after
/// chunk data, a trailer line or the final CRLF belongs (Beast looks for
/// CRLF only, so `3\nabc\n0\n\n` kept a request open until
/// client.body_timeout); likewise a chunk-size line that does not start
/// with a hex digit, or whose digits are followed by anything but SP, HTAB,
/// `;` or CR, is refused at that byte rather than at its line's end. Beast
/// still checks everything else (size overflow, extensions, trailer
/// fields); bytes after the body's end are not looked at.
class chunked_line_check {
public:
    /// The next bytes of the body; false from the first misplaced line ending
    /// or malformed chunk size on.
    bool feed(std::string_view bytes);
    bool failed() const { return state_ == state::failed; }
    bool done() const { return state_ == state::done; }

private:
    enum class state : std::uint8_t {
        size_first,  ///< the first byte of a chunk-size line: a hex digit
        size,        ///< the rest of chunk-size [ chunk-ext ], up to CR
        size_lf,     ///< the LF after it
        data,        ///< `remaining_` bytes of chunk data
        data_cr,     ///< the CRLF after chunk data
        data_lf,
        line_start,  ///< a trailer field line, or the CRLF that ends the body
        line,
        line_lf,
        end_lf,
        done,
        failed,
    };
    state state_ = state::size_first;
    std::uint64_t remaining_ = 0;
    bool in_extension_ = false;  ///< past the size's hex digits
};

}  // namespace tollgate::proxy
