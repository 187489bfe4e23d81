#pragma once
/// @file config.hpp
/// The effective configuration of one tollgate process. Every key of
/// DESIGN.md section 6 has a field here with its default. A loaded config is
/// immutable and shared as `std::shared_ptr<const config>`; a reload builds a
/// new one and swaps it.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tollgate/keying/cidr.hpp"

namespace tollgate {

using std::chrono::milliseconds;

/// `host:port` to listen on. `host` may be an IPv4 or IPv6 literal (without brackets).
struct listen_address {
    std::string host = "0.0.0.0";
    std::uint16_t port = 8080;
};

/// One upstream server URL, `http://host[:port]` or `https://host[:port]`.
struct upstream_server {
    std::string scheme = "http";  ///< "http" or "https", always lower-case
    std::string host = "127.0.0.1";
    std::uint16_t port = 9000;
    /// The URL as written, for logs.
    std::string url = "http://127.0.0.1:9000";
};

struct upstream_config {
    std::vector<upstream_server> servers{upstream_server{}};
    milliseconds connect_timeout{3000};
    milliseconds response_timeout{30000};
    milliseconds idle_timeout{60000};
    std::size_t max_connections = 1024;
    /// PEM CA bundle that verifies https:// upstreams (routes[].upstream too);
    /// empty = the system's default trust store. Checked readable at load.
    std::string ca_file{};
    /// Do not verify https:// upstream certificates or host names (testing only).
    bool insecure_skip_verify = false;
};

struct client_config {
    milliseconds header_timeout{10000};
    milliseconds idle_timeout{15000};
    milliseconds body_timeout{30000};
    /// A WebSocket tunnel with no data in either direction for this long is closed.
    milliseconds tunnel_idle_timeout{3600000};
    std::size_t max_header_bytes = 16384;
    std::size_t max_headers = 100;
    std::uint64_t max_body_bytes = 10ull * 1024 * 1024;
    std::size_t max_connections = 10000;
};

struct keying_config {
    std::string org_header = "X-Org-Id";
    std::vector<cidr> trusted_org_sources{*cidr::parse("127.0.0.0/8"), *cidr::parse("::1/128")};
    std::vector<cidr> trusted_proxies{};
    std::string token_secret{};
    std::vector<std::string> ip_paths{"/health", "/buildinfo", "/registry/*"};
    /// IPv6 clients are keyed by their first `ipv6_prefix` bits
    /// (`ip:2001:db8:1:2::/64`); 128 keys each address on its own.
    unsigned ipv6_prefix = 128;
    /// Keep the X-Forwarded-Proto a peer in `trusted_proxies` sends (a load
    /// balancer that ends TLS and sets it); off: always the scheme the
    /// request reached tollgate by.
    bool trust_forwarded_proto = false;
};

enum class algorithm_kind { gcra, token_bucket, fixed_window, sliding_window };
enum class headers_mode { draft, ietf, both, none };

/// A per-key limit override (`rate_limit.overrides[]`).
struct rate_override {
    std::string key;
    std::uint64_t limit = 0;
    std::optional<milliseconds> window{};
    std::optional<std::uint64_t> burst{};
};

struct rate_limit_config {
    algorithm_kind algorithm = algorithm_kind::gcra;
    std::uint64_t limit = 600;
    milliseconds window{60000};
    std::uint64_t burst = 0;  ///< 0 = limit
    headers_mode headers = headers_mode::draft;
    bool dry_run = false;
    std::size_t max_keys = 1000000;
    std::vector<rate_override> overrides{};
};

/// `routes[].rate_limit`: any field left unset inherits `rate_limit`.
struct route_rate_limit {
    std::optional<algorithm_kind> algorithm{};
    std::optional<std::uint64_t> limit{};
    std::optional<milliseconds> window{};
    std::optional<std::uint64_t> burst{};

    /// The burst the route's buckets get (0 = their limit): the route's own,
    /// else the global one only while the limit is the global one too. A
    /// route that sets its own limit and no burst gets burst = its limit, as
    /// an override does; a global burst of 1200 must not turn a login
    /// route's `limit: 2` into 1200 requests in a row.
    std::uint64_t effective_burst(std::uint64_t global_burst) const {
        if (burst) {
            return *burst;
        }
        return limit ? 0 : global_burst;
    }
};

struct route_config {
    std::string name;
    std::string path_prefix = "/";
    std::string host{};                       ///< empty = any host
    std::vector<upstream_server> upstream{};  ///< empty = upstream.servers
    std::optional<route_rate_limit> rate_limit{};
    bool exempt = false;
    std::optional<std::size_t> concurrency{};  ///< per-route slot capacity
    /// Protocols a client may switch to with `Upgrade` on this route: RFC 9110
    /// tokens, stored lower-case; empty = no upgrades. Never "h2c".
    std::vector<std::string> upgrade{"websocket"};
};

struct concurrency_config {
    std::size_t capacity = 256;  ///< 0 = off
    milliseconds queue_timeout{0};
};

enum class store_kind { memory, redis };
enum class failure_mode { open, closed };

struct redis_config {
    std::string url = "redis://127.0.0.1:6379";
    milliseconds timeout{20};
    failure_mode on_failure = failure_mode::open;
    std::uint32_t instances = 1;
    std::string key_prefix = "tollgate:";
};

struct store_config {
    store_kind type = store_kind::memory;
    redis_config redis{};
};

enum class log_level { debug, info, warn, error };

struct log_config {
    log_level level = log_level::info;
    bool access_log = true;
};

/// `tls:`. A TLS client listener beside the plain `listen` one. Validated
/// together: `listen` requires `cert` and `key`, and `cert`/`key` without
/// `listen` are errors. Relative paths are relative to the working directory.
struct tls_config {
    std::optional<listen_address> listen{};  ///< unset = no TLS listener
    std::string cert{};                      ///< PEM certificate chain file, leaf first
    std::string key{};                       ///< PEM private key file
    std::string min_version = "1.2";         ///< "1.2" or "1.3"
    /// ALPN protocols offered; only "http/1.1" (tollgate speaks HTTP/1.1 only).
    std::vector<std::string> alpn{"http/1.1"};
};

/// `websocket:` limits on open tunnels (upgraded connections).
struct websocket_config {
    std::size_t max_per_key = 64;    ///< open tunnels per rate key; 0 = no tunnels
    std::size_t max_tunnels = 4096;  ///< open tunnels in all (at least 1)
};

struct admin_config {
    listen_address listen{"127.0.0.1", 9090};
};

struct shutdown_config {
    milliseconds drain_timeout{30000};
};

struct config {
    listen_address listen{};
    unsigned threads = 0;  ///< 0 = one per core
    admin_config admin{};
    tls_config tls{};
    upstream_config upstream{};
    client_config client{};
    keying_config keying{};
    rate_limit_config rate_limit{};
    concurrency_config concurrency{};
    websocket_config websocket{};
    std::vector<route_config> routes{};
    store_config store{};
    log_config log{};
    shutdown_config shutdown{};
    /// File the config came from ("" when built from defaults and env only).
    std::string source{};
    /// Where each key was set: "file:line", a variable or a flag (absent: a
    /// built-in default), for problems found only after loading (an upstream
    /// that does not resolve, a certificate that is no PEM): see located().
    std::map<std::string, std::string, std::less<>> origins{};
};

}  // namespace tollgate
