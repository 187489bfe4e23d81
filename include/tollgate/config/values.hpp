#pragma once
/// @file values.hpp
/// Parsers for the value types that appear in tollgate's configuration, shared
/// by the YAML loader, the environment and the command line so that `60s`
/// means the same thing everywhere and every rejection reads the same way.
///
/// Each parser returns a parse_result: the value, or a message that completes
/// a sentence whose subject the caller supplies, e.g. `must be a positive
/// integer, got "ten"`. The loader prefixes `file:line: key.path: `, the
/// environment `VARIABLE: ` and the command line `--flag: `.
///
/// Accepted forms (the reference for operators; conf/tollgate.yaml repeats it):
///
/// * duration: `<digits><unit>`, unit `ms`, `s`, `m` or `h` (`500ms`, `60s`,
///   `1m`, `1h`); a bare `0` is allowed because zero needs no unit. No sign,
///   fraction, spaces or compound forms (`1m30s`); at most 8760h (one year),
///   so a timer's deadline in nanoseconds can never overflow.
/// * size: plain bytes (`16384`) or `<digits><unit>` with a binary unit `KiB`,
///   `MiB`, `GiB`, `TiB` (powers of 1024), a decimal unit `KB`, `MB`, `GB`,
///   `TB` (powers of 1000, as the names say in SI) or `B`. Units are
///   case-sensitive: `10mb` is rejected rather than guessed.
/// * integer: decimal digits only, no sign, no leading zeros (YAML 1.1 reads
///   `010` as octal), no fraction.
/// * boolean: `true`/`True`/`TRUE`/`false`/`False`/`FALSE` (YAML 1.2). `yes`,
///   `on`, `1` are rejected: they are YAML 1.1 spellings that other tools read
///   differently.
/// * listen address: `IPv4:port` or `[IPv6]:port` with an IP literal; port
///   0-65535 (0 = the kernel picks, for tests). `:8080` and host names are
///   rejected: an operator must say whether they mean IPv4 or IPv6.
/// * upstream URL: `http://host[:port][/]` or `https://host[:port][/]` (scheme
///   case-insensitive, stored lower-case), host a DNS name, IPv4 literal or
///   `[IPv6]`; port 1-65535, default 80 for http and 443 for https. No user
///   info, path, query or fragment.
/// * redis URL: `redis://[[user]:password@]host[:port][/db]`, default port 6379.
/// * CIDR: as cidr::parse (`10.0.0.0/8`, `::1/128`, a bare address).
///
/// All functions are pure and thread-safe.

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "tollgate/config/config.hpp"
#include "tollgate/keying/cidr.hpp"

namespace tollgate {

/// A parsed value or the reason it was rejected (an expected-like type; C++20
/// has no std::expected).
template <class T>
class parse_result {
public:
    /// A successful result holding `value`.
    static parse_result ok(T value) {
        return parse_result(std::in_place_index<0>, std::move(value));
    }
    /// A failed result; `message` completes "<subject>: ...", e.g. `must be a
    /// positive integer, got "ten"`.
    static parse_result fail(std::string message) {
        return parse_result(std::in_place_index<1>, std::move(message));
    }

    bool has_value() const { return state_.index() == 0; }
    explicit operator bool() const { return has_value(); }

    /// The value; only valid when has_value().
    const T& value() const { return std::get<0>(state_); }
    const T& operator*() const { return value(); }
    const T* operator->() const { return &value(); }

    /// The rejection message; only valid when !has_value().
    const std::string& error() const { return std::get<1>(state_); }

private:
    template <std::size_t I, class U>
    parse_result(std::in_place_index_t<I> tag, U&& v) : state_(tag, std::forward<U>(v)) {}

    std::variant<T, std::string> state_;
};

/// Longest duration accepted anywhere: 8760h (365 days).
inline constexpr milliseconds max_duration{8760LL * 3600 * 1000};

/// `500ms`, `60s`, `1m`, `1h`, `0`. See the file comment for the grammar.
parse_result<milliseconds> parse_duration(std::string_view text);

/// Like parse_duration, but zero is rejected ("must be greater than 0").
parse_result<milliseconds> parse_positive_duration(std::string_view text);

/// `16384`, `512KiB`, `10MiB`, `1GiB`, `10MB` (= 10,000,000). See the file comment.
parse_result<std::uint64_t> parse_size(std::string_view text);

/// Like parse_size, but zero is rejected.
parse_result<std::uint64_t> parse_positive_size(std::string_view text);

/// Decimal integer >= 0 and <= `max`.
parse_result<std::uint64_t> parse_non_negative_integer(std::string_view text,
                                                       std::uint64_t max = UINT64_MAX);

/// Decimal integer >= 1 and <= `max`.
parse_result<std::uint64_t> parse_positive_integer(std::string_view text,
                                                   std::uint64_t max = UINT64_MAX);

/// `true` / `false` (YAML 1.2 core spellings only).
parse_result<bool> parse_bool(std::string_view text);

/// `gcra`, `token_bucket`, `fixed_window`, `sliding_window`.
parse_result<algorithm_kind> parse_algorithm(std::string_view text);
/// `draft`, `ietf`, `both`, `none`.
parse_result<headers_mode> parse_headers_mode(std::string_view text);
/// `memory`, `redis`.
parse_result<store_kind> parse_store_kind(std::string_view text);
/// `open`, `closed`.
parse_result<failure_mode> parse_failure_mode(std::string_view text);
/// `debug`, `info`, `warn`, `error`.
parse_result<log_level> parse_log_level(std::string_view text);

/// `0.0.0.0:8080`, `[::1]:8080`. The host is stored without brackets.
parse_result<listen_address> parse_listen_address(std::string_view text);

/// `http://host[:port]` or `https://host[:port]`; `scheme` is "http" or
/// "https", `url` keeps the text as written.
parse_result<upstream_server> parse_upstream_url(std::string_view text);

/// Comma-separated upstream URLs (TOLLGATE_UPSTREAM, --upstream); spaces
/// around items are ignored, empty items and an empty list are rejected.
parse_result<std::vector<upstream_server>> parse_upstream_list(std::string_view text);

/// A CIDR range or bare address, with a reason when cidr::parse refuses it.
parse_result<cidr> parse_cidr(std::string_view text);

/// The parts of a `store.redis.url`, for the Redis store to connect with.
struct redis_endpoint {
    std::string host;
    std::uint16_t port = 6379;
    std::string username{};  ///< empty = default user
    std::string password{};  ///< empty = no AUTH
    unsigned db = 0;
};

/// `redis://[[user]:password@]host[:port][/db]`. User and password are
/// percent-decoded (RFC 3986: `%40` is `@`), so a secret may hold any
/// character; a `%` without two hex digits after it is an error. Messages
/// never echo the password.
parse_result<redis_endpoint> parse_redis_url(std::string_view text);

/// The URL with any password replaced by `<redacted>`, for logs and render_config.
/// Text that is not a redis URL with a password is returned unchanged.
std::string redact_redis_url(std::string_view url);

/// A rate key as written in `rate_limit.overrides[].key`, checked and put in
/// the form the key resolver produces: `org:<id>` (id `[A-Za-z0-9._:-]{1,128}`),
/// `tok:<64 hex digits>` (lower-cased), `ip:<address>` (canonical text, so
/// `ip:::ffff:10.0.0.1` becomes `ip:10.0.0.1`).
parse_result<std::string> parse_rate_key(std::string_view text);

/// Shortest exact form: `0`, `500ms`, `90s`, `1m`, `1h`.
std::string format_duration(milliseconds d);
/// Shortest exact binary form: `16KiB`, `10MiB`, `1000` (plain bytes otherwise).
std::string format_size(std::uint64_t bytes);
/// `host:port`, with brackets around an IPv6 host.
std::string format_listen_address(const listen_address& address);
/// `scheme://host:port` (the port always written), with brackets around an IPv6 host.
std::string format_upstream_url(const upstream_server& server);

std::string_view to_string(algorithm_kind v);
std::string_view to_string(headers_mode v);
std::string_view to_string(store_kind v);
std::string_view to_string(failure_mode v);
std::string_view to_string(log_level v);

/// `"text"` with quotes, backslashes and control characters escaped and long
/// text shortened, for echoing a rejected value inside an error message.
std::string quote_value(std::string_view text);

/// The candidate spelled most like `name` (one edit away for names of up to
/// 4 characters, two otherwise), or nullopt: what a "did you mean" offers.
std::optional<std::size_t> closest_name(std::string_view name,
                                        std::span<const std::string_view> candidates);

}  // namespace tollgate
