#include "tollgate/keying/hash.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <stdexcept>

namespace tollgate {
namespace {

[[noreturn]] void fail(const char* what) {
    throw std::runtime_error(std::string("tollgate: OpenSSL ") + what + " failed");
}

/// One per thread. The digest is fetched explicitly once: passing EVP_sha256()
/// instead makes OpenSSL 3 look the implementation up again on every init.
struct digest_state {
    EVP_MD* md = nullptr;
    EVP_MD_CTX* ctx = nullptr;

    digest_state() : md(EVP_MD_fetch(nullptr, "SHA256", nullptr)), ctx(EVP_MD_CTX_new()) {}
    ~digest_state() {
        EVP_MD_CTX_free(ctx);
        EVP_MD_free(md);
    }
    digest_state(const digest_state&) = delete;
    digest_state& operator=(const digest_state&) = delete;
};

/// One per thread. The key is set only when it differs from the last call's:
/// re-initialising with a NULL key reuses the prepared inner/outer pads, which
/// is what makes a keyed call cheap. A copy of the key is kept to detect a
/// change (e.g. after a config reload) and is wiped when replaced.
struct mac_state {
    EVP_MAC* mac = nullptr;
    EVP_MAC_CTX* ctx = nullptr;
    std::string key;
    bool keyed = false;

    mac_state() : mac(EVP_MAC_fetch(nullptr, "HMAC", nullptr)) {
        if (mac != nullptr) {
            ctx = EVP_MAC_CTX_new(mac);
        }
    }
    ~mac_state() {
        forget_key();
        EVP_MAC_CTX_free(ctx);
        EVP_MAC_free(mac);
    }
    mac_state(const mac_state&) = delete;
    mac_state& operator=(const mac_state&) = delete;

    void forget_key() {
        if (!key.empty()) {
            OPENSSL_cleanse(key.data(), key.size());
        }
        key.clear();
        keyed = false;
    }
};

}  // namespace

sha256_digest sha256(std::string_view data) {
    thread_local digest_state state;
    if (state.md == nullptr || state.ctx == nullptr) {
        fail("SHA256 fetch");
    }
    sha256_digest out{};
    unsigned int length = 0;
    if (EVP_DigestInit_ex2(state.ctx, state.md, nullptr) != 1 ||
        EVP_DigestUpdate(state.ctx, data.data(), data.size()) != 1 ||
        EVP_DigestFinal_ex(state.ctx, out.data(), &length) != 1 || length != out.size()) {
        fail("SHA256");
    }
    return out;
}

sha256_digest hmac_sha256(std::string_view secret, std::string_view data) {
    thread_local mac_state state;
    if (state.ctx == nullptr) {
        fail("HMAC fetch");
    }
    if (!state.keyed || state.key != secret) {
        state.forget_key();
        // A NULL key means "keep the previous key", so an empty key needs a non-null pointer.
        static const unsigned char empty_key = 0;
        const auto* key =
            secret.empty() ? &empty_key : reinterpret_cast<const unsigned char*>(secret.data());
        char digest_name[] = "SHA256";
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
            OSSL_PARAM_construct_end()};
        if (EVP_MAC_init(state.ctx, key, secret.size(), params) != 1) {
            fail("HMAC key setup");
        }
        state.key.assign(secret);
        state.keyed = true;
    } else if (EVP_MAC_init(state.ctx, nullptr, 0, nullptr) != 1) {
        fail("HMAC init");
    }
    sha256_digest out{};
    std::size_t length = 0;
    if (EVP_MAC_update(state.ctx, reinterpret_cast<const unsigned char*>(data.data()),
                       data.size()) != 1 ||
        EVP_MAC_final(state.ctx, out.data(), &length, out.size()) != 1 || length != out.size()) {
        // The context may be half-updated; make the next call set the key afresh.
        state.forget_key();
        fail("HMAC");
    }
    return out;
}

void append_hex(std::string& out, std::span<const std::uint8_t> bytes) {
    constexpr char digits[] = "0123456789abcdef";
    std::size_t at = out.size();
    out.resize(at + 2 * bytes.size());
    for (std::uint8_t b : bytes) {
        out[at++] = digits[b >> 4];
        out[at++] = digits[b & 0xf];
    }
}

std::string sha256_hex(std::string_view data) {
    std::string out;
    append_hex(out, sha256(data));
    return out;
}

std::string hmac_sha256_hex(std::string_view secret, std::string_view data) {
    std::string out;
    append_hex(out, hmac_sha256(secret, data));
    return out;
}

}  // namespace tollgate
