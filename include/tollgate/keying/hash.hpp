#pragma once
/// @file hash.hpp
/// SHA-256 and HMAC-SHA256 (OpenSSL 3 EVP) for turning bearer tokens into
/// rate-limit keys that never contain the token itself.
///
/// Thread-safety: every function may be called from any thread at once. Each
/// thread keeps its own OpenSSL contexts (thread_local, created on first use
/// and freed at thread exit), so calls share no mutable state and take no lock.
///
/// Cost: the contexts are reused, so a call does no fetch and no context
/// allocation of its own; OpenSSL 3.0 still allocates internally when a
/// context is re-initialised (about 1 allocation for SHA-256, 2 for HMAC,
/// against 3 and 13 for the one-shot `EVP_Digest()` / `HMAC()`).
///
/// Errors: OpenSSL failing (no SHA256/HMAC provider, out of memory) throws
/// std::runtime_error. Constructing a key_resolver runs both functions once,
/// so a broken OpenSSL setup shows at startup, not on the request path.

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace tollgate {

/// A raw SHA-256 (or HMAC-SHA256) value.
using sha256_digest = std::array<std::uint8_t, 32>;

/// SHA-256 of `data`.
sha256_digest sha256(std::string_view data);

/// HMAC-SHA256 of `data` keyed with `secret` (an empty secret is a valid,
/// if pointless, HMAC key).
sha256_digest hmac_sha256(std::string_view secret, std::string_view data);

/// Appends `bytes` to `out` as lowercase hex, two characters per byte.
void append_hex(std::string& out, std::span<const std::uint8_t> bytes);

/// Lowercase hex SHA-256 of `data` (64 characters).
std::string sha256_hex(std::string_view data);

/// Lowercase hex HMAC-SHA256 of `data` keyed with `secret` (64 characters).
std::string hmac_sha256_hex(std::string_view secret, std::string_view data);

}  // namespace tollgate
