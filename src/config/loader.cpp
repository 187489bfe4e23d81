#include "tollgate/config/loader.hpp"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <sstream>
#include <unordered_set>

#include "tollgate/ascii.hpp"
#include "tollgate/config/values.hpp"
#include "tollgate/openssl_ptr.hpp"

namespace tollgate {
namespace {

// ---- value kinds -------------------------------------------------------------
//
// A value kind couples a parser with the words used when the YAML node is not
// a scalar at all ("must be a positive integer, got a mapping"). The same
// kinds serve YAML keys, environment variables and flags, so one setting is
// validated identically wherever it comes from.

template <class T>
struct value_kind {
    std::string_view what;
    std::function<parse_result<T>(std::string_view)> parse;
};

using u64 = std::uint64_t;

value_kind<u64> positive_integer(u64 max = UINT64_MAX) {
    return {"a positive integer",
            [max](std::string_view t) { return parse_positive_integer(t, max); }};
}

value_kind<u64> non_negative_integer(u64 max = UINT64_MAX) {
    return {"a non-negative integer",
            [max](std::string_view t) { return parse_non_negative_integer(t, max); }};
}

const value_kind<milliseconds> duration{"a duration like 500ms, 60s, 1m or 1h", parse_duration};
const value_kind<milliseconds> positive_duration{"a duration like 500ms, 60s, 1m or 1h",
                                                 parse_positive_duration};
const value_kind<bool> boolean{"true or false", parse_bool};
const value_kind<algorithm_kind> algorithm{
    "one of gcra, token_bucket, fixed_window, sliding_window", parse_algorithm};
const value_kind<headers_mode> headers{"one of draft, ietf, both, none", parse_headers_mode};
const value_kind<store_kind> store_type{"one of memory, redis", parse_store_kind};
const value_kind<failure_mode> failure{"one of open, closed", parse_failure_mode};
const value_kind<log_level> level{"one of debug, info, warn, error", parse_log_level};
const value_kind<listen_address> listen{"address:port, e.g. 0.0.0.0:8080 or \"[::1]:8080\"",
                                        parse_listen_address};
const value_kind<upstream_server> upstream_url{
    "an http:// or https:// URL like http://127.0.0.1:9000", parse_upstream_url};
const value_kind<cidr> cidr_range{"a CIDR range like 10.0.0.0/8", parse_cidr};
const value_kind<u64> ipv6_prefix_length{
    "a prefix length from 32 to 128", [](std::string_view t) {
        auto parsed = parse_positive_integer(t, 128);
        if (parsed && *parsed < 32) {
            // Shorter prefixes put whole providers' customers in one bucket.
            return parse_result<u64>::fail(
                "must be from 32 to 128 (64: one bucket per /64 "
                "network), got " +
                quote_value(t));
        }
        return parsed;
    }};

// An override for an IPv6 client must be written as keying.ipv6_prefix keys
// it (`key` is canonical, from parse_rate_key), or it never matches.
std::optional<std::string> ipv6_key_mismatch(const std::string& key, unsigned prefix) {
    if (!key.starts_with("ip:") || key.find(':', 3) == std::string::npos) {
        return std::nullopt;  // not an IPv6 client
    }
    const std::size_t slash = key.find('/');
    const std::string address = key.substr(3, slash == std::string::npos ? slash : slash - 3);
    const std::string written =
        slash == std::string::npos ? std::string("128") : key.substr(slash + 1);
    if (written == std::to_string(prefix)) {
        return std::nullopt;
    }
    if (prefix == 128) {
        return "never matches: keying.ipv6_prefix is 128, so IPv6 clients are keyed by address "
               "alone (set keying.ipv6_prefix: " +
               written + " to key them by network)";
    }
    const auto parsed = ip_address::parse(address);
    const std::string expected = "ip:" + (parsed ? parsed->masked(prefix).to_string() : address) +
                                 "/" + std::to_string(prefix);
    return "never matches: keying.ipv6_prefix is " + std::to_string(prefix) +
           ", so that client's key is " + expected;
}
const value_kind<std::string> any_text{
    "a string", [](std::string_view t) { return parse_result<std::string>::ok(std::string(t)); }};
/// What --print-config writes in place of a secret, fed back as the secret.
constexpr std::string_view placeholder_message =
    "is the <redacted> placeholder --print-config writes in place of the secret; set the real "
    "value";
const value_kind<std::string> secret_text{
    "a string", [](std::string_view t) {
        if (t == "<redacted>") {
            return parse_result<std::string>::fail(std::string(placeholder_message));
        }
        return parse_result<std::string>::ok(std::string(t));
    }};

value_kind<u64> positive_size(u64 max = UINT64_MAX, u64 min = 1) {
    return {"a size like 16384, 512KiB or 10MiB", [max, min](std::string_view t) {
                auto parsed = parse_positive_size(t);
                if (parsed && *parsed > max) {
                    return parse_result<u64>::fail("must be at most " + std::to_string(max) +
                                                   " bytes, got " + quote_value(t));
                }
                if (parsed && *parsed < min) {
                    return parse_result<u64>::fail("must be at least " + format_size(min) +
                                                   ", got " + quote_value(t));
                }
                return parsed;
            }};
}

const value_kind<std::string> redis_url{
    "a redis:// URL like redis://127.0.0.1:6379", [](std::string_view t) {
        auto parsed = parse_redis_url(t);
        return parsed ? parse_result<std::string>::ok(std::string(t))
                      : parse_result<std::string>::fail(parsed.error());
    }};

bool is_tchar(char c) {
    // RFC 9110 token characters: what a header name may contain.
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

const value_kind<std::string> header_name{
    "an HTTP header name", [](std::string_view t) {
        bool ok = !t.empty() && t.size() <= 128;
        for (char c : t) {
            ok = ok && is_tchar(c);
        }
        return ok ? parse_result<std::string>::ok(std::string(t))
                  : parse_result<std::string>::fail(
                        "must be an HTTP header name like "
                        "X-Org-Id, got " +
                        quote_value(t));
    }};

/// Names tollgate itself reads, sets or re-frames: as keying.org_header
/// they would break requests (a name with `_` is refused with 400), hand the
/// org key a field the proxy rewrites, or strip a field a backend needs
/// (the org header of an untrusted peer is removed before forwarding).
constexpr std::array<std::string_view, 16> reserved_header_names{"Host",
                                                                 "Authorization",
                                                                 "Content-Length",
                                                                 "Transfer-Encoding",
                                                                 "Connection",
                                                                 "Keep-Alive",
                                                                 "Proxy-Connection",
                                                                 "TE",
                                                                 "Trailer",
                                                                 "Upgrade",
                                                                 "Expect",
                                                                 "Via",
                                                                 "X-Forwarded-For",
                                                                 "X-Forwarded-Proto",
                                                                 "Cookie",
                                                                 "Forwarded"};

const value_kind<std::string> org_header_name{
    "an HTTP header name", [](std::string_view t) {
        auto name = header_name.parse(t);
        if (!name) {
            return name;
        }
        if (t.find('_') != std::string_view::npos) {
            return parse_result<std::string>::fail(
                "must not contain _ (tollgate refuses requests with _ in a header name, see "
                "README), got " +
                quote_value(t));
        }
        for (std::string_view reserved : reserved_header_names) {
            if (iequals(t, reserved)) {
                return parse_result<std::string>::fail(
                    "must be a header of its own like X-Org-Id, not " + quote_value(t) +
                    ", which tollgate reads or rewrites itself");
            }
        }
        return name;
    }};

const value_kind<std::string> route_name{
    "a route name", [](std::string_view t) {
        bool ok = !t.empty() && t.size() <= 64;
        for (char c : t) {
            ok = ok && (is_tchar(c) &&
                        std::string_view("!#$%&'*+^`|~").find(c) == std::string_view::npos);
        }
        // Route names become metric labels and log fields: keep them plain.
        return ok ? parse_result<std::string>::ok(std::string(t))
                  : parse_result<std::string>::fail("must match [A-Za-z0-9._-]{1,64}, got " +
                                                    quote_value(t));
    }};

bool has_space_or_control(std::string_view t) {
    return std::any_of(t.begin(), t.end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u <= 0x20 || u == 0x7f;
    });
}

/// Why no request path could ever match `t`, or nullopt. Routes and
/// ip_paths see the path after proxy::normalize_path, and requests that
/// proxy::check_path_query refuses never reach them: no empty segment, no
/// `;params`, no `.` or `..` segment, no %XX that encodes an unreserved
/// character (refused with 400, `~` decoded), and no %2F (decoded to `/`).
/// A trailing `*` (ip_paths) leaves the last segment open, so only the
/// segments closed by `/` are checked for dots there.
std::optional<std::string> unmatchable_path(std::string_view written) {
    const bool open_end = written.ends_with('*');
    const std::string_view t = open_end ? written.substr(0, written.size() - 1) : written;
    auto got = [written] { return quote_value(written); };
    if (t.find("//") != std::string_view::npos) {
        return "must not contain // (request paths are matched with empty segments removed, so "
               "//a/b is matched as /a/b), got " +
               got();
    }
    if (t.find(';') != std::string_view::npos) {
        return "must not contain ; (request paths are matched with ;parameters cut from every "
               "segment, so /a;x/b is matched as /a/b), got " +
               got();
    }
    for (std::size_t start = 1; start <= t.size();) {
        std::size_t end = t.find('/', start);
        if (end == std::string_view::npos) {
            if (open_end) {
                break;
            }
            end = t.size();
        }
        std::string_view segment = t.substr(start, end - start);
        if (segment == "." || segment == "..") {
            return "must not contain a . or .. segment (tollgate refuses request paths with dot "
                   "segments with 400), got " +
                   got();
        }
        start = end + 1;
    }
    for (std::size_t i = t.find('%'); i != std::string_view::npos; i = t.find('%', i + 1)) {
        if (i + 2 >= t.size() || hex_value(t[i + 1]) > 15 || hex_value(t[i + 2]) > 15) {
            return "has a % that is not followed by two hex digits (tollgate refuses such request "
                   "paths with 400), got " +
                   got();
        }
        const char decoded = static_cast<char>(hex_value(t[i + 1]) * 16 + hex_value(t[i + 2]));
        if (decoded == '/') {
            return "must not contain %2F: request paths are matched with an encoded / read as "
                   "/ (as a backend that decodes it routes them), so write / itself, got " +
                   got();
        }
        if (is_unreserved(decoded)) {
            return "must not percent-encode " + quote_value(std::string_view(&decoded, 1)) + " (" +
                   std::string(t.substr(i, 3)) +
                   "): tollgate refuses request paths with an encoded letter, digit, -, . or _ "
                   "with 400 and decodes ~, so write the character itself, got " +
                   got();
        }
    }
    return std::nullopt;
}

const value_kind<std::string> path_prefix{
    "a path starting with /", [](std::string_view t) {
        if (t.empty() || t[0] != '/' || has_space_or_control(t) ||
            t.find_first_of("?#") != std::string_view::npos) {
            return parse_result<std::string>::fail(
                "must be a URL path starting with / (no spaces, query or fragment), got " +
                quote_value(t));
        }
        if (t.find('*') != std::string_view::npos) {
            // ip_paths takes a trailing *; a route prefix would match it literally.
            return parse_result<std::string>::fail(
                "is a plain prefix, so * would only match a literal *: write " +
                quote_value(t.substr(0, t.find('*'))) + " to match everything under it, got " +
                quote_value(t));
        }
        // A prefix matches whole segments (gateway.cpp prefix_matches).
        if (auto problem = unmatchable_path(t)) {
            return parse_result<std::string>::fail(std::move(*problem));
        }
        return parse_result<std::string>::ok(std::string(t));
    }};

const value_kind<std::string> ip_path{
    "a path starting with /", [](std::string_view t) {
        std::size_t star = t.find('*');
        if (t.empty() || t[0] != '/' || has_space_or_control(t) ||
            (star != std::string_view::npos && star + 1 != t.size())) {
            return parse_result<std::string>::fail(
                "must be a path starting with / (a * is allowed only at the end), got " +
                quote_value(t));
        }
        if (auto problem = unmatchable_path(t)) {
            return parse_result<std::string>::fail(std::move(*problem));
        }
        return parse_result<std::string>::ok(std::string(t));
    }};

const value_kind<std::string> route_host{
    "a host name", [](std::string_view t) {
        // "" means any host.
        if (t.empty()) {
            return parse_result<std::string>::ok(std::string());
        }
        auto as_url = parse_upstream_url("http://" + std::string(t));
        if (!as_url || t.find('/') != std::string_view::npos) {
            return parse_result<std::string>::fail(
                "must be a host name or address like api.example.com or \"[::1]\", got " +
                quote_value(t));
        }
        // Routes compare the Host header with its port cut off (gateway.cpp
        // match_route), so a route host with a port could never match.
        const std::size_t bracket = t.rfind(']');
        if (t.find(':', bracket == std::string_view::npos ? 0 : bracket) !=
            std::string_view::npos) {
            return parse_result<std::string>::fail(
                "must be a host name without :port; routes match the Host header's name (any "
                "port), got " +
                quote_value(t));
        }
        // Requests are matched without a fully qualified name's final dot.
        if (t.size() > 1 && t.back() == '.') {
            t.remove_suffix(1);
        }
        return parse_result<std::string>::ok(std::string(t));
    }};

const value_kind<std::string> key_prefix{
    "a string", [](std::string_view t) {
        if (has_space_or_control(t)) {
            return parse_result<std::string>::fail(
                "must not contain spaces or control characters, got " + quote_value(t));
        }
        return parse_result<std::string>::ok(std::string(t));
    }};

const value_kind<std::string> rate_key{"a rate key like org:acme", parse_rate_key};

/// `tls.listen`: an address, or "" for no TLS listener (so render_config can
/// write the unset value back).
const value_kind<std::optional<listen_address>> optional_listen{
    "address:port, e.g. 0.0.0.0:8443 or \"[::]:8443\"", [](std::string_view t) {
        using result = parse_result<std::optional<listen_address>>;
        if (t.empty()) {
            return result::ok(std::nullopt);
        }
        auto parsed = parse_listen_address(t);
        return parsed ? result::ok(*parsed) : result::fail(parsed.error());
    }};

/// Why `path` cannot be read, or nullopt. Only opened, never read: a
/// certificate is parsed by whoever uses it. O_NONBLOCK so a FIFO cannot hang
/// the loader.
std::optional<std::string> unreadable(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return std::strerror(errno);
    }
    struct stat st {};
    int problem = ::fstat(fd, &st) != 0 ? errno : (S_ISDIR(st.st_mode) ? EISDIR : 0);
    ::close(fd);
    if (problem != 0) {
        return std::strerror(problem);
    }
    return std::nullopt;
}

/// A file that must be readable now (and at every reload); "" = not set. The
/// path is kept as written, so a relative one stays relative to the working
/// directory, where it is checked and later opened.
const value_kind<std::string> readable_file{
    "a file path", [](std::string_view t) {
        std::string path(t);
        if (path.empty()) {
            return parse_result<std::string>::ok(std::move(path));
        }
        if (auto problem = unreadable(path)) {
            std::string where;
            if (path[0] != '/') {
                std::error_code ec;
                auto cwd = std::filesystem::current_path(ec);
                where =
                    ec ? " (relative to the working directory)"
                       : " (relative to the working directory " + quote_value(cwd.string()) + ")";
            }
            return parse_result<std::string>::fail("cannot read " + quote_value(path) + where +
                                                   ": " + *problem);
        }
        return parse_result<std::string>::ok(std::move(path));
    }};

const value_kind<std::string> tls_version{
    "\"1.2\" or \"1.3\"", [](std::string_view t) {
        if (t == "1.2" || t == "1.3") {
            return parse_result<std::string>::ok(std::string(t));
        }
        std::string why =
            t == "1.0" || t == "1.1" ? " (TLS 1.0 and 1.1 are deprecated, RFC 8996)" : "";
        return parse_result<std::string>::fail("must be \"1.2\" or \"1.3\"" + why + ", got " +
                                               quote_value(t));
    }};

const value_kind<std::string> alpn_protocol{
    "\"http/1.1\"", [](std::string_view t) {
        if (t == "http/1.1") {
            return parse_result<std::string>::ok(std::string(t));
        }
        return parse_result<std::string>::fail(
            "must be \"http/1.1\" (tollgate speaks HTTP/1.1 only), got " + quote_value(t));
    }};

const value_kind<std::string> upgrade_protocol{
    "a protocol name like websocket", [](std::string_view t) {
        bool ok = !t.empty();
        std::string lowered;
        for (char c : t) {
            ok = ok && is_tchar(c);
            lowered += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
        }
        if (!ok) {
            return parse_result<std::string>::fail(
                "must be a protocol name like websocket (RFC 9110 token characters, no "
                "/version), got " +
                quote_value(t));
        }
        if (lowered == "h2c") {
            // Passing it through would hand the client an HTTP/2 connection
            // that tollgate can neither parse nor rate-limit.
            return parse_result<std::string>::fail(
                "\"h2c\" is an upgrade to HTTP/2, which tollgate does not speak (it proxies "
                "HTTP/1.1 only)");
        }
        return parse_result<std::string>::ok(std::move(lowered));
    }};

/// Upper bound for `threads`: more would only mean a typo (and 1024 acceptors).
constexpr u64 max_threads = 1024;
/// Beast's header_limit is 32-bit.
constexpr u64 max_header_bytes = UINT32_MAX;

// ---- collected errors --------------------------------------------------------

/// Errors with the line they belong to, so they can be reported in file order
/// although keys are read in a fixed order. Non-file errors sort last.
struct error_list {
    static constexpr int after_file = INT_MAX;
    std::vector<std::pair<int, std::string>> items;
    /// Key paths that had an error ("" = the whole file), so a check on the
    /// merged result can stay quiet about keys that already failed.
    std::set<std::string, std::less<>> failed;

    void add(int line, std::string message, std::string path) {
        items.emplace_back(line, std::move(message));
        failed.insert(std::move(path));
    }
    bool empty() const { return items.empty(); }

    /// True when `section` or anything under it had an error.
    bool touches(std::string_view section) const {
        return std::any_of(failed.begin(), failed.end(), [section](std::string_view p) {
            if (p.empty() || p == section) {
                return true;
            }
            return p.starts_with(section) && (p[section.size()] == '.' || p[section.size()] == '[');
        });
    }

    [[noreturn]] void raise() {
        std::stable_sort(items.begin(), items.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
        constexpr std::size_t max_shown = 50;
        std::string text;
        for (std::size_t i = 0; i < items.size() && i < max_shown; ++i) {
            text += (i == 0 ? "" : "\n") + items[i].second;
        }
        if (items.size() > max_shown) {
            text += "\n... and " + std::to_string(items.size() - max_shown) + " more errors";
        }
        throw config_error(text);
    }
};

/// Where each key's effective value came from: "file:line", "VARIABLE" or
/// "--flag"; absent = built-in default. Used by checks on the merged config.
using origin_map = std::map<std::string, std::string, std::less<>>;

/// A later layer (a variable, a flag) sets `path`: what the file said about
/// it, and about the items of a list there, no longer applies.
void set_origin(origin_map& origins, const std::string& path, const std::string& where) {
    for (auto it = origins.lower_bound(path + "["); it != origins.end();) {
        if (!it->first.starts_with(path + "[")) {
            break;
        }
        it = origins.erase(it);
    }
    origins[path] = where;
}

// ---- YAML reading --------------------------------------------------------------

using key_list = std::span<const std::string_view>;

constexpr std::array<std::string_view, 14> root_keys{
    "listen",     "threads",     "admin",     "tls",    "upstream", "client", "keying",
    "rate_limit", "concurrency", "websocket", "routes", "store",    "log",    "shutdown"};
constexpr std::array<std::string_view, 1> admin_keys{"listen"};
constexpr std::array<std::string_view, 5> tls_keys{"listen", "cert", "key", "min_version", "alpn"};
constexpr std::array<std::string_view, 7> upstream_keys{
    "servers",         "connect_timeout", "response_timeout",    "idle_timeout",
    "max_connections", "ca_file",         "insecure_skip_verify"};
constexpr std::array<std::string_view, 8> client_keys{
    "header_timeout",   "idle_timeout", "body_timeout",   "tunnel_idle_timeout",
    "max_header_bytes", "max_headers",  "max_body_bytes", "max_connections"};
constexpr std::array<std::string_view, 7> keying_keys{
    "org_header", "trusted_org_sources", "trusted_proxies",      "token_secret",
    "ip_paths",   "ipv6_prefix",         "trust_forwarded_proto"};
constexpr std::array<std::string_view, 8> rate_limit_keys{
    "algorithm", "limit", "window", "burst", "headers", "dry_run", "max_keys", "overrides"};
constexpr std::array<std::string_view, 4> override_keys{"key", "limit", "window", "burst"};
constexpr std::array<std::string_view, 2> concurrency_keys{"capacity", "queue_timeout"};
constexpr std::array<std::string_view, 2> websocket_keys{"max_per_key", "max_tunnels"};
constexpr std::array<std::string_view, 8> route_keys{
    "name", "path_prefix", "host", "upstream", "rate_limit", "exempt", "concurrency", "upgrade"};
constexpr std::array<std::string_view, 4> route_rate_limit_keys{"algorithm", "limit", "window",
                                                                "burst"};
constexpr std::array<std::string_view, 2> store_keys{"type", "redis"};
constexpr std::array<std::string_view, 5> redis_keys{"url", "timeout", "failure_mode", "instances",
                                                     "key_prefix"};
constexpr std::array<std::string_view, 2> log_keys{"level", "access_log"};
constexpr std::array<std::string_view, 1> shutdown_keys{"drain_timeout"};

/// Every section, for the "it belongs under ..." hint on unknown keys.
struct section_keys {
    std::string_view path;
    key_list keys;
};
const std::array<section_keys, 16> all_sections{{
    {"", root_keys},
    {"admin", admin_keys},
    {"tls", tls_keys},
    {"upstream", upstream_keys},
    {"client", client_keys},
    {"keying", keying_keys},
    {"rate_limit", rate_limit_keys},
    {"rate_limit.overrides[]", override_keys},
    {"concurrency", concurrency_keys},
    {"websocket", websocket_keys},
    {"routes[]", route_keys},
    {"routes[].rate_limit", route_rate_limit_keys},
    {"store", store_keys},
    {"store.redis", redis_keys},
    {"log", log_keys},
    {"shutdown", shutdown_keys},
}};

/// "unknown key" plus the likeliest fix: a near spelling in the same
/// section, or the section where a key of that name lives.
std::string unknown_key_message(std::string_view key, std::string_view section_path,
                                key_list known) {
    if (auto best = closest_name(key, known)) {
        return "unknown key (did you mean \"" + std::string(known[*best]) + "\"?)";
    }
    std::vector<std::string> elsewhere;
    for (const auto& section : all_sections) {
        if (section.path == section_path) {
            continue;
        }
        for (std::string_view candidate : section.keys) {
            if (candidate == key) {
                elsewhere.push_back(section.path.empty()
                                        ? std::string(key)
                                        : std::string(section.path) + "." + std::string(key));
            }
        }
    }
    std::string message = "unknown key";
    if (!elsewhere.empty()) {
        message += " here (it belongs at ";
        for (std::size_t i = 0; i < elsewhere.size(); ++i) {
            message += (i == 0 ? "" : " or ") + elsewhere[i];
        }
        return message + ")";
    }
    message += "; expected one of: ";
    for (std::size_t i = 0; i < known.size(); ++i) {
        message += (i == 0 ? "" : ", ") + std::string(known[i]);
    }
    return message;
}

/// A key as error messages show it: quoted when it is no plain name, so a
/// line break or an escape sequence in a key never reaches the log as it is.
std::string shown_key(std::string_view key) {
    const bool plain = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
        return c > ' ' && c < 0x7f && c != '"';
    });
    return plain ? std::string(key) : quote_value(key);
}

int line_of(const YAML::Node& node, int fallback) {
    YAML::Mark mark = node.Mark();
    return mark.line >= 0 ? mark.line + 1 : fallback;
}

std::string describe(const YAML::Node& node) {
    switch (node.Type()) {
        case YAML::NodeType::Map:
            return "a mapping";
        case YAML::NodeType::Sequence:
            return "a list";
        case YAML::NodeType::Scalar:
            return quote_value(node.Scalar());
        default:
            return "nothing";
    }
}

/// What an empty list means for a key: nothing given (`key:`) or `[]` is
/// "none", only `[]` is, or the key needs at least one element.
enum class empty_list { from_nothing, from_brackets, refused };

/// One key of a mapping.
struct entry {
    std::string key;
    YAML::Node value;
    int key_line;
    /// Line of the value; a value-less key (`limit:`) reports the key's line,
    /// since yaml-cpp marks an empty value at the next token.
    /// An alias (`*name`) is marked where its anchor is, above the key: the
    /// key's line is where the value was used.
    int value_line() const {
        return value.IsNull() ? key_line : std::max(key_line, line_of(value, key_line));
    }
};

/// A mapping whose keys were checked (known, unique, scalar).
struct mapping {
    std::string path;  ///< "" for the top level, "routes[0]" for a list item
    int line = 1;
    std::vector<entry> entries;

    const entry* find(std::string_view key) const {
        for (const auto& e : entries) {
            if (e.key == key) {
                return &e;
            }
        }
        return nullptr;
    }
    std::string child(std::string_view key) const {
        return path.empty() ? std::string(key) : path + "." + std::string(key);
    }
};

/// A list item that is itself a mapping (routes[], overrides[]).
struct item_node {
    YAML::Node node;
    std::string path;
    int line;
};

class yaml_reader {
public:
    yaml_reader(std::string file, error_list& errors, origin_map& origins)
        : file_(std::move(file)), errors_(errors), origins_(origins) {}

    void error(int line, std::string_view path, std::string_view message) {
        std::string text = file_ + ":" + std::to_string(line) + ": ";
        if (!path.empty()) {
            text += std::string(path) + ": ";
        }
        text += message;
        errors_.add(line, std::move(text), std::string(path));
    }

    /// Notes where a section key is, for merged checks that point at it.
    void record_origin(const std::string& path, int line) {
        origins_[path] = file_ + ":" + std::to_string(line);
    }

    std::size_t error_count() const { return errors_.items.size(); }

    /// Checks `node` is a mapping with only `known`, unique, scalar keys.
    /// `section_path` names the section in all_sections (list items use
    /// `routes[]`). A null node (`keying:` with no value) is an empty
    /// mapping: all defaults (an empty file is refused before this).
    std::optional<mapping> open_map(const YAML::Node& node, int line, std::string path,
                                    std::string_view section_path, key_list known) {
        mapping out;
        out.path = std::move(path);
        out.line = line;
        if (node.IsNull()) {
            return out;
        }
        if (!node.IsMap()) {
            std::string subject = out.path.empty() ? "the top level" : "";
            error(line, out.path,
                  (subject.empty() ? "" : subject + " ") + "must be a mapping of keys, got " +
                      describe(node));
            return std::nullopt;
        }
        std::map<std::string, int, std::less<>> seen;
        for (auto it = node.begin(); it != node.end(); ++it) {
            // Copies: the iterator hands out a temporary proxy.
            const YAML::Node key_node = it->first;
            const YAML::Node value_node = it->second;
            int key_line = line_of(key_node, line);
            if (!key_node.IsScalar()) {
                error(key_line, out.path, "keys must be plain names, got " + describe(key_node));
                continue;
            }
            std::string key = key_node.Scalar();
            std::string key_path = out.child(key);
            if (key == "<<") {
                error(key_line, out.path,
                      "YAML merge keys (<<) are not supported; write the keys out");
                continue;
            }
            if (std::find(known.begin(), known.end(), key) == known.end()) {
                error(key_line, out.child(shown_key(key)),
                      unknown_key_message(key, section_path, known));
                continue;
            }
            if (auto [first, inserted] = seen.emplace(key, key_line); !inserted) {
                error(key_line, key_path,
                      "duplicate key (first set on line " + std::to_string(first->second) + ")");
                continue;
            }
            out.entries.push_back(entry{key, value_node, key_line});
        }
        return out;
    }

    /// A nested section; nullopt when absent, broken, or (when `null_ok`) empty.
    std::optional<mapping> section(const mapping& parent, std::string_view key,
                                   std::string_view section_path, key_list known) {
        const entry* e = parent.find(key);
        if (e == nullptr) {
            return std::nullopt;
        }
        return open_map(e->value, e->value_line(), parent.child(key), section_path, known);
    }

    /// The scalar text of a value, or an error naming what was expected.
    std::optional<std::string> scalar(const YAML::Node& node, int line, std::string_view path,
                                      std::string_view what) {
        if (node.IsScalar()) {
            return node.Scalar();
        }
        if (node.IsNull()) {
            error(line, path,
                  "has no value; expected " + std::string(what) +
                      " (remove the key to use the default)");
        } else {
            error(line, path, "must be " + std::string(what) + ", got " + describe(node));
        }
        return std::nullopt;
    }

    /// Reads `key` from `m` into `out` when present and valid. Returns true
    /// when `out` was set.
    template <class T, class U>
    bool get(const mapping& m, std::string_view key, U& out, const value_kind<T>& kind) {
        const entry* e = m.find(key);
        if (e == nullptr) {
            return false;
        }
        std::string path = m.child(key);
        auto value = parse_node(e->value, e->value_line(), path, kind);
        if (!value) {
            return false;
        }
        out = static_cast<U>(std::move(*value));
        origins_[path] = file_ + ":" + std::to_string(e->value_line());
        return true;
    }

    template <class T>
    std::optional<T> parse_node(const YAML::Node& node, int line, const std::string& path,
                                const value_kind<T>& kind) {
        auto text = scalar(node, line, path, kind.what);
        if (!text) {
            return std::nullopt;
        }
        auto parsed = kind.parse(*text);
        if (!parsed) {
            error(line, path, parsed.error());
            return std::nullopt;
        }
        return *parsed;
    }

    /// A list of scalars. A value-less key is an empty list only for
    /// empty_list::from_nothing (lists whose default is empty); otherwise it
    /// is an error, since "no value" could mean "none" or "the default".
    template <class T>
    bool get_list(const mapping& m, std::string_view key, std::vector<T>& out,
                  const value_kind<T>& kind, std::string_view example, empty_list empty) {
        const entry* e = m.find(key);
        if (e == nullptr) {
            return false;
        }
        std::string path = m.child(key);
        int line = e->value_line();
        if (e->value.IsNull() && empty == empty_list::from_nothing) {
            out.clear();
            return true;
        }
        if (!e->value.IsSequence()) {
            std::string got = !e->value.IsNull() ? describe(e->value)
                              : empty == empty_list::from_brackets
                                  ? "nothing (write [] for an empty list)"
                                  : "nothing";
            error(line, path, "must be a list like " + std::string(example) + ", got " + got);
            return false;
        }
        std::vector<T> items;
        bool ok = true;
        std::size_t index = 0;
        std::vector<int> lines;
        for (const auto& item : e->value) {
            std::string item_path = path + "[" + std::to_string(index++) + "]";
            lines.push_back(line_of(item, line));
            auto value = parse_node(item, lines.back(), item_path, kind);
            if (value) {
                items.push_back(std::move(*value));
            } else {
                ok = false;
            }
        }
        if (ok) {
            out = std::move(items);
            origins_[path] = file_ + ":" + std::to_string(line);
            // Each item too: a list written one item per line.
            for (std::size_t i = 0; i < lines.size(); ++i) {
                origins_[path + "[" + std::to_string(i) + "]"] =
                    file_ + ":" + std::to_string(lines[i]);
            }
        }
        return ok;
    }

    /// A list of mappings (routes, overrides); a value-less key is empty.
    std::vector<item_node> items(const mapping& m, std::string_view key) {
        const entry* e = m.find(key);
        std::vector<item_node> out;
        if (e == nullptr || e->value.IsNull()) {
            return out;
        }
        std::string path = m.child(key);
        if (!e->value.IsSequence()) {
            error(e->value_line(), path, "must be a list, got " + describe(e->value));
            return out;
        }
        std::size_t index = 0;
        for (const auto& item : e->value) {
            out.push_back(item_node{item, path + "[" + std::to_string(index++) + "]",
                                    line_of(item, e->value_line())});
        }
        return out;
    }

private:
    std::string file_;
    error_list& errors_;
    origin_map& origins_;
};

bool is_window_algorithm(algorithm_kind a) {
    return a == algorithm_kind::fixed_window || a == algorithm_kind::sliding_window;
}

constexpr std::string_view burst_message =
    "burst applies only to the gcra and token_bucket algorithms (set it to 0 or remove it)";

/// Reads a whole document into `cfg`. Cross-field checks that need only the
/// file (route names, burst vs algorithm) happen here, where lines are known.
class config_reader {
public:
    config_reader(yaml_reader& in, config& cfg) : in_(in), cfg_(cfg) {}

    void read(const YAML::Node& root) {
        auto top = in_.open_map(root, 1, "", "", root_keys);
        if (!top) {
            return;
        }
        in_.get(*top, "listen", cfg_.listen, listen);
        in_.get(*top, "threads", cfg_.threads, non_negative_integer(max_threads));
        if (auto admin = in_.section(*top, "admin", "admin", admin_keys)) {
            in_.get(*admin, "listen", cfg_.admin.listen, listen);
        }
        read_tls(*top);
        read_upstream(*top);
        read_client(*top);
        read_keying(*top);
        read_rate_limit(*top);
        if (auto c = in_.section(*top, "concurrency", "concurrency", concurrency_keys)) {
            in_.get(*c, "capacity", cfg_.concurrency.capacity,
                    non_negative_integer(std::numeric_limits<std::size_t>::max()));
            in_.get(*c, "queue_timeout", cfg_.concurrency.queue_timeout, duration);
        }
        if (auto w = in_.section(*top, "websocket", "websocket", websocket_keys)) {
            in_.get(*w, "max_per_key", cfg_.websocket.max_per_key,
                    non_negative_integer(std::numeric_limits<std::size_t>::max()));
            // 0 is refused rather than read as "unlimited" (concurrency.capacity)
            // or "none" (max_per_key): say which with max_per_key instead.
            in_.get(*w, "max_tunnels", cfg_.websocket.max_tunnels,
                    positive_integer(std::numeric_limits<std::size_t>::max()));
        }
        read_routes(*top);
        read_store(*top);
        if (auto log = in_.section(*top, "log", "log", log_keys)) {
            in_.get(*log, "level", cfg_.log.level, level);
            in_.get(*log, "access_log", cfg_.log.access_log, boolean);
        }
        if (auto s = in_.section(*top, "shutdown", "shutdown", shutdown_keys)) {
            in_.get(*s, "drain_timeout", cfg_.shutdown.drain_timeout, duration);
        }
    }

private:
    void read_tls(const mapping& top) {
        auto t = in_.section(top, "tls", "tls", tls_keys);
        if (!t) {
            return;
        }
        // Where a missing cert or key belongs, for the merged check.
        in_.record_origin("tls", top.find("tls")->key_line);
        tls_config& out = cfg_.tls;
        in_.get(*t, "listen", out.listen, optional_listen);
        in_.get(*t, "cert", out.cert, readable_file);
        in_.get(*t, "key", out.key, readable_file);
        in_.get(*t, "min_version", out.min_version, tls_version);
        if (in_.get_list(*t, "alpn", out.alpn, alpn_protocol, "[http/1.1]", empty_list::refused) &&
            out.alpn.empty()) {
            in_.error(t->find("alpn")->value_line(), t->child("alpn"),
                      "must list \"http/1.1\" (tollgate speaks HTTP/1.1 only)");
        }
    }

    void read_upstream(const mapping& top) {
        auto u = in_.section(top, "upstream", "upstream", upstream_keys);
        if (!u) {
            return;
        }
        if (in_.get_list(*u, "servers", cfg_.upstream.servers, upstream_url,
                         "[http://127.0.0.1:9000]", empty_list::refused) &&
            cfg_.upstream.servers.empty()) {
            in_.error(u->find("servers")->value_line(), u->child("servers"),
                      "must list at least one http:// or https:// URL");
        }
        in_.get(*u, "connect_timeout", cfg_.upstream.connect_timeout, positive_duration);
        in_.get(*u, "response_timeout", cfg_.upstream.response_timeout, positive_duration);
        in_.get(*u, "idle_timeout", cfg_.upstream.idle_timeout, positive_duration);
        in_.get(*u, "max_connections", cfg_.upstream.max_connections, positive_integer());
        in_.get(*u, "ca_file", cfg_.upstream.ca_file, readable_file);
        in_.get(*u, "insecure_skip_verify", cfg_.upstream.insecure_skip_verify, boolean);
    }

    void read_client(const mapping& top) {
        auto c = in_.section(top, "client", "client", client_keys);
        if (!c) {
            return;
        }
        client_config& out = cfg_.client;
        in_.get(*c, "header_timeout", out.header_timeout, positive_duration);
        in_.get(*c, "idle_timeout", out.idle_timeout, positive_duration);
        in_.get(*c, "body_timeout", out.body_timeout, positive_duration);
        in_.get(*c, "tunnel_idle_timeout", out.tunnel_idle_timeout, positive_duration);
        // Below 1 KiB ordinary requests (a request line, Host, a few
        // fields) would all get 431: a typo, not a policy.
        in_.get(*c, "max_header_bytes", out.max_header_bytes,
                positive_size(max_header_bytes, 1024));
        in_.get(*c, "max_headers", out.max_headers, positive_integer());
        in_.get(*c, "max_body_bytes", out.max_body_bytes, positive_size());
        in_.get(*c, "max_connections", out.max_connections, positive_integer());
    }

    void read_keying(const mapping& top) {
        auto k = in_.section(top, "keying", "keying", keying_keys);
        if (!k) {
            return;
        }
        keying_config& out = cfg_.keying;
        in_.get(*k, "org_header", out.org_header, org_header_name);
        in_.get_list(*k, "trusted_org_sources", out.trusted_org_sources, cidr_range,
                     "[127.0.0.0/8]", empty_list::from_brackets);
        in_.get_list(*k, "trusted_proxies", out.trusted_proxies, cidr_range, "[10.0.0.0/8]",
                     empty_list::from_nothing);
        in_.get(*k, "token_secret", out.token_secret, secret_text);
        in_.get_list(*k, "ip_paths", out.ip_paths, ip_path, "[/health]", empty_list::from_brackets);
        if (!in_.get(*k, "ipv6_prefix", out.ipv6_prefix, ipv6_prefix_length) &&
            k->find("ipv6_prefix") != nullptr) {
            ipv6_prefix_refused_ = true;  // said once; overrides are not judged by it
        }
        in_.get(*k, "trust_forwarded_proto", out.trust_forwarded_proto, boolean);
    }

    void read_rate_limit(const mapping& top) {
        auto r = in_.section(top, "rate_limit", "rate_limit", rate_limit_keys);
        if (!r) {
            return;
        }
        rate_limit_config& out = cfg_.rate_limit;
        in_.get(*r, "algorithm", out.algorithm, algorithm);
        in_.get(*r, "limit", out.limit, positive_integer());
        in_.get(*r, "window", out.window, positive_duration);
        if (in_.get(*r, "burst", out.burst, non_negative_integer()) && out.burst != 0 &&
            is_window_algorithm(out.algorithm)) {
            in_.error(r->find("burst")->value_line(), r->child("burst"), burst_message);
        }
        in_.get(*r, "headers", out.headers, headers);
        in_.get(*r, "dry_run", out.dry_run, boolean);
        in_.get(*r, "max_keys", out.max_keys, positive_integer());

        std::map<std::string, std::pair<std::string, int>> seen;  // key -> (path, line)
        for (const auto& item : in_.items(*r, "overrides")) {
            auto m = in_.open_map(item.node, item.line, item.path, "rate_limit.overrides[]",
                                  override_keys);
            if (!m) {
                continue;
            }
            rate_override o;
            bool has_key = in_.get(*m, "key", o.key, rate_key);
            bool has_limit = in_.get(*m, "limit", o.limit, positive_integer());
            if (m->find("key") == nullptr) {
                in_.error(item.line, m->child("key"), "is required (e.g. key: \"org:acme\")");
            }
            if (m->find("limit") == nullptr) {
                in_.error(item.line, m->child("limit"), "is required");
            }
            in_.get(*m, "window", o.window, positive_duration);
            if (in_.get(*m, "burst", o.burst, non_negative_integer()) && *o.burst != 0 &&
                is_window_algorithm(out.algorithm)) {
                in_.error(m->find("burst")->value_line(), m->child("burst"), burst_message);
            }
            if (has_key) {
                auto problem = ipv6_prefix_refused_
                                   ? std::nullopt
                                   : ipv6_key_mismatch(o.key, cfg_.keying.ipv6_prefix);
                if (problem) {
                    in_.error(m->find("key")->value_line(), m->child("key"), *problem);
                    has_key = false;
                }
            }
            if (has_key) {
                int line = m->find("key")->value_line();
                auto [first, inserted] = seen.emplace(o.key, std::pair{item.path, line});
                if (!inserted) {
                    in_.error(line, m->child("key"),
                              "duplicate override for " + quote_value(o.key) + " (first in " +
                                  first->second.first + " on line " +
                                  std::to_string(first->second.second) + ")");
                }
            }
            if (has_key && has_limit) {
                out.overrides.push_back(std::move(o));
            }
        }
    }

    void read_routes(const mapping& top) {
        std::map<std::string, std::pair<std::string, int>> names;            // name -> (path, line)
        std::map<std::pair<std::string, std::string>, std::string> matches;  // (host, prefix)
        for (const auto& item : in_.items(top, "routes")) {
            auto m = in_.open_map(item.node, item.line, item.path, "routes[]", route_keys);
            if (!m) {
                continue;
            }
            route_config route;
            if (m->find("name") == nullptr) {
                in_.error(item.line, m->child("name"), "is required (routes need a unique name)");
            } else if (in_.get(*m, "name", route.name, route_name)) {
                int line = m->find("name")->value_line();
                auto [first, inserted] = names.emplace(route.name, std::pair{item.path, line});
                if (!inserted) {
                    in_.error(line, m->child("name"),
                              "duplicate route name " + quote_value(route.name) +
                                  " (first used by " + first->second.first + " on line " +
                                  std::to_string(first->second.second) + ")");
                }
            }
            bool prefix_ok = in_.get(*m, "path_prefix", route.path_prefix, path_prefix) ||
                             m->find("path_prefix") == nullptr;
            bool host_ok =
                in_.get(*m, "host", route.host, route_host) || m->find("host") == nullptr;
            if (prefix_ok && host_ok) {
                // Hosts match case-insensitively, so X.com and x.com are one host.
                std::string host = route.host;
                std::transform(host.begin(), host.end(), host.begin(), ascii_lower);
                auto [first, inserted] =
                    matches.emplace(std::pair{std::move(host), route.path_prefix}, item.path);
                if (!inserted) {
                    in_.error(item.line, item.path,
                              "same host and path_prefix as " + first->second +
                                  ", so it would never match");
                }
            }
            in_.get_list(*m, "upstream", route.upstream, upstream_url, "[http://10.0.0.1:9000]",
                         empty_list::from_nothing);
            in_.get(*m, "exempt", route.exempt, boolean);
            if (in_.get(*m, "concurrency", route.concurrency,
                        positive_integer(std::numeric_limits<std::size_t>::max())) &&
                route.exempt) {
                // Exempt requests hold no slot (session.cpp admit).
                in_.error(m->find("concurrency")->key_line, m->child("concurrency"),
                          "has no effect on an exempt route (remove one of them)");
            }
            if (in_.get_list(*m, "upgrade", route.upgrade, upgrade_protocol, "[websocket]",
                             empty_list::from_brackets)) {
                for (std::size_t i = 1; i < route.upgrade.size(); ++i) {
                    auto first = std::find(route.upgrade.begin(), route.upgrade.begin() + i,
                                           route.upgrade[i]);
                    if (first != route.upgrade.begin() + i) {
                        const entry* e = m->find("upgrade");
                        in_.error(line_of(e->value[i], e->value_line()),
                                  m->child("upgrade") + "[" + std::to_string(i) + "]",
                                  "duplicate protocol " + quote_value(route.upgrade[i]) +
                                      " (also upgrade[" +
                                      std::to_string(first - route.upgrade.begin()) + "])");
                    }
                }
            }
            if (auto rl =
                    in_.section(*m, "rate_limit", "routes[].rate_limit", route_rate_limit_keys)) {
                route_rate_limit limits;
                in_.get(*rl, "algorithm", limits.algorithm, algorithm);
                in_.get(*rl, "limit", limits.limit, positive_integer());
                in_.get(*rl, "window", limits.window, positive_duration);
                algorithm_kind effective = limits.algorithm.value_or(cfg_.rate_limit.algorithm);
                if (in_.get(*rl, "burst", limits.burst, non_negative_integer()) &&
                    *limits.burst != 0 && is_window_algorithm(effective)) {
                    in_.error(rl->find("burst")->value_line(), rl->child("burst"), burst_message);
                }
                route.rate_limit = limits;
                if (route.exempt) {
                    in_.error(m->find("rate_limit")->key_line, m->child("rate_limit"),
                              "has no effect on an exempt route (remove one of them)");
                }
            }
            cfg_.routes.push_back(std::move(route));
        }
    }

    void read_store(const mapping& top) {
        auto s = in_.section(top, "store", "store", store_keys);
        if (!s) {
            return;
        }
        in_.get(*s, "type", cfg_.store.type, store_type);
        if (auto r = in_.section(*s, "redis", "store.redis", redis_keys)) {
            redis_config& out = cfg_.store.redis;
            in_.get(*r, "url", out.url, redis_url);
            in_.get(*r, "timeout", out.timeout, positive_duration);
            in_.get(*r, "failure_mode", out.on_failure, failure);
            in_.get(*r, "instances", out.instances, positive_integer(UINT32_MAX));
            in_.get(*r, "key_prefix", out.key_prefix, key_prefix);
        }
    }

    yaml_reader& in_;
    config& cfg_;
    bool ipv6_prefix_refused_ = false;  ///< keying.ipv6_prefix had an error
};

/// Where each YAML document starts and where its root node is; the rest of
/// the events are not needed.
class document_marks : public YAML::EventHandler {
public:
    struct document {
        YAML::Mark start;
        std::optional<YAML::Mark> root;
    };
    std::vector<document> documents;

    void OnDocumentStart(const YAML::Mark& mark) override { documents.push_back({mark, {}}); }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { node(mark); }
    void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { node(mark); }
    void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  const std::string&) override {
        node(mark);
    }
    void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {
        node(mark);
    }
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {
        node(mark);
    }
    void OnMapEnd() override {}

private:
    void node(const YAML::Mark& mark) {
        if (!documents.empty() && !documents.back().root) {
            documents.back().root = mark;
        }
    }
};

/// nullopt when the text holds at most one YAML document, else (line, why).
std::optional<std::pair<int, std::string>> extra_document(std::string_view text,
                                                          const document_marks& marks) {
    if (marks.documents.size() < 2) {
        return std::nullopt;
    }
    const auto& first = marks.documents[0];
    const auto& second = marks.documents[1];
    const YAML::Mark& at = second.root.value_or(second.start);
    int line = at.line >= 0 ? at.line + 1 : 1;
    std::string_view rest;
    if (second.start.pos >= 0 && static_cast<std::size_t>(second.start.pos) < text.size()) {
        rest = text.substr(static_cast<std::size_t>(second.start.pos));
    }
    // yaml-cpp 0.7 answers a token that cannot start a node (a "," outside a
    // flow collection) with an empty document that consumes nothing, again
    // and again: that is a syntax error, not a second document.
    if (rest.starts_with(",") || second.start.pos == first.start.pos) {
        std::string what = rest.empty() ? "text" : quote_value(rest.substr(0, 1));
        std::string hint =
            rest.starts_with(",") ? " (a comma separates items only inside [ ] or { })" : "";
        return std::pair{second.start.line >= 0 ? second.start.line + 1 : 1,
                         "invalid YAML: unexpected " + what + hint};
    }
    std::string marker = rest.starts_with("---") ? "---" : "the ... end marker";
    return std::pair{line,
                     "only one YAML document is allowed (found a second after " + marker + ")"};
}

constexpr std::string_view empty_file_message =
    "the file has no settings (empty, comments only or null); write {} to take every default";

// What yaml-cpp's message leaves out for the usual slips on `line`: "illegal
// map value" for a tab, "end of map not found" for an unquoted IPv6 address.
std::string yaml_hint(std::string_view source, int line) {
    std::size_t start = 0;
    for (int i = 1; i < line && start != std::string_view::npos; ++i) {
        start = source.find('\n', start);
        start = start == std::string_view::npos ? start : start + 1;
    }
    if (start == std::string_view::npos) {
        return "";
    }
    const std::string_view text = source.substr(start, source.find('\n', start) - start);
    const std::string_view indent = text.substr(0, text.find_first_not_of(" \t"));
    if (indent.find('\t') != std::string_view::npos) {
        return " (a tab in the indentation: YAML indents with spaces only)";
    }
    // `[::1]:8080`: brackets holding an IPv6 address (colons), then a port.
    const auto open = text.find(": [");
    const auto close = open == std::string_view::npos ? open : text.find("]:", open);
    if (close != std::string_view::npos &&
        text.substr(open + 3, close - open - 3).find(':') != std::string_view::npos) {
        return " (a value with an IPv6 address in brackets must be quoted: \"[::1]:8080\")";
    }
    return "";
}

// yaml-cpp 0.7 lets a quoted value whose closing quote is missing run on to
// the next quote, or to the end of the file without a word: the keys after
// it silently become part of the value (`token_secret: "abc` swallowing
// `rate_limit:` and everything below). tollgate's values are one-liners, so
// a quoted value that leaves its line is refused, at the line it starts.
// `walked`: the nodes already looked at, so an alias (even one to a
// collection it is inside of) is not walked again.
void check_quotes(const YAML::Node& node, std::string_view source, const std::string& path,
                  yaml_reader& in, std::unordered_set<int>& walked, bool is_key = false) {
    // Each node once: an alias is marked where its anchor is. A block
    // mapping starts where its first key does, hence the kind in the mark.
    if (node.IsNull() || !walked.insert(node.Mark().pos * 2 + (node.IsScalar() ? 1 : 0)).second) {
        return;
    }
    if (node.IsMap()) {
        for (auto it = node.begin(); it != node.end(); ++it) {
            const YAML::Node key = it->first;
            check_quotes(key, source, path, in, walked, true);
            const std::string name = key.IsScalar() ? shown_key(key.Scalar()) : "";
            const std::string child = name.empty() ? path : path.empty() ? name : path + "." + name;
            check_quotes(it->second, source, child, in, walked);
        }
        return;
    }
    if (node.IsSequence()) {
        for (std::size_t i = 0; i < node.size(); ++i) {
            check_quotes(node[i], source, path + "[" + std::to_string(i) + "]", in, walked);
        }
        return;
    }
    const YAML::Mark mark = node.Mark();
    if (!node.IsScalar() || node.Tag() == "?" || mark.pos < 0 ||
        static_cast<std::size_t>(mark.pos) >= source.size()) {
        return;
    }
    // A tag or an anchor (`!!str "x`, `&a "x`) comes before the quote.
    std::size_t start = static_cast<std::size_t>(mark.pos);
    while (start < source.size() && (source[start] == '&' || source[start] == '!')) {
        start = source.find_first_of(" \t\r\n", start);
        start = source.find_first_not_of(" \t\r\n", start);
    }
    if (start >= source.size() || (source[start] != '"' && source[start] != '\'')) {
        return;
    }
    const char quote = source[start];
    std::size_t end = start + 1;
    for (; end < source.size(); ++end) {
        if (quote == '"' && source[end] == '\\') {
            ++end;  // an escaped character, maybe a quote
        } else if (source[end] == quote) {
            if (quote == '\'' && end + 1 < source.size() && source[end + 1] == '\'') {
                ++end;  // '' is a quote inside single quotes
            } else {
                break;
            }
        }
    }
    const std::string_view quoted = source.substr(start, end - start);
    if (quoted.find('\n') == std::string_view::npos) {
        return;
    }
    const std::string_view skipped = source.substr(mark.pos, start - mark.pos);
    const int line =
        mark.line + 1 + static_cast<int>(std::count(skipped.begin(), skipped.end(), '\n'));
    const std::string opens =
        std::string("the ") + quote + " that opens this " + (is_key ? "key" : "value");
    if (end >= source.size()) {
        in.error(line, path, opens + " is never closed (the rest of the file would be part of it)");
    } else {
        const auto last = static_cast<int>(std::count(quoted.begin(), quoted.end(), '\n'));
        in.error(line, path,
                 opens + " is closed only on line " + std::to_string(line + last) +
                     "; close it on its own line");
    }
}

void read_yaml(config& cfg, std::string_view text, const std::string& file, error_list& errors,
               origin_map& origins) {
    yaml_reader in(file, errors, origins);
    std::string source(text);
    YAML::Node root;
    try {
        // Count the documents with a bounded loop first: YAML::LoadAll never
        // returns on input like "," with yaml-cpp 0.7 (see extra_document).
        // Two are enough to know there is more than one.
        constexpr std::size_t max_documents = 2;
        std::istringstream stream(source);
        YAML::Parser parser(stream);
        document_marks marks;
        while (marks.documents.size() < max_documents && parser.HandleNextDocument(marks)) {
        }
        if (marks.documents.empty()) {
            // A file that says nothing is far more often a truncated write or
            // a template that rendered empty than a wish for every default,
            // and a reload must not swap the running settings for defaults.
            in.error(1, "", empty_file_message);
            return;
        }
        if (auto problem = extra_document(source, marks)) {
            in.error(problem->first, "", problem->second);
            return;
        }
        // Builds the first document only, which the loop above parsed already.
        root = YAML::Load(source);
    } catch (const YAML::DeepRecursion& e) {
        // yaml-cpp's own message for it is "bad file".
        int line = e.mark.line >= 0 ? e.mark.line + 1 : 1;
        errors.add(line,
                   file + ":" + std::to_string(line) +
                       ": invalid YAML: nested too deeply (no setting is more than a few levels "
                       "down)",
                   "");
        return;
    } catch (const YAML::ParserException& e) {
        int line = e.mark.line >= 0 ? e.mark.line + 1 : 1;
        errors.add(line,
                   file + ":" + std::to_string(line) + ": invalid YAML: " + e.msg +
                       yaml_hint(source, line),
                   "");
        return;
    } catch (const YAML::Exception& e) {
        errors.add(1, file + ":1: invalid YAML: " + e.msg, "");
        return;
    }
    if (root.IsNull()) {
        in.error(1, "", empty_file_message);  // "~" or "null": a document that says nothing
        return;
    }
    const std::size_t before = errors.items.size();
    // yaml-cpp's positions are in the text it decoded to UTF-8: in a UTF-16
    // or UTF-32 file (NUL bytes in the ASCII) they do not point into `source`.
    if (source.find('\0') == std::string::npos) {
        std::unordered_set<int> walked;
        // yaml-cpp counts positions after a byte order mark.
        const std::size_t bom = source.starts_with("\xEF\xBB\xBF") ? 3 : 0;
        check_quotes(root, std::string_view(source).substr(bom), "", in, walked);
    }
    if (errors.items.size() != before) {
        return;  // the keys and values after a runaway quote are not what was meant
    }
    config_reader(in, cfg).read(root);
}

// ---- environment and flags -----------------------------------------------------

struct setting_info {
    setting which;
    std::string_view env;
    std::string_view path;
};

constexpr std::array<setting_info, 14> settings{{
    {setting::rate_limit, "RATE_LIMIT", "rate_limit.limit"},
    {setting::rate_limit_window, "RATE_LIMIT_WINDOW", "rate_limit.window"},
    {setting::listen, "TOLLGATE_LISTEN", "listen"},
    {setting::admin_listen, "TOLLGATE_ADMIN_LISTEN", "admin.listen"},
    {setting::upstream, "TOLLGATE_UPSTREAM", "upstream.servers"},
    {setting::threads, "TOLLGATE_THREADS", "threads"},
    {setting::concurrency, "TOLLGATE_CONCURRENCY", "concurrency.capacity"},
    {setting::redis_url, "TOLLGATE_REDIS_URL", "store.redis.url"},
    {setting::token_secret, "TOLLGATE_TOKEN_SECRET", "keying.token_secret"},
    {setting::log_level, "TOLLGATE_LOG_LEVEL", "log.level"},
    {setting::tls_listen, "TOLLGATE_TLS_LISTEN", "tls.listen"},
    {setting::tls_cert, "TOLLGATE_TLS_CERT", "tls.cert"},
    {setting::tls_key, "TOLLGATE_TLS_KEY", "tls.key"},
    {setting::upstream_ca_file, "TOLLGATE_UPSTREAM_CA_FILE", "upstream.ca_file"},
}};

const setting_info& info(setting which) {
    for (const auto& s : settings) {
        if (s.which == which) {
            return s;
        }
    }
    return settings[0];  // unreachable: the table covers the enum
}

template <class T, class U>
std::optional<std::string> assign(U& out, std::string_view value, const value_kind<T>& kind) {
    auto parsed = kind.parse(value);
    if (!parsed) {
        return parsed.error();
    }
    out = static_cast<U>(*parsed);
    return std::nullopt;
}

void apply_env(config& cfg, const env_lookup& env, error_list& errors, origin_map& origins) {
    for (const auto& s : settings) {
        std::optional<std::string> value = env(s.env);
        if (!value) {
            continue;
        }
        std::string name(s.env);
        if (value->empty()) {
            errors.add(error_list::after_file,
                       name +
                           ": is set but empty (unset it to keep the file's value or the "
                           "default)",
                       std::string(s.path));
            continue;
        }
        if (auto problem = apply_setting(cfg, s.which, *value)) {
            errors.add(error_list::after_file, name + ": " + *problem, std::string(s.path));
            continue;
        }
        set_origin(origins, std::string(s.path), name);
        if (s.which == setting::redis_url) {
            origins["store.type"] = name;
        }
    }
}

/// 0 = default, 1 = file, 2 = environment, 3 = flag: which layer set a key last.
int layer(const origin_map& origins, std::string_view path) {
    auto it = origins.find(path);
    if (it == origins.end()) {
        return 0;
    }
    if (it->second.starts_with("--")) {
        return 3;
    }
    return it->second.find(':') != std::string::npos ? 1 : 2;
}

/// Whether a listener on `listener` takes every address of one family
/// (IPv4 when `v4`): 0.0.0.0 takes IPv4, and [::], dual-stack on Linux by
/// default, takes both.
bool takes_all_of(const ip_address& listener, bool v4) {
    return listener == *ip_address::parse("::") ||
           (v4 && listener == *ip_address::parse("0.0.0.0"));
}

bool listeners_collide(const listen_address& a, const listen_address& b) {
    if (a.port == 0 || a.port != b.port) {
        return false;
    }
    auto x = ip_address::parse(a.host);
    auto y = ip_address::parse(b.host);
    if (!x || !y) {
        return a.host == b.host;
    }
    return *x == *y || takes_all_of(*x, y->is_v4()) || takes_all_of(*y, x->is_v4());
}

/// Adds `path: message`, prefixed with where `located_at` was set (file and
/// line, variable or flag; nothing for a built-in default).
void merged_error(error_list& errors, const origin_map& origins, std::string_view located_at,
                  std::string_view path, std::string_view message) {
    auto it = origins.find(located_at);
    std::string where = it == origins.end() ? "" : it->second + ": ";
    int line = error_list::after_file;
    if (layer(origins, located_at) == 1) {
        line = std::atoi(it->second.substr(it->second.rfind(':') + 1).c_str());
    }
    errors.add(line, where + std::string(path) + ": " + std::string(message), std::string(path));
}

/// One listener.
struct named_listener {
    std::string_view path;
    const listen_address* address;
};

void check_ports(const named_listener& a, const named_listener& b, error_list& errors,
                 const origin_map& origins) {
    if (a.address == nullptr || b.address == nullptr ||
        !listeners_collide(*a.address, *b.address)) {
        return;
    }
    // Blame whichever was set by the later layer: that is the one just changed.
    bool blame_a = layer(origins, a.path) > layer(origins, b.path);
    const named_listener& blamed = blame_a ? a : b;
    const named_listener& other = blame_a ? b : a;
    merged_error(errors, origins, blamed.path, blamed.path,
                 "port " + std::to_string(blamed.address->port) + " is also used by " +
                     std::string(other.path) + " (" + format_listen_address(*other.address) + ")");
}

/// tls.listen needs tls.cert and tls.key; either of those without tls.listen
/// is a mistake too (the operator believes TLS is on).
void check_tls(const tls_config& tls, error_list& errors, const origin_map& origins) {
    if (tls.listen) {
        // Set in the file: point at the tls: line, where the missing key belongs.
        std::string_view at =
            layer(origins, "tls.listen") == 1 && origins.contains("tls") ? "tls" : "tls.listen";
        if (tls.cert.empty()) {
            merged_error(errors, origins, at, "tls.cert",
                         "is required when tls.listen is set (the PEM certificate chain file)");
        }
        if (tls.key.empty()) {
            merged_error(errors, origins, at, "tls.key",
                         "is required when tls.listen is set (the PEM private key file)");
        }
        return;
    }
    for (std::string_view path : {"tls.cert", "tls.key"}) {
        const std::string& value = path == "tls.cert" ? tls.cert : tls.key;
        if (!value.empty()) {
            merged_error(errors, origins, path, path,
                         "tls.listen is not set, so nothing would use this file (set tls.listen "
                         "or remove " +
                             std::string(path) + ")");
        }
    }
}

/// One bucket policy as configured, and the keys it was read from.
struct policy_at {
    std::string prefix;  ///< "rate_limit", "rate_limit.overrides[2]", "routes[0].rate_limit"
    algorithm_kind algorithm;
    std::uint64_t limit;
    milliseconds window;
    std::uint64_t burst;  ///< 0 = limit
    bool own_burst;       ///< burst set at `prefix` (else inherited or the limit)
};

/// Of the keys under `prefix` that together put a bucket out of range, the
/// one set by the latest layer (the value just changed); the section itself
/// when none of them is set there (all inherited or built-in).
std::string blamed_key(const origin_map& origins, const std::string& prefix,
                       std::initializer_list<std::string_view> fields) {
    std::string blamed = prefix;
    int latest = 0;
    for (std::string_view field : fields) {
        std::string key = prefix + "." + std::string(field);
        if (!origins.contains(key) && prefix != "rate_limit") {
            // Not set here: an override or route inherits it from rate_limit.
            key = "rate_limit." + std::string(field);
        }
        if (const int l = layer(origins, key); l > latest) {
            latest = l;
            blamed = std::move(key);
        }
    }
    return blamed;
}

/// What the buckets can hold exactly (limit/algorithms.cpp): token_bucket
/// keeps burst x window as request-nanoseconds in 64 bits, sliding_window
/// counts at most 2^32 - 1 requests per window. Beyond that they would
/// enforce less than the headers announce.
void check_bucket_range(const policy_at& p, error_list& errors, const origin_map& origins) {
    constexpr auto u64_max = std::numeric_limits<std::uint64_t>::max();
    const std::uint64_t burst = p.burst == 0 ? p.limit : p.burst;
    const auto window_ms = static_cast<std::uint64_t>(std::max<std::int64_t>(p.window.count(), 1));
    const std::uint64_t most =
        window_ms > u64_max / 1'000'000 ? 0 : u64_max / (window_ms * 1'000'000);
    if (p.algorithm == algorithm_kind::token_bucket && burst > most) {
        const std::string key =
            blamed_key(origins, p.prefix, {p.own_burst ? "burst" : "limit", "window", "algorithm"});
        merged_error(errors, origins, key, key,
                     "a burst of " + std::to_string(burst) + " over a window of " +
                         format_duration(p.window) +
                         " is more than token_bucket can hold (at most " + std::to_string(most) +
                         " for this window); use algorithm gcra, which has no such bound");
    }
    if (p.algorithm == algorithm_kind::sliding_window &&
        p.limit > std::numeric_limits<std::uint32_t>::max()) {
        const std::string key = blamed_key(origins, p.prefix, {"limit", "algorithm"});
        merged_error(errors, origins, key, key,
                     "sliding_window counts at most 4294967295 requests per window");
    }
}

void check_bucket_ranges(const config& cfg, error_list& errors, const origin_map& origins) {
    const auto& rl = cfg.rate_limit;
    check_bucket_range({"rate_limit", rl.algorithm, rl.limit, rl.window, rl.burst, rl.burst != 0},
                       errors, origins);
    for (std::size_t i = 0; i < rl.overrides.size(); ++i) {
        const auto& o = rl.overrides[i];
        check_bucket_range(
            {"rate_limit.overrides[" + std::to_string(i) + "]", rl.algorithm, o.limit,
             o.window.value_or(rl.window), o.burst.value_or(0), o.burst.has_value()},
            errors, origins);
    }
    for (std::size_t i = 0; i < cfg.routes.size(); ++i) {
        if (!cfg.routes[i].rate_limit) {
            continue;
        }
        const auto& r = *cfg.routes[i].rate_limit;
        check_bucket_range(
            {"routes[" + std::to_string(i) + "].rate_limit", r.algorithm.value_or(rl.algorithm),
             r.limit.value_or(rl.limit), r.window.value_or(rl.window), r.effective_burst(rl.burst),
             r.burst.has_value()},
            errors, origins);
    }
}

/// Whether a connection to `up` reaches `listener` of this very process:
/// the listener's own address, or a loopback address where the listener
/// takes any address of that family ([::] takes IPv4 too).
bool reaches(const ip_address& up, const ip_address& on) {
    if (up == on) {
        return true;
    }
    const bool loopback =
        up.is_v4() ? cidr::parse("127.0.0.0/8")->contains(up) : up == *ip_address::parse("::1");
    return loopback && takes_all_of(on, up.is_v4());
}

/// Whether requests to `server` would come back to `listener`, as far as
/// the config shows: an address literal, or `localhost` when every address
/// it has here does (looked up in /etc/hosts; a localhost whose IPv6
/// address another server may hold is given the benefit of the doubt).
/// Other names are not looked up.
bool loops_back(const upstream_server& server, const listen_address& listener) {
    const auto on = ip_address::parse(listener.host);
    if (server.port != listener.port || !on) {
        return false;
    }
    if (const auto up = ip_address::parse(server.host)) {
        return reaches(*up, *on);
    }
    if (server.host != "localhost") {
        return false;
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* found = nullptr;
    if (::getaddrinfo("localhost", "80", &hints, &found) != 0) {
        return false;
    }
    bool any = false;
    bool all = true;
    for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
        char text[INET6_ADDRSTRLEN] = {};
        const void* raw = a->ai_family == AF_INET
                              ? static_cast<const void*>(
                                    &reinterpret_cast<const sockaddr_in*>(a->ai_addr)->sin_addr)
                              : static_cast<const void*>(
                                    &reinterpret_cast<const sockaddr_in6*>(a->ai_addr)->sin6_addr);
        const auto ip = ::inet_ntop(a->ai_family, raw, text, sizeof text) != nullptr
                            ? ip_address::parse(text)
                            : std::nullopt;
        any = true;
        all = all && ip && reaches(*ip, *on);
    }
    ::freeaddrinfo(found);
    return any && all;
}

/// An upstream that is tollgate's own proxy listener: every request would
/// be forwarded to itself until the slots or the descriptors run out.
void check_loops(const config& cfg, error_list& errors, const origin_map& origins,
                 const running_listeners* running) {
    std::vector<std::pair<std::string, const listen_address*>> listeners{{"listen", &cfg.listen}};
    if (cfg.tls.listen) {
        listeners.emplace_back("tls.listen", &*cfg.tls.listen);
    }
    if (running) {
        // A reload keeps these, whatever the file now says.
        listeners.emplace_back("listen as it runs", &running->listen);
        if (running->tls_listen) {
            listeners.emplace_back("tls.listen as it runs", &*running->tls_listen);
        }
    }
    const auto check = [&](const std::vector<upstream_server>& servers, const std::string& key) {
        for (std::size_t i = 0; i < servers.size(); ++i) {
            for (const auto& [name, address] : listeners) {
                if (loops_back(servers[i], *address)) {
                    merged_error(errors, origins, key, key + "[" + std::to_string(i) + "]",
                                 servers[i].url + " is tollgate's own " + name + " (" +
                                     format_listen_address(*address) +
                                     "): every request would be forwarded back to tollgate");
                    break;
                }
            }
        }
    };
    check(cfg.upstream.servers, "upstream.servers");
    for (std::size_t r = 0; r < cfg.routes.size(); ++r) {
        check(cfg.routes[r].upstream, "routes[" + std::to_string(r) + "].upstream");
    }
}

void check_merged(const config& cfg, error_list& errors, const origin_map& origins,
                  const running_listeners* running) {
    // Decided before any merged error is added, on the layers' errors alone.
    bool clean = errors.empty();
    bool tls_clean = !errors.touches("tls");
    if (tls_clean) {
        check_tls(cfg.tls, errors, origins);
    }
    if (cfg.upstream.insecure_skip_verify && !cfg.upstream.ca_file.empty()) {
        merged_error(errors, origins, "upstream.insecure_skip_verify",
                     "upstream.insecure_skip_verify",
                     "is true, so upstream.ca_file is never used (remove one of them)");
    }
    if (clean) {
        check_bucket_ranges(cfg, errors, origins);
        // A port clash check on a config that is already broken would only add noise.
        const listen_address* tls_listen = cfg.tls.listen ? &*cfg.tls.listen : nullptr;
        named_listener plain{"listen", &cfg.listen};
        named_listener admin{"admin.listen", &cfg.admin.listen};
        named_listener secure{"tls.listen", tls_listen};
        check_ports(plain, admin, errors, origins);
        check_ports(plain, secure, errors, origins);
        check_ports(admin, secure, errors, origins);
        if (errors.empty()) {
            check_loops(cfg, errors, origins, running);
        }
    }
}

// Far beyond any real configuration (a route or override is a line or
// two), and a bound on the memory a wrong path (/dev/zero, a log file)
// can take before it is refused.
constexpr std::size_t max_config_bytes = 16 * 1024 * 1024;

std::string read_file(const std::string& path) {
    // Opened without waiting: a FIFO nobody writes to would otherwise block
    // the start, or a SIGHUP reload and the signal handling behind it, for
    // good. Read with waiting, so a pipe that has a writer (`--config
    // <(...)`) is read to its end; one without a writer reads as empty.
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        throw config_error(path + ": cannot read: " + std::strerror(errno));
    }
    if (const int flags = ::fcntl(fd, F_GETFL); flags >= 0) {
        ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    }
    std::string text;
    char buffer[65536];
    while (true) {
        ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            int saved = errno;
            ::close(fd);
            throw config_error(path + ": cannot read: " + std::strerror(saved));
        }
        if (n == 0) {
            break;
        }
        text.append(buffer, static_cast<std::size_t>(n));
        if (text.size() > max_config_bytes) {
            ::close(fd);
            throw config_error(path + ": is larger than 16 MiB: not a configuration file?");
        }
    }
    ::close(fd);
    return text;
}

config load_layers(const std::optional<std::string>& file, const std::string* text,
                   const env_lookup& env, const std::vector<setting_override>& overrides,
                   const running_listeners* running = nullptr) {
    config cfg;
    error_list errors;
    origin_map origins;
    if (file) {
        read_yaml(cfg, text != nullptr ? *text : read_file(*file), *file, errors, origins);
        cfg.source = *file;
    }
    apply_env(cfg, env, errors, origins);
    for (const auto& o : overrides) {
        std::string path(info(o.which).path);
        if (o.value.empty()) {
            errors.add(error_list::after_file, o.source + ": has an empty value", path);
            continue;
        }
        if (auto problem = apply_setting(cfg, o.which, o.value)) {
            errors.add(error_list::after_file, o.source + ": " + *problem, path);
            continue;
        }
        set_origin(origins, path, o.source);
    }
    check_merged(cfg, errors, origins, running);
    if (!errors.empty()) {
        errors.raise();
    }
    cfg.origins = std::move(origins);
    return cfg;
}

// ---- rendering -------------------------------------------------------------------

void emit_list(YAML::Emitter& out, const std::vector<std::string>& items) {
    out << YAML::Flow << YAML::BeginSeq;
    for (const auto& item : items) {
        out << item;
    }
    out << YAML::EndSeq;
}

std::string render_upstream(const upstream_server& s) {
    // Keep the URL as written when it still says the same thing, so a
    // round trip does not turn http://backend into http://backend:80.
    auto parsed = parse_upstream_url(s.url);
    if (parsed && parsed->scheme == s.scheme && parsed->host == s.host && parsed->port == s.port) {
        return s.url;
    }
    return format_upstream_url(s);
}

std::vector<std::string> render_upstreams(const std::vector<upstream_server>& servers) {
    std::vector<std::string> out;
    for (const auto& s : servers) {
        out.push_back(render_upstream(s));
    }
    return out;
}

std::vector<std::string> render_cidrs(const std::vector<cidr>& ranges) {
    std::vector<std::string> out;
    for (const auto& r : ranges) {
        out.push_back(r.to_string());
    }
    return out;
}

/// `2026-11-24 19:05:06Z`.
std::string iso8601(const ASN1_TIME* time) {
    bio_ptr out(BIO_new(BIO_s_mem()));
    if (!out || ASN1_TIME_print_ex(out.get(), time, ASN1_DTFLGS_ISO8601) != 1) {
        ERR_clear_error();
        return "(a date OpenSSL cannot print)";
    }
    char* data = nullptr;
    const long n = BIO_get_mem_data(out.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}

// A listener certificate outside its validity period loads, and every
// client then refuses it. Not an error: it may be run knowingly (a test
// bed, a renewal under way). Only the file's first certificate, the
// server's: a chain may carry an expired cross-signature clients skip. A
// file that is not a readable regular PEM file gets nothing here (loading
// it says why; a pipe must not be read twice).
std::optional<std::string> certificate_dates_problem(const std::string& path) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
        return std::nullopt;
    }
    std::string pem;
    try {
        pem = read_file(path);
    } catch (const config_error&) {
        return std::nullopt;
    }
    bio_ptr in(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    x509_ptr cert(in ? PEM_read_bio_X509_AUX(in.get(), nullptr, nullptr, nullptr) : nullptr);
    ERR_clear_error();
    if (!cert) {
        return std::nullopt;
    }
    const ASN1_TIME* not_after = X509_get0_notAfter(cert.get());
    const ASN1_TIME* not_before = X509_get0_notBefore(cert.get());
    if (X509_cmp_current_time(not_after) < 0) {
        return "the certificate expired at " + iso8601(not_after) +
               " (notAfter): clients will refuse it";
    }
    if (X509_cmp_current_time(not_before) > 0) {
        return "the certificate is not valid before " + iso8601(not_before) +
               " (notBefore): clients will refuse it until then";
    }
    return std::nullopt;
}

}  // namespace

// ---- public ----------------------------------------------------------------------

env_lookup process_env() {
    return [](std::string_view name) -> std::optional<std::string> {
        const char* value = std::getenv(std::string(name).c_str());
        if (value == nullptr) {
            return std::nullopt;
        }
        return std::string(value);
    };
}

std::vector<std::string> environment_settings(const env_lookup& env) {
    std::vector<std::string> set;
    for (const auto& s : settings) {
        if (env(s.env).has_value()) {
            set.push_back(std::string(s.path) + " (" + std::string(s.env) + ")");
        }
    }
    return set;
}

std::vector<std::string> process_env_names() {
    std::vector<std::string> names;
    for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
        std::string_view text(*entry);
        names.emplace_back(text.substr(0, text.find('=')));
    }
    return names;
}

std::vector<std::string> unknown_env_warnings(const std::vector<std::string>& names) {
    constexpr std::string_view prefix = "TOLLGATE_";
    // Compared without the prefix, so TOLLGATE_RATE_LIMIT finds RATE_LIMIT
    // as readily as TOLLGATE_LSTEN finds TOLLGATE_LISTEN.
    std::vector<std::string_view> known{"TOLLGATE_CONFIG"};
    for (const auto& s : settings) {
        known.push_back(s.env);
    }
    std::vector<std::string_view> bare;
    for (std::string_view k : known) {
        bare.push_back(k.starts_with(prefix) ? k.substr(prefix.size()) : k);
    }
    std::vector<std::string> sorted = names;
    std::sort(sorted.begin(), sorted.end());
    sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
    std::vector<std::string> out;
    // The two names without the prefix are the ones set most: their near
    // misses (RATE_LIMT, RATE_LIMIT_WINDOWS) are looked at too.
    constexpr std::array<std::string_view, 2> unprefixed{"RATE_LIMIT", "RATE_LIMIT_WINDOW"};
    const auto suggest = [&out](const std::string& name, std::string_view meant) {
        out.push_back("warning: " + name + " is set but tollgate does not read it (did you mean " +
                      std::string(meant) + "?)");
    };
    for (const auto& name : sorted) {
        if (std::find(known.begin(), known.end(), name) != known.end()) {
            continue;
        }
        if (!name.starts_with(prefix)) {
            if (name.starts_with("RATE")) {
                if (auto best = closest_name(name, unprefixed)) {
                    suggest(name, unprefixed[*best]);
                }
            }
            continue;
        }
        // Only a near miss of a name tollgate reads: other TOLLGATE_ names
        // (build and test tooling, wrappers) are someone else's.
        if (auto best = closest_name(std::string_view(name).substr(prefix.size()), bare)) {
            suggest(name, known[*best]);
        }
    }
    return out;
}

env_lookup no_env() {
    return [](std::string_view) -> std::optional<std::string> { return std::nullopt; };
}

std::optional<std::string> apply_setting(config& cfg, setting which, std::string_view value) {
    switch (which) {
        case setting::rate_limit:
            return assign(cfg.rate_limit.limit, value, positive_integer());
        case setting::rate_limit_window:
            return assign(cfg.rate_limit.window, value, positive_duration);
        case setting::listen:
            return assign(cfg.listen, value, listen);
        case setting::admin_listen:
            return assign(cfg.admin.listen, value, listen);
        case setting::upstream: {
            auto parsed = parse_upstream_list(value);
            if (!parsed) {
                return parsed.error();
            }
            cfg.upstream.servers = *parsed;
            return std::nullopt;
        }
        case setting::threads:
            return assign(cfg.threads, value, non_negative_integer(max_threads));
        case setting::concurrency:
            return assign(cfg.concurrency.capacity, value,
                          non_negative_integer(std::numeric_limits<std::size_t>::max()));
        case setting::redis_url: {
            auto problem = assign(cfg.store.redis.url, value, redis_url);
            if (!problem) {
                cfg.store.type = store_kind::redis;
            }
            return problem;
        }
        case setting::token_secret:
            return assign(cfg.keying.token_secret, value, secret_text);
        case setting::log_level:
            return assign(cfg.log.level, value, level);
        case setting::tls_listen:
            return assign(cfg.tls.listen, value, optional_listen);
        case setting::tls_cert:
            return assign(cfg.tls.cert, value, readable_file);
        case setting::tls_key:
            return assign(cfg.tls.key, value, readable_file);
        case setting::upstream_ca_file:
            return assign(cfg.upstream.ca_file, value, readable_file);
    }
    return "unknown setting";
}

std::vector<std::string> config_warnings(const config& cfg) {
    std::vector<std::string> out;
    const auto warn = [&](const std::string& message) {
        out.push_back("warning: " + located(cfg, message));
    };
    const bool route_slots =
        std::any_of(cfg.routes.begin(), cfg.routes.end(),
                    [](const route_config& r) { return r.concurrency.has_value(); });
    if (cfg.concurrency.capacity == 0 && cfg.concurrency.queue_timeout.count() > 0 &&
        !route_slots) {
        warn(
            "concurrency.queue_timeout: has no effect: concurrency.capacity is 0 (no slots) and "
            "no route has a concurrency of its own");
    }
    const auto https = [](const std::vector<upstream_server>& servers) {
        return std::any_of(servers.begin(), servers.end(),
                           [](const upstream_server& s) { return s.scheme == "https"; });
    };
    const bool any_https = https(cfg.upstream.servers) ||
                           std::any_of(cfg.routes.begin(), cfg.routes.end(),
                                       [&](const route_config& r) { return https(r.upstream); });
    if (!cfg.upstream.ca_file.empty() && !any_https) {
        warn("upstream.ca_file: has no effect: no upstream is https://");
    }
    if (cfg.tls.listen && !cfg.tls.cert.empty()) {
        if (auto problem = certificate_dates_problem(cfg.tls.cert)) {
            warn("tls.cert " + cfg.tls.cert + ": " + *problem);
        }
    }
    // With Redis unavailable and failure_mode open, each instance enforces
    // limit / instances on its own, at least 1 per window.
    const std::uint32_t n = cfg.store.redis.instances;
    if (cfg.store.type == store_kind::redis && cfg.store.redis.on_failure == failure_mode::open &&
        n > 1) {
        const auto check = [&](const std::string& key, std::uint64_t limit) {
            if (limit < n) {
                warn(key + ": " + std::to_string(limit) + " is less than store.redis.instances (" +
                     std::to_string(n) +
                     "): while Redis is unavailable each instance allows 1 "
                     "per window, " +
                     std::to_string(n) + " in all");
            }
        };
        check("rate_limit.limit", cfg.rate_limit.limit);
        if (cfg.rate_limit.burst != 0) {
            check("rate_limit.burst", cfg.rate_limit.burst);
        }
        for (std::size_t r = 0; r < cfg.routes.size(); ++r) {
            const auto& limits = cfg.routes[r].rate_limit;
            const std::string at = "routes[" + std::to_string(r) + "].rate_limit.";
            if (limits && limits->limit) {
                check(at + "limit", *limits->limit);
            }
            if (limits && limits->burst && *limits->burst != 0) {
                check(at + "burst", *limits->burst);
            }
        }
        // Overrides may be many (a list of tenants): the first one said.
        const auto& overrides = cfg.rate_limit.overrides;
        const auto below = [n](const rate_override& o) {
            return o.limit < n || (o.burst && *o.burst != 0 && *o.burst < n);
        };
        const auto low = std::find_if(overrides.begin(), overrides.end(), below);
        if (low != overrides.end()) {
            const std::string at =
                "rate_limit.overrides[" + std::to_string(low - overrides.begin()) + "].";
            if (low->limit < n) {
                check(at + "limit", low->limit);
            } else {
                check(at + "burst", *low->burst);
            }
            const auto more = std::count_if(low + 1, overrides.end(), below);
            if (more > 0) {
                out.back() +=
                    " (and " + std::to_string(more) + " more override" + (more == 1 ? ")" : "s)");
            }
        }
    }
    return out;
}

std::string located(const config& cfg, std::string_view message) {
    std::string_view key = message.substr(0, message.find_first_of(": "));
    while (!key.empty()) {
        if (auto it = cfg.origins.find(key); it != cfg.origins.end()) {
            return it->second + ": " + std::string(message);
        }
        // upstream.servers[1] was set with upstream.servers; tls.cert with tls
        const std::size_t cut = key.back() == ']' ? key.rfind('[') : key.rfind('.');
        key = key.substr(0, cut == std::string_view::npos ? 0 : cut);
    }
    return std::string(message);
}

config load_config(const std::optional<std::string>& path, const env_lookup& env,
                   const std::vector<setting_override>& overrides,
                   const running_listeners* running) {
    return load_layers(path, nullptr, env, overrides, running);
}

config parse_config(std::string_view yaml_text, std::string_view file_name, const env_lookup& env) {
    std::string text(yaml_text);
    return load_layers(std::string(file_name), &text, env, {});
}

config load_config_file(const std::string& path, const env_lookup& env) {
    return load_layers(path, nullptr, env, {});
}

config load_defaults(const env_lookup& env) {
    return load_layers(std::nullopt, nullptr, env, {});
}

std::string render_config(const config& cfg) {
    YAML::Emitter out;
    out << YAML::BeginMap;
    out << YAML::Key << "listen" << YAML::Value << format_listen_address(cfg.listen);
    out << YAML::Key << "threads" << YAML::Value << cfg.threads;

    out << YAML::Key << "admin" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "listen" << YAML::Value << format_listen_address(cfg.admin.listen);
    out << YAML::EndMap;

    const tls_config& tls = cfg.tls;
    out << YAML::Key << "tls" << YAML::Value << YAML::BeginMap;
    if (tls.listen) {
        out << YAML::Key << "listen" << YAML::Value << format_listen_address(*tls.listen);
    } else {
        out << YAML::Key << "listen" << YAML::Value << YAML::DoubleQuoted << "";
    }
    out << YAML::Key << "cert" << YAML::Value << YAML::DoubleQuoted << tls.cert;
    out << YAML::Key << "key" << YAML::Value << YAML::DoubleQuoted << tls.key;
    out << YAML::Key << "min_version" << YAML::Value << YAML::DoubleQuoted << tls.min_version;
    out << YAML::Key << "alpn" << YAML::Value;
    emit_list(out, tls.alpn);
    out << YAML::EndMap;

    const upstream_config& up = cfg.upstream;
    out << YAML::Key << "upstream" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "servers" << YAML::Value;
    emit_list(out, render_upstreams(up.servers));
    out << YAML::Key << "connect_timeout" << YAML::Value << format_duration(up.connect_timeout);
    out << YAML::Key << "response_timeout" << YAML::Value << format_duration(up.response_timeout);
    out << YAML::Key << "idle_timeout" << YAML::Value << format_duration(up.idle_timeout);
    out << YAML::Key << "max_connections" << YAML::Value << up.max_connections;
    out << YAML::Key << "ca_file" << YAML::Value << YAML::DoubleQuoted << up.ca_file;
    out << YAML::Key << "insecure_skip_verify" << YAML::Value << up.insecure_skip_verify;
    out << YAML::EndMap;

    const client_config& cl = cfg.client;
    out << YAML::Key << "client" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "header_timeout" << YAML::Value << format_duration(cl.header_timeout);
    out << YAML::Key << "idle_timeout" << YAML::Value << format_duration(cl.idle_timeout);
    out << YAML::Key << "body_timeout" << YAML::Value << format_duration(cl.body_timeout);
    out << YAML::Key << "tunnel_idle_timeout" << YAML::Value
        << format_duration(cl.tunnel_idle_timeout);
    out << YAML::Key << "max_header_bytes" << YAML::Value << format_size(cl.max_header_bytes);
    out << YAML::Key << "max_headers" << YAML::Value << cl.max_headers;
    out << YAML::Key << "max_body_bytes" << YAML::Value << format_size(cl.max_body_bytes);
    out << YAML::Key << "max_connections" << YAML::Value << cl.max_connections;
    out << YAML::EndMap;

    const keying_config& k = cfg.keying;
    out << YAML::Key << "keying" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "org_header" << YAML::Value << k.org_header;
    out << YAML::Key << "trusted_org_sources" << YAML::Value;
    emit_list(out, render_cidrs(k.trusted_org_sources));
    out << YAML::Key << "trusted_proxies" << YAML::Value;
    emit_list(out, render_cidrs(k.trusted_proxies));
    out << YAML::Key << "token_secret" << YAML::Value << YAML::DoubleQuoted
        << (k.token_secret.empty() ? std::string() : std::string("<redacted>"));
    out << YAML::Key << "ip_paths" << YAML::Value;
    emit_list(out, k.ip_paths);
    out << YAML::Key << "ipv6_prefix" << YAML::Value << k.ipv6_prefix;
    out << YAML::Key << "trust_forwarded_proto" << YAML::Value << k.trust_forwarded_proto;
    out << YAML::EndMap;

    const rate_limit_config& rl = cfg.rate_limit;
    out << YAML::Key << "rate_limit" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "algorithm" << YAML::Value << std::string(to_string(rl.algorithm));
    out << YAML::Key << "limit" << YAML::Value << rl.limit;
    out << YAML::Key << "window" << YAML::Value << format_duration(rl.window);
    out << YAML::Key << "burst" << YAML::Value << rl.burst;
    out << YAML::Key << "headers" << YAML::Value << std::string(to_string(rl.headers));
    out << YAML::Key << "dry_run" << YAML::Value << rl.dry_run;
    out << YAML::Key << "max_keys" << YAML::Value << rl.max_keys;
    out << YAML::Key << "overrides" << YAML::Value;
    if (rl.overrides.empty()) {
        out << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
    } else {
        out << YAML::BeginSeq;
        for (const auto& o : rl.overrides) {
            out << YAML::BeginMap;
            out << YAML::Key << "key" << YAML::Value << o.key;
            out << YAML::Key << "limit" << YAML::Value << o.limit;
            if (o.window) {
                out << YAML::Key << "window" << YAML::Value << format_duration(*o.window);
            }
            if (o.burst) {
                out << YAML::Key << "burst" << YAML::Value << *o.burst;
            }
            out << YAML::EndMap;
        }
        out << YAML::EndSeq;
    }
    out << YAML::EndMap;

    out << YAML::Key << "concurrency" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "capacity" << YAML::Value << cfg.concurrency.capacity;
    out << YAML::Key << "queue_timeout" << YAML::Value
        << format_duration(cfg.concurrency.queue_timeout);
    out << YAML::EndMap;

    out << YAML::Key << "websocket" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "max_per_key" << YAML::Value << cfg.websocket.max_per_key;
    out << YAML::Key << "max_tunnels" << YAML::Value << cfg.websocket.max_tunnels;
    out << YAML::EndMap;

    out << YAML::Key << "routes" << YAML::Value;
    if (cfg.routes.empty()) {
        out << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
    } else {
        out << YAML::BeginSeq;
        for (const auto& r : cfg.routes) {
            out << YAML::BeginMap;
            out << YAML::Key << "name" << YAML::Value << r.name;
            out << YAML::Key << "path_prefix" << YAML::Value << r.path_prefix;
            out << YAML::Key << "host" << YAML::Value << YAML::DoubleQuoted << r.host;
            out << YAML::Key << "upstream" << YAML::Value;
            emit_list(out, render_upstreams(r.upstream));
            if (r.rate_limit) {
                out << YAML::Key << "rate_limit" << YAML::Value << YAML::BeginMap;
                if (r.rate_limit->algorithm) {
                    out << YAML::Key << "algorithm" << YAML::Value
                        << std::string(to_string(*r.rate_limit->algorithm));
                }
                if (r.rate_limit->limit) {
                    out << YAML::Key << "limit" << YAML::Value << *r.rate_limit->limit;
                }
                if (r.rate_limit->window) {
                    out << YAML::Key << "window" << YAML::Value
                        << format_duration(*r.rate_limit->window);
                }
                if (r.rate_limit->burst) {
                    out << YAML::Key << "burst" << YAML::Value << *r.rate_limit->burst;
                }
                out << YAML::EndMap;
            }
            out << YAML::Key << "exempt" << YAML::Value << r.exempt;
            if (r.concurrency) {
                out << YAML::Key << "concurrency" << YAML::Value << *r.concurrency;
            }
            out << YAML::Key << "upgrade" << YAML::Value;
            emit_list(out, r.upgrade);
            out << YAML::EndMap;
        }
        out << YAML::EndSeq;
    }

    const redis_config& rd = cfg.store.redis;
    out << YAML::Key << "store" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "type" << YAML::Value << std::string(to_string(cfg.store.type));
    out << YAML::Key << "redis" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "url" << YAML::Value << redact_redis_url(rd.url);
    out << YAML::Key << "timeout" << YAML::Value << format_duration(rd.timeout);
    out << YAML::Key << "failure_mode" << YAML::Value << std::string(to_string(rd.on_failure));
    out << YAML::Key << "instances" << YAML::Value << rd.instances;
    out << YAML::Key << "key_prefix" << YAML::Value << YAML::DoubleQuoted << rd.key_prefix;
    out << YAML::EndMap;
    out << YAML::EndMap;

    out << YAML::Key << "log" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "level" << YAML::Value << std::string(to_string(cfg.log.level));
    out << YAML::Key << "access_log" << YAML::Value << cfg.log.access_log;
    out << YAML::EndMap;

    out << YAML::Key << "shutdown" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "drain_timeout" << YAML::Value
        << format_duration(cfg.shutdown.drain_timeout);
    out << YAML::EndMap;
    out << YAML::EndMap;

    std::string header = "# tollgate effective configuration (file: ";
    header += cfg.source.empty() ? "none, built-in defaults" : cfg.source;
    header += "; environment and flags applied; secrets redacted)\n";
    return header + out.c_str() + "\n";
}

}  // namespace tollgate
