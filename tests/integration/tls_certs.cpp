#include "tls_certs.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <stdexcept>
#include <system_error>

namespace tollgate::test {
namespace {

using extension_ptr = std::unique_ptr<X509_EXTENSION, openssl_free<&X509_EXTENSION_free>>;

[[noreturn]] void fail(const std::string& what) {
    std::string detail;
    if (unsigned long e = ERR_get_error(); e != 0) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        detail = std::string(": ") + buf;
    }
    ERR_clear_error();
    throw std::runtime_error("test certificate: " + what + detail);
}

pkey_ptr make_p256_key() {
    pkey_ptr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    if (!key) {
        fail("EC P-256 key generation failed");
    }
    return key;
}

void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    extension_ptr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
    if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
        fail(std::string("cannot add extension ") + OBJ_nid2sn(nid) + " = " + value);
    }
}

/// An unsigned certificate skeleton: version 3, serial, validity, subject, public key.
x509_ptr make_cert(EVP_PKEY* subject_key, const std::string& common_name, long serial,
                   const validity& valid) {
    x509_ptr cert(X509_new());
    if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
        ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial) != 1 ||
        !X509_gmtime_adj(X509_getm_notBefore(cert.get()), valid.not_before) ||
        !X509_gmtime_adj(X509_getm_notAfter(cert.get()), valid.not_after) ||
        X509_set_pubkey(cert.get(), subject_key) != 1) {
        fail("cannot build the certificate for " + common_name);
    }
    X509_NAME* name = X509_get_subject_name(cert.get());
    if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>("tollgate tests"), -1, -1,
                                   0) != 1 ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>(common_name.c_str()), -1,
                                   -1, 0) != 1) {
        fail("cannot set the subject " + common_name);
    }
    return cert;
}

void sign(X509* cert, EVP_PKEY* issuer_key) {
    if (X509_sign(cert, issuer_key, EVP_sha256()) <= 0) {
        fail("signing failed");
    }
}

std::string cert_to_pem(X509* cert) {
    bio_ptr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
        fail("cannot write the certificate as PEM");
    }
    char* data = nullptr;
    long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}

std::string key_to_pem(EVP_PKEY* key) {
    bio_ptr bio(BIO_new(BIO_s_mem()));
    if (!bio ||
        PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
        fail("cannot write the key as PEM");
    }
    char* data = nullptr;
    long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}

std::filesystem::path fresh_temp_dir() {
    static std::atomic<int> counter{0};
    auto base = std::filesystem::temp_directory_path();
    for (int attempt = 0; attempt < 100; ++attempt) {
        auto dir =
            base / ("tollgate-tls-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
        if (std::filesystem::create_directory(dir)) {
            return dir;
        }
    }
    throw std::runtime_error("test certificate: no fresh temp directory under " + base.string());
}

}  // namespace

test_ca::test_ca(const std::string& common_name) : key_(make_p256_key()) {
    cert_ = make_cert(key_.get(), common_name, 1, validity{});
    X509_set_issuer_name(cert_.get(), X509_get_subject_name(cert_.get()));
    add_extension(cert_.get(), cert_.get(), NID_basic_constraints, "critical,CA:TRUE");
    add_extension(cert_.get(), cert_.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
    add_extension(cert_.get(), cert_.get(), NID_subject_key_identifier, "hash");
    sign(cert_.get(), key_.get());
    cert_pem_ = cert_to_pem(cert_.get());
}

pem_identity test_ca::issue(const std::string& common_name, long serial, const std::string& san,
                            validity valid) const {
    pkey_ptr key = make_p256_key();
    x509_ptr cert = make_cert(key.get(), common_name, serial, valid);
    X509_set_issuer_name(cert.get(), X509_get_subject_name(cert_.get()));
    add_extension(cert.get(), cert_.get(), NID_basic_constraints, "critical,CA:FALSE");
    add_extension(cert.get(), cert_.get(), NID_key_usage, "critical,digitalSignature");
    add_extension(cert.get(), cert_.get(), NID_ext_key_usage, "serverAuth");
    add_extension(cert.get(), cert_.get(), NID_subject_alt_name, san.c_str());
    add_extension(cert.get(), cert_.get(), NID_subject_key_identifier, "hash");
    add_extension(cert.get(), cert_.get(), NID_authority_key_identifier, "keyid:always");
    sign(cert.get(), key_.get());
    return pem_identity{cert_to_pem(cert.get()), key_to_pem(key.get()), serial, common_name};
}

std::string certificate_common_name(const X509* cert) {
    if (cert == nullptr) {
        return "";
    }
    const X509_NAME* name = X509_get_subject_name(cert);
    int at = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (at < 0) {
        return "";
    }
    const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at));
    return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)),
                       static_cast<std::size_t>(ASN1_STRING_length(data)));
}

long certificate_serial(const X509* cert) {
    if (cert == nullptr) {
        return -1;
    }
    return ASN1_INTEGER_get(X509_get0_serialNumber(cert));
}

tls_certs::tls_certs()
    : dir_(fresh_temp_dir()),
      ca_("tollgate test CA"),
      other_ca_("unrelated test CA"),
      first_(ca_.issue(first_cn, first_serial)),
      second_(ca_.issue(second_cn, second_serial)) {
    ca_file = write("ca.pem", ca_.cert_pem());
    other_ca_file = write("other-ca.pem", other_ca_.cert_pem());
    cert_file = write("cert.pem", first_.cert);
    key_file = write("key.pem", first_.key);
    second_cert_file = write("second-cert.pem", second_.cert);
    second_key_file = write("second-key.pem", second_.key);
}

tls_certs::~tls_certs() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
}

std::string tls_certs::write(const std::string& name, const std::string& text) const {
    auto path = dir_ / name;
    // Write beside and rename over, so a reader never sees half a PEM file.
    auto partial = dir_ / (name + ".partial");
    {
        std::ofstream out(partial, std::ios::binary | std::ios::trunc);
        out << text;
        if (!out.flush()) {
            throw std::runtime_error("test certificate: cannot write " + partial.string());
        }
    }
    std::filesystem::rename(partial, path);
    return path.string();
}

pem_files tls_certs::write(const std::string& stem, const pem_identity& id) const {
    return {write(stem + "-cert.pem", id.cert), write(stem + "-key.pem", id.key)};
}

}  // namespace tollgate::test
