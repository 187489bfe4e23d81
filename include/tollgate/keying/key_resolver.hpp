#pragma once
/// @file key_resolver.hpp
/// Decides who a request is limited as (DESIGN.md section 2): `org:<id>`,
/// `tok:<hex>` or `ip:<addr>`, the first that applies. Pure policy: it sees a
/// few facts about the request, never a socket or a Beast message.
///
/// Thread-safety: a key_resolver is immutable once built; every const member
/// may be called from any number of threads at once. A config reload builds a
/// new resolver rather than changing one.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tollgate/config/config.hpp"
#include "tollgate/keying/cidr.hpp"

namespace tollgate {

/// Which rule produced a key; also a bounded metrics label.
enum class key_type { org, tok, ip };

/// "org" | "tok" | "ip".
std::string_view to_string(key_type type);

/// What the resolver needs from a request. The views point into the request
/// and need only stay valid for the call.
struct request_facts {
    ip_address peer;                                ///< TCP peer
    std::string_view path;                          ///< request path without query
    std::optional<std::string_view> org_header;     ///< value of keying.org_header if present
    std::optional<std::string_view> authorization;  ///< Authorization header if present
    /// All X-Forwarded-For values joined with ","; empty if none.
    std::string_view forwarded_for;
};

/// The outcome of resolve(). Holds no raw token, only its digest.
struct resolved_key {
    key_type type = key_type::ip;
    /// "org:acme", "tok:<64 lowercase hex>", "ip:1.2.3.4" or "ip:2001:db8::1".
    std::string key;
    /// The client address: the peer, or the address found by walking a
    /// trusted X-Forwarded-For chain. Filled for every key type (for logs),
    /// and the address an `ip:` key is made of.
    ip_address client;
};

/// Maps request facts to a rate-limit key.
///
/// Rules, first that applies (paths in `keying.ip_paths` skip straight to ip):
///
/// * **org** — the org header, only when the peer is in
///   `trusted_org_sources`. Leading/trailing spaces and tabs are trimmed; the
///   rest must match `[A-Za-z0-9._:-]{1,128}`, else the header is ignored and
///   the next rule applies.
/// * **tok** — `Authorization: Bearer <token>`. The scheme is matched
///   case-insensitively and must be followed by at least one space or tab;
///   extra spaces/tabs before the token and after it are tolerated. The token
///   must be an RFC 6750 b64token (`[A-Za-z0-9._~+/-]+=*`). A missing or
///   malformed token, or another scheme (`Basic`), gives no tok key and the
///   request falls through to ip: a string that is not a bearer token
///   would not authenticate upstream either, and keying it would hand out a
///   fresh bucket for any garbage. The key is the lowercase hex SHA-256 of
///   the token, or its HMAC-SHA256 under `token_secret` when that is set, so
///   keys cannot be reversed into tokens; the token itself is never kept.
/// * **ip** — the client address. When the peer is in `trusted_proxies`,
///   X-Forwarded-For is walked right to left: hops that are trusted proxies
///   are skipped, the first untrusted address is the client. Entries may
///   carry spaces, a port (`1.2.3.4:5678`) or brackets (`[2001:db8::1]`,
///   `[2001:db8::1]:443`); empty entries are skipped (RFC 9110 list syntax).
///   An entry that is not an address (`unknown`, an obfuscated RFC 7239 name,
///   garbage) ends the walk and the address to its right — the last hop a
///   trusted proxy vouched for — is used: anything further left was written
///   by someone we cannot trust, so it must not choose the key. If every
///   entry is a trusted proxy, the leftmost one is used. IPv4-mapped IPv6
///   addresses are keyed as IPv4 (`ip:1.2.3.4`). With `ipv6_prefix` below
///   128, an IPv6 client is keyed by its network (`ip:2001:db8:1:2::/64`),
///   since a host that holds a whole /64 could otherwise change address,
///   and bucket, at will; `client` stays the full address.
class key_resolver {
public:
    /// Copies what it needs from `config`, then runs SHA-256 and HMAC once so
    /// a broken OpenSSL setup throws here (at startup) rather than per request.
    explicit key_resolver(const keying_config& config);

    /// The key for one request. Allocates only the key string. Throws only
    /// if OpenSSL fails or memory runs out (see hash.hpp).
    resolved_key resolve(const request_facts& facts) const;

    /// True when the org header from this peer is honoured; otherwise the
    /// proxy strips it before forwarding.
    bool org_source_trusted(const ip_address& peer) const;

    /// True when `path` is in keying.ip_paths: an exact match, or for a
    /// pattern ending in `*`, a path starting with what precedes the `*`
    /// (`/registry/*` matches `/registry/` and `/registry/a/b`, not
    /// `/registry`). A `*` elsewhere is an ordinary character.
    bool is_ip_path(std::string_view path) const;

    /// The client address per the ip rule (X-Forwarded-For walk), whatever
    /// key type resolve() would choose.
    ip_address client_address(const ip_address& peer, std::string_view forwarded_for) const;

    /// The `X-Forwarded-Proto` to send upstream, `http` or `https`: the
    /// scheme the request reached tollgate by (`tls`), or, with
    /// `trust_forwarded_proto` and a peer in `trusted_proxies` (a load
    /// balancer that ends TLS and sets the field), the last element of the
    /// one field it sent (`sent`; nullopt when there are none or several)
    /// when that is `http` or `https` in any case. A backend that redirects
    /// plain HTTP to HTTPS must see its client's scheme, or it redirects
    /// every request; a client cannot claim one unless the balancer passes
    /// its field through, which is why it is a setting of its own.
    std::string_view forwarded_proto(const ip_address& peer, std::optional<std::string_view> sent,
                                     bool tls) const;

private:
    bool is_trusted_proxy(const ip_address& address) const;

    std::vector<cidr> trusted_org_sources_;
    std::vector<cidr> trusted_proxies_;
    std::string token_secret_;
    unsigned ipv6_prefix_ = 128;
    bool trust_forwarded_proto_ = false;
    std::vector<std::string> ip_exact_paths_;
    std::vector<std::string> ip_path_prefixes_;  ///< patterns without their trailing `*`
};

}  // namespace tollgate
