#pragma once
// Throwaway certificates for the TLS tests, made at test time with the
// OpenSSL 3 API: EC P-256 keys, X509 v3, SAN DNS:localhost and IP:127.0.0.1.
// Nothing is checked in, so nothing expires in the repository.

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <filesystem>
#include <memory>
#include <string>

#include "tollgate/openssl_ptr.hpp"

namespace tollgate::test {

/// One certificate and its private key, as PEM text.
struct pem_identity {
    std::string cert;         ///< PEM certificate (the leaf alone, no chain)
    std::string key;          ///< PEM PKCS#8 private key
    long serial = 0;          ///< the certificate's serial number
    std::string common_name;  ///< the subject CN
};

/// When a certificate is valid, in seconds from now.
struct validity {
    /// An hour ago: a clock a little behind must not see "not yet valid".
    long not_before = -3600;
    long not_after = 7L * 24 * 3600;
};

/// A certificate authority that exists for one test: self-signed,
/// `CA:TRUE`, `keyCertSign`. Not thread-safe; use it from one thread.
class test_ca {
public:
    explicit test_ca(const std::string& common_name);
    test_ca(test_ca&&) noexcept = default;
    test_ca& operator=(test_ca&&) noexcept = default;

    /// The CA certificate as PEM (what a verifier loads as its trust anchor).
    const std::string& cert_pem() const { return cert_pem_; }

    /// A server certificate signed by this CA: subject CN `common_name`,
    /// subjectAltName `san` (OpenSSL config syntax), EKU serverAuth, valid
    /// over `valid` (by default from one hour ago for seven days).
    pem_identity issue(const std::string& common_name, long serial,
                       const std::string& san = "DNS:localhost,IP:127.0.0.1",
                       validity valid = {}) const;

private:
    pkey_ptr key_;
    x509_ptr cert_;
    std::string cert_pem_;
};

/// The subject CN of `cert` ("" when it has none).
std::string certificate_common_name(const X509* cert);
/// The serial number of `cert` (-1 when it does not fit a long).
long certificate_serial(const X509* cert);

/// A fresh temporary directory with the PEM files the TLS tests need,
/// removed (with everything in it) by the destructor:
///
///   ca_file                     the test CA
///   cert_file / key_file        leaf 1 (CN `first_cn`, serial `first_serial`)
///   second_cert_file / ..._key  leaf 2 from the same CA (the "renewed"
///                               certificate of the reload test)
///   other_ca_file               an unrelated CA that signed neither leaf
/// The two PEM files of one identity, as tls_certs::write() put them.
struct pem_files {
    std::string cert;
    std::string key;
};

class tls_certs {
public:
    static constexpr long first_serial = 1001;
    static constexpr long second_serial = 1002;
    static constexpr const char* first_cn = "tollgate-test-leaf-1";
    static constexpr const char* second_cn = "tollgate-test-leaf-2";

    tls_certs();
    ~tls_certs();
    tls_certs(const tls_certs&) = delete;
    tls_certs& operator=(const tls_certs&) = delete;

    const std::filesystem::path& dir() const { return dir_; }
    /// Writes `text` to `name` inside dir() (replacing it) and returns the path.
    std::string write(const std::string& name, const std::string& text) const;
    /// Writes `id` as `<stem>-cert.pem` and `<stem>-key.pem` inside dir().
    pem_files write(const std::string& stem, const pem_identity& id) const;

    const test_ca& ca() const { return ca_; }
    const pem_identity& first() const { return first_; }
    const pem_identity& second() const { return second_; }

    std::string ca_file;
    std::string other_ca_file;
    std::string cert_file;
    std::string key_file;
    std::string second_cert_file;
    std::string second_key_file;

private:
    std::filesystem::path dir_;
    test_ca ca_;
    test_ca other_ca_;
    pem_identity first_;
    pem_identity second_;
};

}  // namespace tollgate::test
