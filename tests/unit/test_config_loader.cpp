// Config loader: YAML keys and their errors (file:line: key.path), the
// environment and flag layers, render_config, and the shipped conf/ files.

#include <catch2/catch.hpp>

#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "tollgate/config/cli.hpp"
#include "tollgate/config/loader.hpp"
#include "tollgate/config/values.hpp"

#ifndef TOLLGATE_SOURCE_DIR
#define TOLLGATE_SOURCE_DIR "."
#endif
#ifndef TOLLGATE_TEST_DATA_DIR
#define TOLLGATE_TEST_DATA_DIR TOLLGATE_SOURCE_DIR "/tests/data"
#endif

using namespace tollgate;
using std::chrono::milliseconds;

namespace {

namespace fs = std::filesystem;

const std::string source_dir = TOLLGATE_SOURCE_DIR;
const std::string data_dir = std::string(TOLLGATE_TEST_DATA_DIR) + "/config";

/// A private directory with cert.pem, key.pem and ca.pem, removed again at
/// the end of the test. The loader only checks that the files can be opened,
/// so they hold placeholder text, not real PEM.
struct pem_files {
    fs::path dir;
    std::string cert;
    std::string key;
    std::string ca;

    pem_files() {
        static int made = 0;
        dir = fs::temp_directory_path() /
              ("tollgate-config-test-" + std::to_string(::getpid()) + "-" + std::to_string(++made));
        fs::create_directories(dir);
        cert = write("cert.pem");
        key = write("key.pem");
        ca = write("ca.pem");
    }
    ~pem_files() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    pem_files(const pem_files&) = delete;
    pem_files& operator=(const pem_files&) = delete;

    std::string write(const std::string& name) const {
        std::ofstream(dir / name) << "placeholder for " << name << "\n";
        return (dir / name).string();
    }
    /// `tls:` with a listener and both files, as YAML.
    std::string tls_yaml(const std::string& listen = "0.0.0.0:8443") const {
        return "tls:\n  listen: " + listen + "\n  cert: \"" + cert + "\"\n  key: \"" + key + "\"\n";
    }
};

env_lookup env_of(std::map<std::string, std::string> vars) {
    return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
        auto it = vars.find(std::string(name));
        if (it == vars.end()) {
            return std::nullopt;
        }
        return it->second;
    };
}

config parse(std::string_view yaml, const env_lookup& env = no_env()) {
    return parse_config(yaml, "conf/x.yaml", env);
}

/// The full config_error text of loading `yaml` ("" if it loads).
std::string error_of(std::string_view yaml, const env_lookup& env = no_env()) {
    try {
        parse(yaml, env);
    } catch (const config_error& e) {
        return e.what();
    }
    return "";
}

template <class F>
std::string error_from(F&& f) {
    try {
        f();
    } catch (const config_error& e) {
        return e.what();
    }
    return "";
}

void check_same_servers(const std::vector<upstream_server>& a,
                        const std::vector<upstream_server>& b) {
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
        CHECK(a[i].scheme == b[i].scheme);
        CHECK(a[i].host == b[i].host);
        CHECK(a[i].port == b[i].port);
        CHECK(a[i].url == b[i].url);
    }
}

/// Field-by-field equality (config has no operator==).
void check_same(const config& a, const config& b) {
    CHECK(a.listen.host == b.listen.host);
    CHECK(a.listen.port == b.listen.port);
    CHECK(a.threads == b.threads);
    CHECK(a.admin.listen.host == b.admin.listen.host);
    CHECK(a.admin.listen.port == b.admin.listen.port);

    REQUIRE(a.tls.listen.has_value() == b.tls.listen.has_value());
    if (a.tls.listen) {
        CHECK(a.tls.listen->host == b.tls.listen->host);
        CHECK(a.tls.listen->port == b.tls.listen->port);
    }
    CHECK(a.tls.cert == b.tls.cert);
    CHECK(a.tls.key == b.tls.key);
    CHECK(a.tls.min_version == b.tls.min_version);
    CHECK(a.tls.alpn == b.tls.alpn);

    check_same_servers(a.upstream.servers, b.upstream.servers);
    CHECK(a.upstream.connect_timeout == b.upstream.connect_timeout);
    CHECK(a.upstream.response_timeout == b.upstream.response_timeout);
    CHECK(a.upstream.idle_timeout == b.upstream.idle_timeout);
    CHECK(a.upstream.max_connections == b.upstream.max_connections);
    CHECK(a.upstream.ca_file == b.upstream.ca_file);
    CHECK(a.upstream.insecure_skip_verify == b.upstream.insecure_skip_verify);

    CHECK(a.client.header_timeout == b.client.header_timeout);
    CHECK(a.client.idle_timeout == b.client.idle_timeout);
    CHECK(a.client.body_timeout == b.client.body_timeout);
    CHECK(a.client.tunnel_idle_timeout == b.client.tunnel_idle_timeout);
    CHECK(a.client.max_header_bytes == b.client.max_header_bytes);
    CHECK(a.client.max_headers == b.client.max_headers);
    CHECK(a.client.max_body_bytes == b.client.max_body_bytes);
    CHECK(a.client.max_connections == b.client.max_connections);

    CHECK(a.keying.org_header == b.keying.org_header);
    CHECK(a.keying.trusted_org_sources == b.keying.trusted_org_sources);
    CHECK(a.keying.trusted_proxies == b.keying.trusted_proxies);
    CHECK(a.keying.token_secret == b.keying.token_secret);
    CHECK(a.keying.ip_paths == b.keying.ip_paths);
    CHECK(a.keying.ipv6_prefix == b.keying.ipv6_prefix);
    CHECK(a.keying.trust_forwarded_proto == b.keying.trust_forwarded_proto);

    CHECK(a.rate_limit.algorithm == b.rate_limit.algorithm);
    CHECK(a.rate_limit.limit == b.rate_limit.limit);
    CHECK(a.rate_limit.window == b.rate_limit.window);
    CHECK(a.rate_limit.burst == b.rate_limit.burst);
    CHECK(a.rate_limit.headers == b.rate_limit.headers);
    CHECK(a.rate_limit.dry_run == b.rate_limit.dry_run);
    CHECK(a.rate_limit.max_keys == b.rate_limit.max_keys);
    REQUIRE(a.rate_limit.overrides.size() == b.rate_limit.overrides.size());
    for (std::size_t i = 0; i < a.rate_limit.overrides.size(); ++i) {
        const auto& x = a.rate_limit.overrides[i];
        const auto& y = b.rate_limit.overrides[i];
        CHECK(x.key == y.key);
        CHECK(x.limit == y.limit);
        CHECK(x.window == y.window);
        CHECK(x.burst == y.burst);
    }

    CHECK(a.concurrency.capacity == b.concurrency.capacity);
    CHECK(a.concurrency.queue_timeout == b.concurrency.queue_timeout);
    CHECK(a.websocket.max_per_key == b.websocket.max_per_key);
    CHECK(a.websocket.max_tunnels == b.websocket.max_tunnels);

    REQUIRE(a.routes.size() == b.routes.size());
    for (std::size_t i = 0; i < a.routes.size(); ++i) {
        const auto& x = a.routes[i];
        const auto& y = b.routes[i];
        CHECK(x.name == y.name);
        CHECK(x.path_prefix == y.path_prefix);
        CHECK(x.host == y.host);
        check_same_servers(x.upstream, y.upstream);
        REQUIRE(x.rate_limit.has_value() == y.rate_limit.has_value());
        if (x.rate_limit) {
            CHECK(x.rate_limit->algorithm == y.rate_limit->algorithm);
            CHECK(x.rate_limit->limit == y.rate_limit->limit);
            CHECK(x.rate_limit->window == y.rate_limit->window);
            CHECK(x.rate_limit->burst == y.rate_limit->burst);
        }
        CHECK(x.exempt == y.exempt);
        CHECK(x.concurrency == y.concurrency);
        CHECK(x.upgrade == y.upgrade);
    }

    CHECK(a.store.type == b.store.type);
    CHECK(a.store.redis.url == b.store.redis.url);
    CHECK(a.store.redis.timeout == b.store.redis.timeout);
    CHECK(a.store.redis.on_failure == b.store.redis.on_failure);
    CHECK(a.store.redis.instances == b.store.redis.instances);
    CHECK(a.store.redis.key_prefix == b.store.redis.key_prefix);

    CHECK(a.log.level == b.log.level);
    CHECK(a.log.access_log == b.log.access_log);
    CHECK(a.shutdown.drain_timeout == b.shutdown.drain_timeout);
}

}  // namespace

// ---- shipped files and defaults ------------------------------------------------

TEST_CASE("config: a file with no settings is an error, {} and no file mean all defaults",
          "[config][loader]") {
    const std::string empty =
        ":1: the file has no settings (empty, comments only or null); write {} to take every "
        "default";
    CHECK(error_of("") == "conf/x.yaml" + empty);
    CHECK(error_of("# nothing\n\n") == "conf/x.yaml" + empty);
    CHECK(error_of("~\n") == "conf/x.yaml" + empty);
    CHECK(error_of("null\n") == "conf/x.yaml" + empty);
    CHECK(error_from([] { load_config_file(data_dir + "/empty.yaml", no_env()); }) ==
          data_dir + "/empty.yaml" + empty);
    CHECK(error_from([] { load_config_file(data_dir + "/comments_only.yaml", no_env()); }) ==
          data_dir + "/comments_only.yaml" + empty);
    check_same(parse("{}\n"), config{});
    check_same(parse("# all defaults\n{}\n"), config{});
    check_same(load_defaults(no_env()), config{});
    CHECK(load_defaults(no_env()).source.empty());
    CHECK(parse("{}").source == "conf/x.yaml");
}

TEST_CASE("config: conf/tollgate.yaml states exactly the built-in defaults", "[config][loader]") {
    config loaded = load_config_file(source_dir + "/conf/tollgate.yaml", no_env());
    check_same(loaded, config{});
    CHECK(loaded.source == source_dir + "/conf/tollgate.yaml");
}

TEST_CASE("config: conf/examples all load", "[config][loader]") {
    auto load = [](const std::string& name) {
        return load_config_file(source_dir + "/conf/examples/" + name, no_env());
    };
    config single = load("single-backend.yaml");
    CHECK(single.rate_limit.limit == 100);
    REQUIRE(single.routes.size() == 1);
    CHECK(single.routes[0].exempt);

    config saas = load("saas-trusted-org.yaml");
    REQUIRE(saas.rate_limit.overrides.size() == 2);
    CHECK(saas.rate_limit.overrides[0].key == "org:acme");
    CHECK(saas.upstream.servers.size() == 2);
    CHECK(saas.keying.trusted_org_sources.size() == 3);
    CHECK(saas.client.max_body_bytes == 64ull << 20);

    config lb = load("behind-load-balancer.yaml");
    CHECK(lb.keying.trusted_proxies.size() == 2);
    CHECK(lb.keying.trust_forwarded_proto);
    CHECK(lb.rate_limit.algorithm == algorithm_kind::token_bucket);

    config redis = load("redis.yaml");
    CHECK(redis.store.type == store_kind::redis);
    CHECK(redis.store.redis.instances == 3);
    CHECK(redis.store.redis.key_prefix == "tollgate:prod:");

    config ws = load("tls-websocket.yaml");
    CHECK_FALSE(ws.tls.listen.has_value());  // needs cert files; commented out
    REQUIRE(ws.upstream.servers.size() == 2);
    CHECK(ws.upstream.servers[0].scheme == "https");
    CHECK(ws.upstream.servers[0].port == 443);
    CHECK(ws.websocket.max_per_key == 8);
    REQUIRE(ws.routes.size() == 2);
    CHECK(ws.routes[0].upgrade == std::vector<std::string>{"websocket"});
    CHECK(ws.routes[1].upgrade.empty());
}

TEST_CASE("config: every key is read", "[config][loader]") {
    config c = load_config_file(data_dir + "/full.yaml", no_env());
    CHECK(c.listen.host == "::");
    CHECK(c.listen.port == 8081);
    CHECK(c.threads == 4);
    CHECK(c.admin.listen.host == "127.0.0.2");
    CHECK(c.admin.listen.port == 9191);
    CHECK_FALSE(c.tls.listen.has_value());
    CHECK(c.tls.min_version == "1.3");
    CHECK(c.tls.alpn == std::vector<std::string>{"http/1.1"});
    REQUIRE(c.upstream.servers.size() == 3);
    CHECK(c.upstream.servers[1].host == "fd00::2");
    CHECK(c.upstream.servers[1].port == 8001);
    CHECK(c.upstream.servers[2].port == 80);
    CHECK(c.upstream.connect_timeout == milliseconds{1500});
    CHECK(c.upstream.response_timeout == milliseconds{120000});
    CHECK(c.upstream.idle_timeout == milliseconds{3600000});
    CHECK(c.upstream.max_connections == 64);
    CHECK(c.upstream.insecure_skip_verify);
    CHECK(c.upstream.ca_file.empty());
    CHECK(c.client.header_timeout == milliseconds{5000});
    CHECK(c.client.idle_timeout == milliseconds{20000});
    CHECK(c.client.body_timeout == milliseconds{45000});
    CHECK(c.client.tunnel_idle_timeout == milliseconds{600000});
    CHECK(c.client.max_header_bytes == 32768);
    CHECK(c.client.max_headers == 50);
    CHECK(c.client.max_body_bytes == 1000000000);
    CHECK(c.client.max_connections == 500);
    CHECK(c.keying.org_header == "X-Tenant");
    CHECK(c.keying.trusted_org_sources == std::vector<cidr>{*cidr::parse("10.0.0.0/8")});
    CHECK(c.keying.trusted_proxies ==
          std::vector<cidr>{*cidr::parse("192.168.0.0/16"), *cidr::parse("fd00::/8")});
    CHECK(c.keying.token_secret == "s3cret value");
    CHECK(c.keying.ip_paths == std::vector<std::string>{"/ping", "/status/*"});
    CHECK(c.keying.ipv6_prefix == 56);
    CHECK(c.keying.trust_forwarded_proto);
    CHECK(c.rate_limit.algorithm == algorithm_kind::token_bucket);
    CHECK(c.rate_limit.limit == 1200);
    CHECK(c.rate_limit.window == milliseconds{30000});
    CHECK(c.rate_limit.burst == 300);
    CHECK(c.rate_limit.headers == headers_mode::both);
    CHECK(c.rate_limit.dry_run);
    CHECK(c.rate_limit.max_keys == 5000);
    REQUIRE(c.rate_limit.overrides.size() == 3);
    CHECK(c.rate_limit.overrides[0].key == "org:acme");
    CHECK(c.rate_limit.overrides[0].limit == 6000);
    CHECK(c.rate_limit.overrides[0].window == milliseconds{60000});
    CHECK(c.rate_limit.overrides[0].burst == std::optional<std::uint64_t>{1000});
    CHECK(c.rate_limit.overrides[1].key == "ip:10.9.9.9");  // canonical form
    CHECK(c.rate_limit.overrides[2].key == "ip:2001:db8:0:100::/56");
    CHECK_FALSE(c.rate_limit.overrides[1].window.has_value());
    CHECK(c.concurrency.capacity == 0);
    CHECK(c.concurrency.queue_timeout == milliseconds{250});
    CHECK(c.websocket.max_per_key == 0);
    CHECK(c.websocket.max_tunnels == 100);
    REQUIRE(c.routes.size() == 2);
    CHECK(c.routes[0].name == "uploads");
    CHECK(c.routes[0].path_prefix == "/v1/uploads");
    CHECK(c.routes[0].host == "api.example.com");
    REQUIRE(c.routes[0].upstream.size() == 2);
    CHECK(c.routes[0].upstream[0].host == "10.2.0.1");
    CHECK(c.routes[0].upstream[1].scheme == "https");
    CHECK(c.routes[0].upstream[1].host == "fd00::3");
    CHECK(c.routes[0].upstream[1].port == 443);
    CHECK(c.routes[0].upgrade == std::vector<std::string>{"websocket", "x-custom.v2"});
    CHECK(c.routes[1].upgrade.empty());
    REQUIRE(c.routes[0].rate_limit.has_value());
    CHECK(c.routes[0].rate_limit->algorithm == algorithm_kind::gcra);
    CHECK(c.routes[0].rate_limit->limit == std::optional<std::uint64_t>{10});
    CHECK(c.routes[0].rate_limit->window == milliseconds{60000});
    CHECK(c.routes[0].rate_limit->burst == std::optional<std::uint64_t>{2});
    CHECK(c.routes[0].concurrency == std::optional<std::size_t>{8});
    CHECK_FALSE(c.routes[0].exempt);
    CHECK(c.routes[1].exempt);
    CHECK_FALSE(c.routes[1].rate_limit.has_value());
    CHECK(c.routes[1].upstream.empty());
    CHECK(c.store.type == store_kind::redis);
    CHECK(c.store.redis.url == "redis://:pw@cache:6380/1");
    CHECK(c.store.redis.timeout == milliseconds{50});
    CHECK(c.store.redis.on_failure == failure_mode::closed);
    CHECK(c.store.redis.instances == 3);
    CHECK(c.store.redis.key_prefix == "tg:");
    CHECK(c.log.level == log_level::debug);
    CHECK_FALSE(c.log.access_log);
    CHECK(c.shutdown.drain_timeout == milliseconds{5000});
}

// ---- error messages ------------------------------------------------------------

TEST_CASE("config: value errors name file, line and key path", "[config][loader]") {
    CHECK(error_of("rate_limit:\n  limit: ten\n") ==
          "conf/x.yaml:2: rate_limit.limit: must be a positive integer, got \"ten\"");
    CHECK(error_of("listen: 0.0.0.0:8080\nthreads: 2000\n") ==
          "conf/x.yaml:2: threads: must be at most 1024, got \"2000\"");
    CHECK(error_of("client:\n  max_body_bytes: 10mb\n") ==
          "conf/x.yaml:2: client.max_body_bytes: must be a size like 16384, 512KiB, 10MiB or 1GB "
          "(units: B, KiB, MiB, GiB, TiB, KB, MB, GB, TB; case-sensitive), got \"10mb\"");
    CHECK(error_of("upstream:\n  servers:\n    - http://a:1\n    - ftp://b\n") ==
          "conf/x.yaml:4: upstream.servers[1]: only http:// and https:// upstreams are supported, "
          "got \"ftp://b\"");
    CHECK(error_of("keying:\n  trusted_proxies: [10.0.0.0/8, 10.1.2.3/16]\n") ==
          "conf/x.yaml:2: keying.trusted_proxies[1]: has host bits set after the /16 prefix (did "
          "you mean 10.1.0.0/16?), got \"10.1.2.3/16\"");
    CHECK(error_of("rate_limit: {dry_run: yes}\n") ==
          "conf/x.yaml:1: rate_limit.dry_run: must be true or false, got \"yes\"");
    CHECK(error_of("store:\n  redis:\n    instances: 0\n") ==
          "conf/x.yaml:3: store.redis.instances: must be a positive integer, got \"0\"");
    CHECK(error_of("upstream:\n  connect_timeout: 0s\n") ==
          "conf/x.yaml:2: upstream.connect_timeout: must be greater than 0, got \"0s\"");
    CHECK(error_of("rate_limit:\n  window: 60\n") ==
          "conf/x.yaml:2: rate_limit.window: needs a unit (ms, s, m or h), e.g. 60s or 500ms, got "
          "\"60\"");
    CHECK(error_of("log: {level: verbose}\n") ==
          "conf/x.yaml:1: log.level: must be one of debug, info, warn, error; got \"verbose\"");
    CHECK(error_of("store:\n  redis: {url: \"redis://:hunter2%zz@h\"}\n") ==
          "conf/x.yaml:2: store.redis.url: password has an invalid %-escape (write %XX with two "
          "hex digits, e.g. %40 for @, %25 for %), got \"redis://:<redacted>@h\"");
    CHECK(error_of("store:\n  redis: {url: \"redis://:hunter2@h:0\"}\n") ==
          "conf/x.yaml:2: store.redis.url: port must be 1-65535, got "
          "\"redis://:<redacted>@h:0\"");
    CHECK(error_of("keying:\n  org_header: \"X Org\"\n") ==
          "conf/x.yaml:2: keying.org_header: must be an HTTP header name like X-Org-Id, got \"X "
          "Org\"");
    // Names that could never work as the org header: refused with 400, or
    // read or rewritten by tollgate itself (and stripped from untrusted peers).
    CHECK(error_of("keying:\n  org_header: X_Org_Id\n") ==
          "conf/x.yaml:2: keying.org_header: must not contain _ (tollgate refuses requests with _ "
          "in a header name, see README), got \"X_Org_Id\"");
    for (const char* name : {"Host", "authorization", "X-FORWARDED-FOR", "Content-Length"}) {
        CHECK(error_of(std::string("keying:\n  org_header: ") + name + "\n") ==
              std::string("conf/x.yaml:2: keying.org_header: must be a header of its own like "
                          "X-Org-Id, not \"") +
                  name + "\", which tollgate reads or rewrites itself");
    }
    CHECK(parse("keying:\n  org_header: X-Tenant-Id\n").keying.org_header == "X-Tenant-Id");
    CHECK(error_of("keying:\n  ip_paths: [health]\n") ==
          "conf/x.yaml:2: keying.ip_paths[0]: must be a path starting with / (a * is allowed only "
          "at the end), got \"health\"");
    CHECK(error_of("client: {max_header_bytes: 10}\n") ==
          "conf/x.yaml:1: client.max_header_bytes: must be at least 1KiB, got \"10\"");
    CHECK(parse("client: {max_header_bytes: 1KiB}\n").client.max_header_bytes == 1024);
    CHECK(error_of("client: {max_header_bytes: 8GiB}\n") ==
          "conf/x.yaml:1: client.max_header_bytes: must be at most 4294967295 bytes, got "
          "\"8GiB\"");
}

TEST_CASE("config: unknown keys are errors at every level", "[config][loader]") {
    CHECK(error_of("listen: 0.0.0.0:8080\nlisten_addr: 1.2.3.4:80\n") ==
          "conf/x.yaml:2: listen_addr: unknown key; expected one of: listen, threads, admin, tls, "
          "upstream, client, keying, rate_limit, concurrency, websocket, routes, store, log, "
          "shutdown");
    CHECK(error_of("rate_limit:\n  limt: 5\n") ==
          "conf/x.yaml:2: rate_limit.limt: unknown key (did you mean \"limit\"?)");
    CHECK(error_of("limit: 5\n") ==
          "conf/x.yaml:1: limit: unknown key here (it belongs at rate_limit.limit or "
          "rate_limit.overrides[].limit or routes[].rate_limit.limit)");
    CHECK(error_of("store:\n  redis:\n    password: x\n") ==
          "conf/x.yaml:3: store.redis.password: unknown key; expected one of: url, timeout, "
          "failure_mode, instances, key_prefix");
    CHECK(error_of("routes:\n  - name: a\n    path: /a\n") ==
          "conf/x.yaml:3: routes[0].path: unknown key; expected one of: name, path_prefix, host, "
          "upstream, rate_limit, exempt, concurrency, upgrade");
    // Where a key exists only in another section, say so.
    CHECK(error_of("routes:\n  - name: a\n    rate_limit: {limit: 5, dry_run: true}\n") ==
          "conf/x.yaml:3: routes[0].rate_limit.dry_run: unknown key here (it belongs at "
          "rate_limit.dry_run)");
    CHECK(error_of("routes:\n  - name: a\n    rate_limit: {limit: 5, quota: 3}\n") ==
          "conf/x.yaml:3: routes[0].rate_limit.quota: unknown key; expected one of: algorithm, "
          "limit, window, burst");
    CHECK(error_of("rate_limit:\n  overrides:\n    - key: \"org:a\"\n      limit: 5\n"
                   "      windw: 1s\n") ==
          "conf/x.yaml:5: rate_limit.overrides[0].windw: unknown key (did you mean \"window\"?)");
    CHECK(error_of("client:\n  idle_timout: 5s\n") ==
          "conf/x.yaml:2: client.idle_timout: unknown key (did you mean \"idle_timeout\"?)");
}

TEST_CASE("config: wrong node types are errors", "[config][loader]") {
    CHECK(error_of("rate_limit:\n  limit: {a: 1}\n") ==
          "conf/x.yaml:2: rate_limit.limit: must be a positive integer, got a mapping");
    CHECK(error_of("threads: [1, 2]\n") ==
          "conf/x.yaml:1: threads: must be a non-negative integer, got a list");
    CHECK(error_of("rate_limit: 600\n") ==
          "conf/x.yaml:1: rate_limit: must be a mapping of keys, got \"600\"");
    CHECK(error_of("keying:\n  trusted_proxies: 10.0.0.0/8\n") ==
          "conf/x.yaml:2: keying.trusted_proxies: must be a list like [10.0.0.0/8], "
          "got \"10.0.0.0/8\"");
    CHECK(error_of("routes: {name: a}\n") ==
          "conf/x.yaml:1: routes: must be a list, got a mapping");
    CHECK(error_of("routes:\n  - /api\n") ==
          "conf/x.yaml:2: routes[0]: must be a mapping of keys, got \"/api\"");
    CHECK(error_of("- a\n- b\n") ==
          "conf/x.yaml:1: the top level must be a mapping of keys, got a list");
    CHECK(error_of("just text\n") ==
          "conf/x.yaml:1: the top level must be a mapping of keys, got \"just text\"");
    CHECK(error_of("upstream:\n  servers:\n    - [http://a:1]\n") ==
          "conf/x.yaml:3: upstream.servers[0]: must be an http:// or https:// URL like "
          "http://127.0.0.1:9000, got a list");
    CHECK(error_of("[a]: 1\n") == "conf/x.yaml:1: keys must be plain names, got a list");
    CHECK(error_of("base: &b {limit: 5}\nrate_limit:\n  <<: *b\n") ==
          "conf/x.yaml:1: base: unknown key; expected one of: listen, threads, admin, tls, "
          "upstream, client, keying, rate_limit, concurrency, websocket, routes, store, log, "
          "shutdown\n"
          "conf/x.yaml:3: rate_limit: YAML merge keys (<<) are not supported; write the keys "
          "out");
}

TEST_CASE("config: keys without a value", "[config][loader]") {
    CHECK(error_of("rate_limit:\n  limit:\n  window: 1s\n") ==
          "conf/x.yaml:2: rate_limit.limit: has no value; expected a positive integer (remove "
          "the key to use the default)");
    CHECK(error_of("keying:\n  token_secret: ~\n") ==
          "conf/x.yaml:2: keying.token_secret: has no value; expected a string (remove the key to "
          "use the default)");
    // A list whose default is not empty: "nothing" is ambiguous.
    CHECK(error_of("keying:\n  trusted_org_sources:\n") ==
          "conf/x.yaml:2: keying.trusted_org_sources: must be a list like [127.0.0.0/8], got "
          "nothing (write [] for an empty list)");
    // One that may not be empty either: [] is no way out.
    CHECK(error_of("upstream:\n  servers:\n") ==
          "conf/x.yaml:2: upstream.servers: must be a list like [http://127.0.0.1:9000], got "
          "nothing");
    // Sections and empty-by-default lists with everything commented out.
    config c = parse(
        "keying:\n#  org_header: X\nroutes:\n#  - name: a\nrate_limit:\n"
        "  overrides:\n  limit: 7\n");
    CHECK(c.keying.org_header == "X-Org-Id");
    CHECK(c.routes.empty());
    CHECK(c.rate_limit.overrides.empty());
    CHECK(c.rate_limit.limit == 7);
    CHECK(parse("keying:\n  trusted_org_sources: []\n").keying.trusted_org_sources.empty());
}

TEST_CASE("config: duplicate keys, YAML syntax, several documents", "[config][loader]") {
    CHECK(error_of("rate_limit:\n  limit: 5\n  limit: 6\n") ==
          "conf/x.yaml:3: rate_limit.limit: duplicate key (first set on line 2)");
    CHECK(error_of("rate_limit:\n  limit: [5\n") ==
          "conf/x.yaml:3: invalid YAML: end of sequence flow not found");
    CHECK(error_of("a: b: c\n") == "conf/x.yaml:1: invalid YAML: illegal map value");
    // yaml-cpp stops at 500 levels, saying "bad file".
    CHECK(error_of("a: " + std::string(600, '[') + std::string(600, ']') + "\n") ==
          "conf/x.yaml:1: invalid YAML: nested too deeply (no setting is more than a few levels "
          "down)");
    // The usual slips get a hint yaml-cpp's message does not give.
    CHECK(error_of("keying:\n\ttoken_secret: x\n") ==
          "conf/x.yaml:2: invalid YAML: illegal map value (a tab in the indentation: YAML "
          "indents with spaces only)");
    CHECK(error_of("rate_limit:\n  limit: 5\n \twindow: 1m\n") ==
          "conf/x.yaml:3: invalid YAML: illegal tab when looking for indentation (a tab in the "
          "indentation: YAML indents with spaces only)");
    CHECK(error_of("keying:\n  ip_paths: [/a, /b]: x\n").find("IPv6") == std::string::npos);
    CHECK(error_of("threads: 1\nlisten: [::1]:8080\n") ==
          "conf/x.yaml:2: invalid YAML: end of map not found (a value with an IPv6 address in "
          "brackets must be quoted: \"[::1]:8080\")");
    CHECK(error_of("listen: 0.0.0.0:1\n---\nlisten: 0.0.0.0:2\n") ==
          "conf/x.yaml:3: only one YAML document is allowed (found a second after ---)");
    CHECK(error_of("listen: 0.0.0.0:1\n...\nthreads: 2\n") ==
          "conf/x.yaml:3: only one YAML document is allowed (found a second after the ... end "
          "marker)");
    // More documents than two are not even parsed: the second is enough to refuse.
    CHECK(error_of("threads: 1\n---\nthreads: 2\n---\n]\n") ==
          "conf/x.yaml:3: only one YAML document is allowed (found a second after ---)");
    // An explicit start of the one document, or an end marker after it, is fine.
    CHECK(parse("---\nthreads: 3\n...\n").threads == 3);
}

TEST_CASE("config: garbage YAML ends in an error, never a hang", "[config][loader]") {
    // yaml-cpp 0.7's LoadAll loops forever on a lone ",": each call returns an
    // empty document and consumes nothing. The loader must stop and say why.
    CHECK(error_of(",") ==
          "conf/x.yaml:1: invalid YAML: unexpected \",\" (a comma separates items only inside "
          "[ ] or { })");
    CHECK(error_of(", ,\n") ==
          "conf/x.yaml:1: invalid YAML: unexpected \",\" (a comma separates items only inside "
          "[ ] or { })");
    CHECK(error_of("\n\n  ,a\n") ==
          "conf/x.yaml:3: invalid YAML: unexpected \",\" (a comma separates items only inside "
          "[ ] or { })");
    // After a complete document, a stray comma is a syntax error, not a second document.
    CHECK(error_of("- a\n,\n") ==
          "conf/x.yaml:2: invalid YAML: unexpected \",\" (a comma separates items only inside "
          "[ ] or { })");
    CHECK(error_of("listen: 0.0.0.0:1\n,\n") ==
          "conf/x.yaml:2: invalid YAML: end of map not found");
    CHECK(error_of("]") == "conf/x.yaml:1: invalid YAML: illegal flow end");
    CHECK(error_of("{") == "conf/x.yaml:1: invalid YAML: end of map flow not found");
    CHECK(error_of("*a") == "conf/x.yaml:1: invalid YAML: the referenced anchor is not defined");
    // An alias is blamed where it is used, not where its anchor is.
    CHECK(error_of("rate_limit:\n  limit: &n 5\nconcurrency:\n  queue_timeout: *n\n") ==
          "conf/x.yaml:4: concurrency.queue_timeout: needs a unit (ms, s, m or h), e.g. 60s or "
          "500ms, got \"5\"");
    for (const char* garbage :
         {",", ",,,,", "[,", "{,}", "- ,", ": ,", "\t,", "%YAML 1.2\n,", "--- ,", "...\n,", "'",
          "\"", "|\n,", "&x ,", "!t ,", "? ", "a: b: c,"}) {
        INFO(garbage);
        CHECK_FALSE(error_of(garbage).empty());
    }
}

TEST_CASE("config: all errors are reported, in line order", "[config][loader]") {
    std::string path = data_dir + "/errors.yaml";
    std::string text = error_from([&] { load_config_file(path, no_env()); });
    CHECK(text == path +
                      ":2: listen: must use an IP address, not a host name, e.g. "
                      "127.0.0.1:8080, got \"localhost:8080\"\n" +
                      path + ":4: rate_limit.limit: must be a positive integer, got \"ten\"\n" +
                      path + ":5: rate_limit.windw: unknown key (did you mean \"window\"?)\n" +
                      path +
                      ":8: routes[0].path_prefix: must be a URL path starting with / (no "
                      "spaces, query or fragment), got \"api\"\n" +
                      path + ":9: routes[0].exempt: must be true or false, got \"yes\"");
}

TEST_CASE("config: unreadable files", "[config][loader]") {
    CHECK(error_from([] { load_config_file("/nonexistent/t.yaml", no_env()); }) ==
          "/nonexistent/t.yaml: cannot read: No such file or directory");
    CHECK(error_from([] { load_config_file(data_dir, no_env()); }) ==
          data_dir + ": cannot read: Is a directory");
}

// ---- cross-field checks --------------------------------------------------------

TEST_CASE("config: routes: names, prefixes, hosts", "[config][loader]") {
    CHECK(error_of("routes:\n  - path_prefix: /a\n") ==
          "conf/x.yaml:2: routes[0].name: is required (routes need a unique name)");
    CHECK(error_of("routes:\n  - name: \"\"\n") ==
          "conf/x.yaml:2: routes[0].name: must match [A-Za-z0-9._-]{1,64}, got \"\"");
    CHECK(error_of("routes:\n  - name: api\n    path_prefix: /a\n  - name: api\n"
                   "    path_prefix: /b\n") ==
          "conf/x.yaml:4: routes[1].name: duplicate route name \"api\" (first used by routes[0] "
          "on line 2)");
    CHECK(error_of("routes:\n  - {name: a, path_prefix: /x}\n  - {name: b, path_prefix: /x}\n") ==
          "conf/x.yaml:3: routes[1]: same host and path_prefix as routes[0], so it would never "
          "match");
    CHECK(error_of("routes:\n  - {name: a, path_prefix: \"/x?y\"}\n") ==
          "conf/x.yaml:2: routes[0].path_prefix: must be a URL path starting with / (no spaces, "
          "query or fragment), got \"/x?y\"");
    CHECK(error_of("routes:\n  - {name: a, host: \"bad host\"}\n") ==
          "conf/x.yaml:2: routes[0].host: must be a host name or address like api.example.com or "
          "\"[::1]\", got \"bad host\"");
    CHECK(error_of("routes:\n  - {name: a, host: \"a.example/x\"}\n") ==
          "conf/x.yaml:2: routes[0].host: must be a host name or address like api.example.com or "
          "\"[::1]\", got \"a.example/x\"");
    CHECK(error_of("routes:\n  - {name: a, upstream: [ftp://x]}\n") ==
          "conf/x.yaml:2: routes[0].upstream[0]: only http:// and https:// upstreams are "
          "supported, got \"ftp://x\"");
    CHECK(error_of("routes:\n  - {name: a, concurrency: 0}\n") ==
          "conf/x.yaml:2: routes[0].concurrency: must be a positive integer, got \"0\"");
    CHECK(error_of("routes:\n  - name: a\n    exempt: true\n    rate_limit: {limit: 5}\n") ==
          "conf/x.yaml:4: routes[0].rate_limit: has no effect on an exempt route (remove one of "
          "them)");
    // Exempt requests hold no completion slot either.
    CHECK(error_of("routes:\n  - name: a\n    concurrency: 5\n    exempt: true\n") ==
          "conf/x.yaml:3: routes[0].concurrency: has no effect on an exempt route (remove one of "
          "them)");
    // A route prefix is a plain prefix: a * in it is no wildcard.
    CHECK(error_of("routes:\n  - {name: a, path_prefix: /api/*}\n") ==
          "conf/x.yaml:2: routes[0].path_prefix: is a plain prefix, so * would only match a "
          "literal *: write \"/api/\" to match everything under it, got \"/api/*\"");
    // Same prefix on different hosts is fine.
    config ok = parse(
        "routes:\n  - {name: a, host: a.example, path_prefix: /x}\n"
        "  - {name: b, host: B.example, path_prefix: /x}\n"
        "  - {name: c, host: \"[::1]\", path_prefix: /x}\n");
    CHECK(ok.routes.size() == 3);
    // A fully qualified name's final dot is dropped, as requests' are.
    CHECK(
        parse("routes:\n  - {name: a, host: api.example.com., path_prefix: /x}\n").routes[0].host ==
        "api.example.com");
    CHECK(ok.routes[1].host == "B.example");
    CHECK(ok.routes[2].host == "[::1]");
}

TEST_CASE("config: routes[].host has no port, and hosts compare case-insensitively",
          "[config][loader]") {
    // The Host header's port is cut off before matching, so a route host
    // with a port would never match.
    const std::string why =
        ": must be a host name without :port; routes match the Host header's name (any port), "
        "got ";
    CHECK(error_of("routes:\n  - {name: a, host: \"b.example:8080\"}\n") ==
          "conf/x.yaml:2: routes[0].host" + why + "\"b.example:8080\"");
    CHECK(error_of("routes:\n  - {name: a, host: \"10.0.0.1:80\"}\n") ==
          "conf/x.yaml:2: routes[0].host" + why + "\"10.0.0.1:80\"");
    CHECK(error_of("routes:\n  - {name: a, host: \"[::1]:8080\"}\n") ==
          "conf/x.yaml:2: routes[0].host" + why + "\"[::1]:8080\"");
    // Matching ignores case, so these two are one route twice.
    CHECK(error_of("routes:\n  - {name: a, host: X.com, path_prefix: /x}\n"
                   "  - {name: b, host: x.COM, path_prefix: /x}\n") ==
          "conf/x.yaml:3: routes[1]: same host and path_prefix as routes[0], so it would never "
          "match");
}

TEST_CASE("config: path_prefix and ip_paths that no request path could match are refused",
          "[config][loader]") {
    // Requests are matched after proxy::normalize_path (empty segments and
    // ;params dropped, unreserved %XX decoded), and those with dot segments
    // or an encoded letter, digit, -, . or _ are refused with 400 first.
    const auto route = [](std::string_view prefix) {
        return error_of("routes:\n  - {name: a, path_prefix: \"" + std::string(prefix) + "\"}\n");
    };
    const auto ip_path = [](std::string_view path) {
        return error_of("keying:\n  ip_paths: [\"" + std::string(path) + "\"]\n");
    };
    const std::string at = "conf/x.yaml:2: routes[0].path_prefix: ";
    CHECK(route("/api//v1") == at + "must not contain // (request paths are matched with empty "
                                    "segments removed, so //a/b is matched as /a/b), got "
                                    "\"/api//v1\"");
    CHECK(route("/login;jsessionid") == at + "must not contain ; (request paths are matched with "
                                             ";parameters cut from every segment, so /a;x/b is "
                                             "matched as /a/b), got \"/login;jsessionid\"");
    const std::string dots =
        "must not contain a . or .. segment (tollgate refuses request paths with dot segments "
        "with 400), got ";
    CHECK(route("/a/./b") == at + dots + "\"/a/./b\"");
    CHECK(route("/a/..") == at + dots + "\"/a/..\"");
    CHECK(route("/.") == at + dots + "\"/.\"");
    CHECK(route("/log%69n") == at + "must not percent-encode \"i\" (%69): tollgate refuses request "
                                    "paths with an encoded letter, digit, -, . or _ with 400 and "
                                    "decodes ~, so write the character itself, got \"/log%69n\"");
    CHECK(route("/%7euser").find("must not percent-encode \"~\" (%7e)") != std::string::npos);
    CHECK(route("/a%2") == at + "has a % that is not followed by two hex digits (tollgate refuses "
                                "such request paths with 400), got \"/a%2\"");
    CHECK(route("/a%zz/b").find("has a % that is not followed by two hex digits") !=
          std::string::npos);

    const std::string ip_at = "conf/x.yaml:2: keying.ip_paths[0]: ";
    CHECK(ip_path("//health") == ip_at +
                                     "must not contain // (request paths are matched with empty "
                                     "segments removed, so //a/b is matched as /a/b), got "
                                     "\"//health\"");
    CHECK(ip_path("/health;x") != "");
    CHECK(ip_path("/a/../*") == ip_at + dots + "\"/a/../*\"");
    CHECK(ip_path("/registry/.") == ip_at + dots + "\"/registry/.\"");
    CHECK(ip_path("/st%61tus/*").find("must not percent-encode \"a\" (%61)") != std::string::npos);

    // An encoded slash is matched as /: write / itself.
    CHECK(route("/files/a%2fb") == at + "must not contain %2F: request paths are matched with an "
                                        "encoded / read as / (as a backend that decodes it routes "
                                        "them), so write / itself, got \"/files/a%2fb\"");

    // What can match still loads: names starting with dots, an open last
    // segment before *, and other encoded reserved characters (kept as sent).
    config ok = parse(
        "keying:\n  ip_paths: [/.well-known/*, \"/files/.*\", \"/a/..*\", /x/]\n"
        "routes:\n  - {name: a, path_prefix: /.well-known}\n"
        "  - {name: b, path_prefix: \"/files/a%3Ab\"}\n  - {name: c, path_prefix: /}\n"
        "  - {name: d, path_prefix: /v1/}\n");
    CHECK(ok.keying.ip_paths ==
          std::vector<std::string>{"/.well-known/*", "/files/.*", "/a/..*", "/x/"});
    CHECK(ok.routes[1].path_prefix == "/files/a%3Ab");
}

TEST_CASE("config: upstream.servers must not be empty", "[config][loader]") {
    CHECK(error_of("upstream:\n  servers: []\n") ==
          "conf/x.yaml:2: upstream.servers: must list at least one http:// or https:// URL");
}

TEST_CASE("config: burst only for gcra and token_bucket", "[config][loader]") {
    const std::string message =
        "burst applies only to the gcra and token_bucket algorithms (set it to 0 or remove it)";
    CHECK(error_of("rate_limit:\n  algorithm: fixed_window\n  burst: 5\n") ==
          "conf/x.yaml:3: rate_limit.burst: " + message);
    // Order in the file does not matter.
    CHECK(error_of("rate_limit:\n  burst: 5\n  algorithm: sliding_window\n") ==
          "conf/x.yaml:2: rate_limit.burst: " + message);
    CHECK(parse("rate_limit: {algorithm: fixed_window, burst: 0}").rate_limit.burst == 0);
    CHECK(parse("rate_limit: {algorithm: token_bucket, burst: 9}").rate_limit.burst == 9);
    CHECK(error_of("rate_limit:\n  algorithm: fixed_window\n  overrides:\n"
                   "    - {key: \"org:a\", limit: 5, burst: 2}\n") ==
          "conf/x.yaml:4: rate_limit.overrides[0].burst: " + message);
    // A route's own algorithm decides; otherwise the global one.
    CHECK(error_of("routes:\n  - name: a\n    rate_limit: {algorithm: fixed_window, burst: 3}\n") ==
          "conf/x.yaml:3: routes[0].rate_limit.burst: " + message);
    CHECK(error_of("rate_limit: {algorithm: sliding_window}\nroutes:\n  - name: a\n"
                   "    rate_limit: {burst: 3}\n") ==
          "conf/x.yaml:4: routes[0].rate_limit.burst: " + message);
    CHECK(parse("rate_limit: {algorithm: sliding_window}\nroutes:\n  - name: a\n"
                "    rate_limit: {algorithm: gcra, burst: 3}\n")
              .routes[0]
              .rate_limit->burst == std::optional<std::uint64_t>{3});
}

TEST_CASE("config: overrides: keys and required fields", "[config][loader]") {
    CHECK(error_of("rate_limit:\n  overrides:\n    - {key: acme, limit: 5}\n") ==
          "conf/x.yaml:3: rate_limit.overrides[0].key: must be a rate key starting with org:, "
          "tok: or ip:, got \"acme\"");
    CHECK(error_of("rate_limit:\n  overrides:\n    - {limit: 5}\n") ==
          "conf/x.yaml:3: rate_limit.overrides[0].key: is required (e.g. key: \"org:acme\")");
    CHECK(error_of("rate_limit:\n  overrides:\n    - {key: \"org:a\"}\n") ==
          "conf/x.yaml:3: rate_limit.overrides[0].limit: is required");
    // Duplicates are found after canonicalisation.
    CHECK(error_of("rate_limit:\n  overrides:\n    - {key: \"ip:10.0.0.1\", limit: 5}\n"
                   "    - {key: \"ip:::ffff:10.0.0.1\", limit: 6}\n") ==
          "conf/x.yaml:4: rate_limit.overrides[1].key: duplicate override for \"ip:10.0.0.1\" "
          "(first in rate_limit.overrides[0] on line 3)");
}

// ---- TLS, WebSocket tunnels, https upstreams -----------------------------------

TEST_CASE("config: tls, websocket and upgrade defaults", "[config][loader][tls]") {
    config d;
    CHECK_FALSE(d.tls.listen.has_value());
    CHECK(d.tls.cert.empty());
    CHECK(d.tls.key.empty());
    CHECK(d.tls.min_version == "1.2");
    CHECK(d.tls.alpn == std::vector<std::string>{"http/1.1"});
    CHECK(d.websocket.max_per_key == 64);
    CHECK(d.websocket.max_tunnels == 4096);
    CHECK(d.client.tunnel_idle_timeout == milliseconds{3600000});
    CHECK(d.upstream.ca_file.empty());
    CHECK_FALSE(d.upstream.insecure_skip_verify);
    CHECK(route_config{}.upgrade == std::vector<std::string>{"websocket"});
    // A file that does not mention them gets the same, and so does a route.
    config c = parse("routes:\n  - name: a\n");
    check_same(parse("{}"), d);
    REQUIRE(c.routes.size() == 1);
    CHECK(c.routes[0].upgrade == std::vector<std::string>{"websocket"});
    // Sections with every key commented out.
    check_same(parse("tls:\n#  listen: 0.0.0.0:8443\nwebsocket:\n"), d);
}

TEST_CASE("config: tls keys are read", "[config][loader][tls]") {
    pem_files files;
    config c =
        parse(files.tls_yaml("\"[::]:8443\"") + "  min_version: \"1.3\"\n  alpn: [http/1.1]\n");
    REQUIRE(c.tls.listen.has_value());
    CHECK(c.tls.listen->host == "::");
    CHECK(c.tls.listen->port == 8443);
    CHECK(c.tls.cert == files.cert);
    CHECK(c.tls.key == files.key);
    CHECK(c.tls.min_version == "1.3");
    CHECK(c.tls.alpn == std::vector<std::string>{"http/1.1"});
    // An unquoted 1.2 is the text "1.2", not a number.
    CHECK(parse("tls: {min_version: 1.2}\n").tls.min_version == "1.2");
    // "" means unset (render_config writes it so).
    CHECK_FALSE(parse("tls: {listen: \"\", cert: \"\", key: \"\"}\n").tls.listen.has_value());
}

TEST_CASE("config: tls.listen, tls.cert and tls.key go together", "[config][loader][tls]") {
    pem_files files;
    const std::string cert = "  cert: \"" + files.cert + "\"\n";
    const std::string key = "  key: \"" + files.key + "\"\n";
    // The missing key is reported at the tls: line, where it belongs.
    CHECK(error_of("threads: 1\ntls:\n  listen: 0.0.0.0:8443\n") ==
          "conf/x.yaml:2: tls.cert: is required when tls.listen is set (the PEM certificate "
          "chain file)\n"
          "conf/x.yaml:2: tls.key: is required when tls.listen is set (the PEM private key file)");
    CHECK(error_of("tls:\n  listen: 0.0.0.0:8443\n" + cert) ==
          "conf/x.yaml:1: tls.key: is required when tls.listen is set (the PEM private key file)");
    CHECK(error_of("tls:\n  listen: 0.0.0.0:8443\n" + key) ==
          "conf/x.yaml:1: tls.cert: is required when tls.listen is set (the PEM certificate "
          "chain file)");
    // A certificate or key without a listener: the operator thinks TLS is on.
    CHECK(error_of("tls:\n" + cert + key) ==
          "conf/x.yaml:2: tls.cert: tls.listen is not set, so nothing would use this file (set "
          "tls.listen or remove tls.cert)\n"
          "conf/x.yaml:3: tls.key: tls.listen is not set, so nothing would use this file (set "
          "tls.listen or remove tls.key)");
    CHECK(error_of("tls:\n  min_version: \"1.3\"\n" + key) ==
          "conf/x.yaml:3: tls.key: tls.listen is not set, so nothing would use this file (set "
          "tls.listen or remove tls.key)");
    // Reported together with unrelated errors...
    CHECK(error_of("rate_limit: {limit: ten}\ntls:\n  listen: 0.0.0.0:8443\n" + cert) ==
          "conf/x.yaml:1: rate_limit.limit: must be a positive integer, got \"ten\"\n"
          "conf/x.yaml:2: tls.key: is required when tls.listen is set (the PEM private key file)");
    // ...but not as a consequence of a tls key that is itself wrong.
    CHECK(error_of("tls:\n  listen: localhost:8443\n" + cert + key) ==
          "conf/x.yaml:2: tls.listen: must use an IP address, not a host name, e.g. "
          "127.0.0.1:8080, got \"localhost:8443\"");
    CHECK(error_of("tls:\n  lisen: 0.0.0.0:8443\n" + cert + key) ==
          "conf/x.yaml:2: tls.lisen: unknown key (did you mean \"listen\"?)");
    // The layers combine: the file names the files, the environment the listener.
    config c = parse("tls:\n" + cert + key, env_of({{"TOLLGATE_TLS_LISTEN", "0.0.0.0:8443"}}));
    REQUIRE(c.tls.listen.has_value());
    CHECK(c.tls.listen->port == 8443);
    CHECK(error_from([] {
              load_defaults(env_of({{"TOLLGATE_TLS_LISTEN", "0.0.0.0:8443"}}));
          }) ==
          "TOLLGATE_TLS_LISTEN: tls.cert: is required when tls.listen is set (the PEM "
          "certificate chain file)\n"
          "TOLLGATE_TLS_LISTEN: tls.key: is required when tls.listen is set (the PEM private "
          "key file)");
    CHECK(error_from([&] {
              load_defaults(env_of({{"TOLLGATE_TLS_CERT", files.cert}}));
          }) ==
          "TOLLGATE_TLS_CERT: tls.cert: tls.listen is not set, so nothing would use this file "
          "(set tls.listen or remove tls.cert)");
}

TEST_CASE("config: tls files must be readable", "[config][loader][tls]") {
    pem_files files;
    const std::string missing = (files.dir / "missing.pem").string();
    CHECK(error_of("tls:\n  listen: 0.0.0.0:8443\n  cert: \"" + missing + "\"\n  key: \"" +
                   files.key + "\"\n") ==
          "conf/x.yaml:3: tls.cert: cannot read \"" + missing + "\": No such file or directory");
    CHECK(error_of("tls:\n  listen: 0.0.0.0:8443\n  cert: \"" + files.cert + "\"\n  key: \"" +
                   files.dir.string() + "\"\n") ==
          "conf/x.yaml:4: tls.key: cannot read \"" + files.dir.string() + "\": Is a directory");
    CHECK(error_of("upstream:\n  ca_file: \"" + missing + "\"\n") ==
          "conf/x.yaml:2: upstream.ca_file: cannot read \"" + missing +
              "\": No such file or directory");
    CHECK(error_from([&] {
              load_defaults(env_of({{"TOLLGATE_UPSTREAM_CA_FILE", missing}}));
          }) ==
          "TOLLGATE_UPSTREAM_CA_FILE: cannot read \"" + missing + "\": No such file or directory");
    // Relative paths are kept as written and resolved against the working
    // directory (not the config file's directory), where they are opened later.
    std::string relative = fs::relative(files.cert).string();
    REQUIRE(fs::path(relative).is_relative());
    CHECK(parse("upstream: {ca_file: \"" + relative + "\"}\n").upstream.ca_file == relative);
    std::string cwd = fs::current_path().string();
    CHECK(error_of("upstream: {ca_file: no-such-dir/ca.pem}\n") ==
          "conf/x.yaml:1: upstream.ca_file: cannot read \"no-such-dir/ca.pem\" (relative to the "
          "working directory " +
              quote_value(cwd) + "): No such file or directory");
}

TEST_CASE("config: tls value rejections", "[config][loader][tls]") {
    CHECK(error_of("tls:\n  min_version: \"1.1\"\n") ==
          "conf/x.yaml:2: tls.min_version: must be \"1.2\" or \"1.3\" (TLS 1.0 and 1.1 are "
          "deprecated, RFC 8996), got \"1.1\"");
    CHECK(error_of("tls:\n  min_version: TLSv1.3\n") ==
          "conf/x.yaml:2: tls.min_version: must be \"1.2\" or \"1.3\", got \"TLSv1.3\"");
    CHECK(error_of("tls: {min_version: 1.30}\n") ==
          "conf/x.yaml:1: tls.min_version: must be \"1.2\" or \"1.3\", got \"1.30\"");
    CHECK(error_of("tls:\n  alpn: [h2, http/1.1]\n") ==
          "conf/x.yaml:2: tls.alpn[0]: must be \"http/1.1\" (tollgate speaks HTTP/1.1 only), "
          "got \"h2\"");
    CHECK(error_of("tls:\n  alpn: [HTTP/1.1]\n") ==
          "conf/x.yaml:2: tls.alpn[0]: must be \"http/1.1\" (tollgate speaks HTTP/1.1 only), "
          "got \"HTTP/1.1\"");
    CHECK(error_of("tls:\n  alpn: []\n") ==
          "conf/x.yaml:2: tls.alpn: must list \"http/1.1\" (tollgate speaks HTTP/1.1 only)");
    CHECK(error_of("tls:\n  alpn: http/1.1\n") ==
          "conf/x.yaml:2: tls.alpn: must be a list like [http/1.1], got \"http/1.1\"");
    CHECK(error_of("tls:\n  listen: 8443\n") ==
          "conf/x.yaml:2: tls.listen: must be address:port, e.g. 0.0.0.0:8080 or [::1]:8080, got "
          "\"8443\"");
    CHECK(error_of("tls:\n  ciphers: HIGH\n") ==
          "conf/x.yaml:2: tls.ciphers: unknown key; expected one of: listen, cert, key, "
          "min_version, alpn");
    CHECK(error_of("tls:\n  crt: a.pem\n") ==
          "conf/x.yaml:2: tls.crt: unknown key (did you mean \"cert\"?)");
    CHECK(error_of("tls: on\n") == "conf/x.yaml:1: tls: must be a mapping of keys, got \"on\"");
    CHECK(error_of("tls:\n  cert: [a.pem]\n") ==
          "conf/x.yaml:2: tls.cert: must be a file path, got a list");
    CHECK(error_of("min_version: \"1.3\"\n") ==
          "conf/x.yaml:1: min_version: unknown key here (it belongs at tls.min_version)");
}

TEST_CASE("config: the TLS listener needs a port of its own", "[config][loader][tls]") {
    pem_files files;
    CHECK(error_of(files.tls_yaml("0.0.0.0:8080")) ==
          "conf/x.yaml:2: tls.listen: port 8080 is also used by listen (0.0.0.0:8080)");
    CHECK(error_of(files.tls_yaml("127.0.0.1:9090")) ==
          "conf/x.yaml:2: tls.listen: port 9090 is also used by admin.listen (127.0.0.1:9090)");
    // The later layer is blamed.
    CHECK(error_of(files.tls_yaml(), env_of({{"TOLLGATE_LISTEN", "0.0.0.0:8443"}})) ==
          "TOLLGATE_LISTEN: listen: port 8443 is also used by tls.listen (0.0.0.0:8443)");
    CHECK(parse(files.tls_yaml("127.0.0.1:0") + "listen: 127.0.0.1:0\n").tls.listen->port == 0);
}

TEST_CASE("config: upstream TLS settings", "[config][loader][tls]") {
    pem_files files;
    config c = parse(
        "upstream:\n  servers: [https://api.example.com, \"https://[::1]:8443\"]\n"
        "  ca_file: \"" +
        files.ca + "\"\n");
    REQUIRE(c.upstream.servers.size() == 2);
    CHECK(c.upstream.servers[0].scheme == "https");
    CHECK(c.upstream.servers[0].port == 443);
    CHECK(c.upstream.servers[1].host == "::1");
    CHECK(c.upstream.servers[1].port == 8443);
    CHECK(c.upstream.ca_file == files.ca);
    CHECK_FALSE(c.upstream.insecure_skip_verify);
    CHECK(parse("upstream: {insecure_skip_verify: true}\n").upstream.insecure_skip_verify);
    CHECK(error_of("upstream: {insecure_skip_verify: yes}\n") ==
          "conf/x.yaml:1: upstream.insecure_skip_verify: must be true or false, got \"yes\"");
    // Both at once: the operator believes the CA file protects them.
    CHECK(error_of("upstream:\n  ca_file: \"" + files.ca + "\"\n  insecure_skip_verify: true\n") ==
          "conf/x.yaml:3: upstream.insecure_skip_verify: is true, so upstream.ca_file is never "
          "used (remove one of them)");
    CHECK(error_of("upstream:\n  insecure_skip_verify: true\n",
                   env_of({{"TOLLGATE_UPSTREAM_CA_FILE", files.ca}})) ==
          "conf/x.yaml:2: upstream.insecure_skip_verify: is true, so upstream.ca_file is never "
          "used (remove one of them)");
    CHECK(
        error_of("upstream:\n  ca_path: /etc/ssl/certs\n") ==
        "conf/x.yaml:2: upstream.ca_path: unknown key; expected one of: servers, connect_timeout, "
        "response_timeout, idle_timeout, max_connections, ca_file, insecure_skip_verify");
}

TEST_CASE("config: websocket limits and tunnel timeout", "[config][loader][websocket]") {
    config c = parse(
        "websocket:\n  max_per_key: 0\n  max_tunnels: 1\n"
        "client: {tunnel_idle_timeout: 90s}\n");
    CHECK(c.websocket.max_per_key == 0);
    CHECK(c.websocket.max_tunnels == 1);
    CHECK(c.client.tunnel_idle_timeout == milliseconds{90000});
    CHECK(error_of("websocket:\n  max_tunnels: 0\n") ==
          "conf/x.yaml:2: websocket.max_tunnels: must be a positive integer, got \"0\"");
    CHECK(error_of("websocket:\n  max_per_key: -1\n") ==
          "conf/x.yaml:2: websocket.max_per_key: must be a non-negative integer, got \"-1\"");
    CHECK(error_of("websocket:\n  max_per_ip: 5\n") ==
          "conf/x.yaml:2: websocket.max_per_ip: unknown key; expected one of: max_per_key, "
          "max_tunnels");
    CHECK(error_of("websocket:\n  tunnel_idle_timeout: 5m\n") ==
          "conf/x.yaml:2: websocket.tunnel_idle_timeout: unknown key here (it belongs at "
          "client.tunnel_idle_timeout)");
    CHECK(error_of("client:\n  tunnel_idle_timeout: 0s\n") ==
          "conf/x.yaml:2: client.tunnel_idle_timeout: must be greater than 0, got \"0s\"");
    CHECK(error_of("websocket: [64]\n") ==
          "conf/x.yaml:1: websocket: must be a mapping of keys, got a list");
}

TEST_CASE("config: routes[].upgrade", "[config][loader][websocket]") {
    config c = parse(
        "routes:\n  - {name: a, path_prefix: /a, upgrade: [WebSocket, My_Proto]}\n"
        "  - {name: b, path_prefix: /b, upgrade: []}\n");
    REQUIRE(c.routes.size() == 2);
    CHECK(c.routes[0].upgrade == std::vector<std::string>{"websocket", "my_proto"});
    CHECK(c.routes[1].upgrade.empty());
    CHECK(error_of("routes:\n  - name: a\n    upgrade: [websocket, h2c]\n") ==
          "conf/x.yaml:3: routes[0].upgrade[1]: \"h2c\" is an upgrade to HTTP/2, which tollgate "
          "does not speak (it proxies HTTP/1.1 only)");
    CHECK(error_of("routes:\n  - name: a\n    upgrade: [H2C]\n") ==
          "conf/x.yaml:3: routes[0].upgrade[0]: \"h2c\" is an upgrade to HTTP/2, which tollgate "
          "does not speak (it proxies HTTP/1.1 only)");
    CHECK(error_of("routes:\n  - name: a\n    upgrade: [\"web socket\"]\n") ==
          "conf/x.yaml:3: routes[0].upgrade[0]: must be a protocol name like websocket (RFC 9110 "
          "token characters, no /version), got \"web socket\"");
    CHECK_FALSE(error_of("routes:\n  - name: a\n    upgrade: [HTTP/2.0]\n").empty());
    CHECK_FALSE(error_of("routes:\n  - name: a\n    upgrade: [\"\"]\n").empty());
    CHECK_FALSE(error_of("routes:\n  - name: a\n    upgrade: [\"ws\\u00e9\"]\n").empty());
    CHECK(error_of("routes:\n  - name: a\n    upgrade:\n      - websocket\n      - WEBSOCKET\n") ==
          "conf/x.yaml:5: routes[0].upgrade[1]: duplicate protocol \"websocket\" (also "
          "upgrade[0])");
    CHECK(error_of("routes:\n  - name: a\n    upgrade:\n") ==
          "conf/x.yaml:3: routes[0].upgrade: must be a list like [websocket], got nothing (write "
          "[] for an empty list)");
    CHECK(error_of("routes:\n  - name: a\n    upgrade: websocket\n") ==
          "conf/x.yaml:3: routes[0].upgrade: must be a list like [websocket], got "
          "\"websocket\"");
}

TEST_CASE("config: https upstreams in every place an upstream is named", "[config][loader]") {
    config c =
        parse("routes:\n  - {name: a, upstream: [\"HTTPS://Api.Example.com\"]}\n",
              env_of({{"TOLLGATE_UPSTREAM", "https://a, http://b, https://[fd00::1]:9443"}}));
    REQUIRE(c.upstream.servers.size() == 3);
    CHECK(c.upstream.servers[0].scheme == "https");
    CHECK(c.upstream.servers[0].port == 443);
    CHECK(c.upstream.servers[1].scheme == "http");
    CHECK(c.upstream.servers[1].port == 80);
    CHECK(c.upstream.servers[2].host == "fd00::1");
    CHECK(c.upstream.servers[2].port == 9443);
    REQUIRE(c.routes[0].upstream.size() == 1);
    CHECK(c.routes[0].upstream[0].scheme == "https");
    CHECK(c.routes[0].upstream[0].host == "Api.Example.com");
    cli_options o;
    o.overrides = {{"--upstream", "https://u"}};
    config f = load_effective_config(o, no_env());
    REQUIRE(f.upstream.servers.size() == 1);
    CHECK(f.upstream.servers[0].scheme == "https");
    CHECK(f.upstream.servers[0].port == 443);
}

// ---- environment ---------------------------------------------------------------

TEST_CASE("config: environment overrides the file", "[config][env]") {
    const char* yaml =
        "listen: 0.0.0.0:1111\nrate_limit: {limit: 5, window: 1s}\nthreads: 2\n"
        "log: {level: warn}\n";
    config c = parse(yaml, env_of({{"RATE_LIMIT", "50"},
                                   {"RATE_LIMIT_WINDOW", "500ms"},
                                   {"TOLLGATE_LISTEN", "[::]:2222"},
                                   {"TOLLGATE_ADMIN_LISTEN", "127.0.0.1:3333"},
                                   {"TOLLGATE_UPSTREAM", "http://a:1, http://b"},
                                   {"TOLLGATE_THREADS", "8"},
                                   {"TOLLGATE_CONCURRENCY", "0"},
                                   {"TOLLGATE_TOKEN_SECRET", "k"},
                                   {"TOLLGATE_LOG_LEVEL", "error"}}));
    CHECK(c.rate_limit.limit == 50);
    CHECK(c.rate_limit.window == milliseconds{500});
    CHECK(c.listen.host == "::");
    CHECK(c.listen.port == 2222);
    CHECK(c.admin.listen.port == 3333);
    REQUIRE(c.upstream.servers.size() == 2);
    CHECK(c.upstream.servers[1].host == "b");
    CHECK(c.upstream.servers[1].port == 80);
    CHECK(c.threads == 8);
    CHECK(c.concurrency.capacity == 0);
    CHECK(c.keying.token_secret == "k");
    CHECK(c.log.level == log_level::error);
    // Keys the environment did not touch keep the file's value.
    CHECK(parse(yaml, env_of({{"RATE_LIMIT", "50"}})).rate_limit.window == milliseconds{1000});
    CHECK(parse(yaml, env_of({{"RATE_LIMIT", "50"}})).threads == 2);
}

TEST_CASE("config: unknown TOLLGATE_ variables are warned about, with a hint", "[config][env]") {
    CHECK(unknown_env_warnings({"PATH", "HOME", "RATE_LIMIT", "TOLLGATE_LISTEN", "TOLLGATE_CONFIG",
                                "TOLLGATE_TLS_KEY", "TOLLGATE_UPSTREAM_CA_FILE"})
              .empty());
    CHECK(unknown_env_warnings(
              {"TOLLGATE_RATE_LIMIT", "TOLLGATE_LSTEN", "TOLLGATE_WIDGETS", "TOLLGATE_LSTEN"}) ==
          std::vector<std::string>{
              "warning: TOLLGATE_LSTEN is set but tollgate does not read it (did you mean "
              "TOLLGATE_LISTEN?)",
              "warning: TOLLGATE_RATE_LIMIT is set but tollgate does not read it (did you mean "
              "RATE_LIMIT?)",
          });
    // Not a near miss of a name tollgate reads: another tool's, not a typo.
    CHECK(unknown_env_warnings({"TOLLGATE_WIDGETS", "TOLLGATE_PRESET", "TOLLGATE_BIN"}).empty());
    // The two names without the prefix are the ones set most: their near
    // misses are said too; other RATE names are someone else's.
    CHECK(unknown_env_warnings({"RATE_LIMT", "RATE_LIMIT_WINDOWS", "RATE_CARD", "RATELIMIT_URL"}) ==
          std::vector<std::string>{
              "warning: RATE_LIMIT_WINDOWS is set but tollgate does not read it (did you mean "
              "RATE_LIMIT_WINDOW?)",
              "warning: RATE_LIMT is set but tollgate does not read it (did you mean "
              "RATE_LIMIT?)",
          });
    CHECK(unknown_env_warnings({"TOLLGATE_RATE_LIMIT_WINDOW", "TOLLGATE_TOKEN_SECRT"}) ==
          std::vector<std::string>{
              "warning: TOLLGATE_RATE_LIMIT_WINDOW is set but tollgate does not read it (did you "
              "mean RATE_LIMIT_WINDOW?)",
              "warning: TOLLGATE_TOKEN_SECRT is set but tollgate does not read it (did you mean "
              "TOLLGATE_TOKEN_SECRET?)",
          });
}

TEST_CASE("config: environment sets the TLS listener and files", "[config][env][tls]") {
    pem_files file_layer;
    pem_files env_layer;
    const std::string yaml =
        file_layer.tls_yaml("0.0.0.0:8443") + "upstream:\n  ca_file: \"" + file_layer.ca + "\"\n";
    config c = parse(yaml, env_of({{"TOLLGATE_TLS_LISTEN", "[::1]:9443"},
                                   {"TOLLGATE_TLS_CERT", env_layer.cert},
                                   {"TOLLGATE_TLS_KEY", env_layer.key},
                                   {"TOLLGATE_UPSTREAM_CA_FILE", env_layer.ca}}));
    REQUIRE(c.tls.listen.has_value());
    CHECK(c.tls.listen->host == "::1");
    CHECK(c.tls.listen->port == 9443);
    CHECK(c.tls.cert == env_layer.cert);
    CHECK(c.tls.key == env_layer.key);
    CHECK(c.upstream.ca_file == env_layer.ca);
    // Untouched keys keep the file's value.
    config only_key = parse(yaml, env_of({{"TOLLGATE_TLS_KEY", env_layer.key}}));
    CHECK(only_key.tls.cert == file_layer.cert);
    CHECK(only_key.tls.key == env_layer.key);
    CHECK(only_key.tls.listen->port == 8443);
    // The environment alone can turn TLS on.
    config env_only = load_defaults(env_of({{"TOLLGATE_TLS_LISTEN", "0.0.0.0:8443"},
                                            {"TOLLGATE_TLS_CERT", env_layer.cert},
                                            {"TOLLGATE_TLS_KEY", env_layer.key}}));
    CHECK(env_only.tls.listen.has_value());
    CHECK(env_only.tls.key == env_layer.key);
}

TEST_CASE("config: invalid TLS environment values name the variable", "[config][env][tls]") {
    pem_files files;
    auto env_error = [](std::map<std::string, std::string> vars) {
        return error_from([&] { load_defaults(env_of(std::move(vars))); });
    };
    CHECK(env_error({{"TOLLGATE_TLS_LISTEN", "localhost:443"}}) ==
          "TOLLGATE_TLS_LISTEN: must use an IP address, not a host name, e.g. 127.0.0.1:8080, "
          "got \"localhost:443\"");
    CHECK(env_error({{"TOLLGATE_TLS_LISTEN", "0.0.0.0:8443"},
                     {"TOLLGATE_TLS_CERT", "/nonexistent/cert.pem"},
                     {"TOLLGATE_TLS_KEY", files.key}}) ==
          "TOLLGATE_TLS_CERT: cannot read \"/nonexistent/cert.pem\": No such file or directory");
    CHECK(env_error({{"TOLLGATE_TLS_LISTEN", "0.0.0.0:8443"},
                     {"TOLLGATE_TLS_CERT", files.cert},
                     {"TOLLGATE_TLS_KEY", "/nonexistent/key.pem"}}) ==
          "TOLLGATE_TLS_KEY: cannot read \"/nonexistent/key.pem\": No such file or directory");
    for (const char* name : {"TOLLGATE_TLS_LISTEN", "TOLLGATE_TLS_CERT", "TOLLGATE_TLS_KEY",
                             "TOLLGATE_UPSTREAM_CA_FILE"}) {
        CHECK(env_error({{name, ""}}) ==
              std::string(name) +
                  ": is set but empty (unset it to keep the file's value or the default)");
    }
}

TEST_CASE("config: TLS flags override the environment", "[config][cli][tls]") {
    pem_files env_layer;
    pem_files flag_layer;
    cli_options o;
    o.overrides = {{"--tls-listen", "127.0.0.1:7443"},
                   {"--tls-cert", flag_layer.cert},
                   {"--tls-key", flag_layer.key},
                   {"--upstream-ca-file", flag_layer.ca}};
    config c = load_effective_config(o, env_of({{"TOLLGATE_TLS_LISTEN", "0.0.0.0:8443"},
                                                {"TOLLGATE_TLS_CERT", env_layer.cert},
                                                {"TOLLGATE_TLS_KEY", env_layer.key},
                                                {"TOLLGATE_UPSTREAM_CA_FILE", env_layer.ca}}));
    REQUIRE(c.tls.listen.has_value());
    CHECK(c.tls.listen->port == 7443);
    CHECK(c.tls.cert == flag_layer.cert);
    CHECK(c.tls.key == flag_layer.key);
    CHECK(c.upstream.ca_file == flag_layer.ca);
    cli_options missing;
    missing.overrides = {{"--tls-listen", "127.0.0.1:7443"}, {"--tls-cert", flag_layer.cert}};
    CHECK(error_from([&] { load_effective_config(missing, no_env()); }) ==
          "--tls-listen: tls.key: is required when tls.listen is set (the PEM private key file)");
    const char* argv[] = {"tollgate", "--tls-cert=a.pem", "--tls-key", "b.pem"};
    cli_options parsed = parse_cli(4, argv);
    REQUIRE(parsed.overrides.size() == 2);
    CHECK(parsed.overrides[0] == std::pair<std::string, std::string>{"--tls-cert", "a.pem"});
}

TEST_CASE("config: TOLLGATE_REDIS_URL implies the redis store", "[config][env]") {
    config c = load_defaults(env_of({{"TOLLGATE_REDIS_URL", "redis://cache:6380"}}));
    CHECK(c.store.type == store_kind::redis);
    CHECK(c.store.redis.url == "redis://cache:6380");
    CHECK(load_defaults(no_env()).store.type == store_kind::memory);
}

// Each request would come back in, until the slots or the descriptors run out.
TEST_CASE("config: an upstream that is tollgate's own listener is refused", "[config][loader]") {
    const std::string loop = "every request would be forwarded back to tollgate";
    CHECK(error_of("listen: 127.0.0.1:8080\nupstream:\n  servers: [http://127.0.0.1:8080]\n") ==
          "conf/x.yaml:3: upstream.servers[0]: http://127.0.0.1:8080 is tollgate's own listen "
          "(127.0.0.1:8080): " +
              loop);
    // [::] takes every address localhost may have (IPv4 and IPv6).
    CHECK(error_of("listen: \"[::]:8080\"\nupstream:\n  servers: [http://10.0.0.1:9000, "
                   "http://localhost:8080]\n") ==
          "conf/x.yaml:3: upstream.servers[1]: http://localhost:8080 is tollgate's own listen "
          "([::]:8080): " +
              loop);
    // localhost may be 127.0.0.1, which [::1] does not take: not refused.
    CHECK(parse("listen: \"[::1]:8080\"\nupstream: {servers: [http://localhost:8080]}\n")
              .upstream.servers.size() == 1);
    CHECK(error_of("listen: \"[::]:8080\"\nroutes:\n  - {name: a, path_prefix: /a, upstream: "
                   "[\"http://127.0.0.3:8080\"]}\n") ==
          "conf/x.yaml:3: routes[0].upstream[0]: http://127.0.0.3:8080 is tollgate's own listen "
          "([::]:8080): " +
              loop);
    // Another address on the same port is another server.
    CHECK(parse("listen: 127.0.0.1:8080\nupstream: {servers: [http://127.0.0.2:8080]}\n")
              .upstream.servers.size() == 1);
    CHECK(parse("upstream: {servers: [\"http://[::1]:8080\", http://10.0.0.1:8080]}\n")
              .upstream.servers.size() == 2);
}

TEST_CASE("config: a reload's upstreams must not point at the listeners that keep running",
          "[config][loader]") {
    // The file moves listen (applied only on restart) and points the
    // upstream at the address tollgate still listens on.
    pem_files files;  // a private directory to write the config into
    const std::string path = (files.dir / "reload.yaml").string();
    std::ofstream(path)
        << "listen: 127.0.0.1:19622\nupstream:\n  servers: [http://127.0.0.1:19620]\n";
    CHECK(load_config(path, no_env()).upstream.servers.size() == 1);  // at startup: no loop
    running_listeners running{{"127.0.0.1", 19620}, std::nullopt};
    CHECK(error_from([&] { load_config(path, no_env(), {}, &running); }) ==
          path +
              ":3: upstream.servers[0]: http://127.0.0.1:19620 is tollgate's own listen as it runs "
              "(127.0.0.1:19620): every request would be forwarded back to tollgate");
    // The TLS listener too, and a wildcard listener takes every local address.
    running_listeners with_tls;
    with_tls.listen.port = 19621;  // on 0.0.0.0
    with_tls.tls_listen.emplace().port = 19620;
    CHECK(error_from([&] { load_config(path, no_env(), {}, &with_tls); }) ==
          path +
              ":3: upstream.servers[0]: http://127.0.0.1:19620 is tollgate's own tls.listen "
              "as it runs (0.0.0.0:19620): every request would be forwarded back to tollgate");
    running_listeners elsewhere{{"127.0.0.1", 19623}, std::nullopt};
    CHECK(load_config(path, no_env(), {}, &elsewhere).upstream.servers.size() == 1);
}

TEST_CASE("config: problems found after loading are located like loading errors",
          "[config][loader]") {
    // An upstream that does not resolve, a certificate that is no PEM: the
    // message starts with the key; located() adds where it was set.
    const config c = parse(
        "listen: 127.0.0.1:8080\nupstream:\n  servers: [http://a.invalid, http://b.invalid]\n"
        "routes:\n  - name: r\n    upstream: [http://c.invalid]\n");
    CHECK(located(c, "upstream.servers[1]: cannot resolve host") ==
          "conf/x.yaml:3: upstream.servers[1]: cannot resolve host");
    CHECK(located(c, "routes[0].upstream[0]: cannot resolve host") ==
          "conf/x.yaml:6: routes[0].upstream[0]: cannot resolve host");
    // A list written one item per line: each item's own line.
    const config block = parse(
        "upstream:\n  servers:\n    - http://a.invalid\n    - http://b.invalid\n"
        "routes:\n  - name: r\n    upstream:\n      - http://c.invalid\n      - "
        "http://d.invalid\n");
    CHECK(located(block, "upstream.servers[1]: x") == "conf/x.yaml:4: upstream.servers[1]: x");
    CHECK(located(block, "routes[0].upstream[1]: x") == "conf/x.yaml:9: routes[0].upstream[1]: x");
    // A variable that replaces the list: none of the file's lines apply.
    const config replaced =
        parse("upstream:\n  servers:\n    - http://a.invalid\n    - http://b.invalid\n",
              env_of({{"TOLLGATE_UPSTREAM", "http://x.invalid,http://y.invalid"}}));
    CHECK(located(replaced, "upstream.servers[1]: x") ==
          "TOLLGATE_UPSTREAM: upstream.servers[1]: x");
    CHECK(located(c, "listen: cannot listen on 127.0.0.1:8080: Address already in use") ==
          "conf/x.yaml:1: listen: cannot listen on 127.0.0.1:8080: Address already in use");
    // Set by a variable, or a built-in default (nowhere to point at).
    const config e = parse("threads: 1\n", env_of({{"TOLLGATE_UPSTREAM", "http://a.invalid"}}));
    CHECK(located(e, "upstream.servers[0]: cannot resolve host") ==
          "TOLLGATE_UPSTREAM: upstream.servers[0]: cannot resolve host");
    CHECK(located(e, "admin.listen: cannot listen on 127.0.0.1:9090: Address already in use") ==
          "admin.listen: cannot listen on 127.0.0.1:9090: Address already in use");
    CHECK(located(e, "the system CA store cannot be loaded") ==
          "the system CA store cannot be loaded");
    pem_files files;
    const config t = parse("threads: 1\n" + files.tls_yaml());
    CHECK(located(t, "tls.cert " + files.cert + ": holds no PEM certificate") ==
          "conf/x.yaml:4: tls.cert " + files.cert + ": holds no PEM certificate");
}

TEST_CASE("config: settings that do nothing together are warned about, not refused",
          "[config][loader]") {
    CHECK(config_warnings(parse("threads: 1\n")).empty());
    CHECK(config_warnings(parse("concurrency: {capacity: 0, queue_timeout: 5s}\n")) ==
          std::vector<std::string>{
              "warning: conf/x.yaml:1: concurrency.queue_timeout: has no effect: "
              "concurrency.capacity is 0 (no slots) and no route has a concurrency of its own"});
    // A route with slots of its own uses the queue timeout.
    CHECK(config_warnings(parse("concurrency: {capacity: 0, queue_timeout: 5s}\nroutes:\n"
                                "  - {name: a, path_prefix: /a, concurrency: 4}\n"))
              .empty());
    pem_files files;
    CHECK(config_warnings(parse("upstream:\n  ca_file: \"" + files.ca + "\"\n")) ==
          std::vector<std::string>{
              "warning: conf/x.yaml:2: upstream.ca_file: has no effect: no upstream is https://"});
    CHECK(config_warnings(
              parse("upstream:\n  ca_file: \"" + files.ca + "\"\n  servers: [https://a.example]\n"))
              .empty());
    // Redis with failure_mode open: each instance falls back to limit / instances, at least 1.
    const std::string redis = "store:\n  type: redis\n  redis: {instances: 10}\n";
    const auto low = config_warnings(parse(redis + "rate_limit:\n  limit: 5\n  overrides:\n"
                                                   "    - {key: \"org:a\", limit: 3}\n"
                                                   "    - {key: \"org:b\", limit: 2}\n"
                                                   "    - {key: \"org:c\", limit: 1}\n"
                                                   "    - {key: \"org:d\", limit: 200}\n"));
    REQUIRE(low.size() == 2);
    CHECK(low[0] ==
          "warning: conf/x.yaml:5: rate_limit.limit: 5 is less than store.redis.instances (10): "
          "while Redis is unavailable each instance allows 1 per window, 10 in all");
    CHECK(low[1].starts_with("warning: conf/x.yaml:7: rate_limit.overrides[0].limit: 3 is less"));
    CHECK(low[1].ends_with("10 in all (and 2 more overrides)"));
    CHECK(config_warnings(parse(redis + "rate_limit: {limit: 10}\n")).empty());
    CHECK(config_warnings(parse(redis + "rate_limit: {limit: 100, burst: 2}\n")) ==
          std::vector<std::string>{
              "warning: conf/x.yaml:4: rate_limit.burst: 2 is less than store.redis.instances "
              "(10): while Redis is unavailable each instance allows 1 per window, 10 in all"});
    CHECK(config_warnings(parse("store:\n  type: redis\n  redis: {instances: 10, failure_mode: "
                                "closed}\nrate_limit: {limit: 5}\n"))
              .empty());
}

TEST_CASE("config: a quoted value must close on its line", "[config][loader]") {
    // yaml-cpp takes the rest of the file into a value whose closing quote
    // is missing: here rate_limit would silently stay at its default.
    CHECK(error_of("keying:\n  token_secret: \"abc\nrate_limit:\n  limit: 5\n") ==
          "conf/x.yaml:2: keying.token_secret: the \" that opens this value is never closed (the "
          "rest of the file would be part of it)");
    CHECK(error_of("keying:\n  token_secret: 'abc\nrate_limit:\n  limit: 5\n") ==
          "conf/x.yaml:2: keying.token_secret: the ' that opens this value is never closed (the "
          "rest of the file would be part of it)");
    CHECK(error_of("keying:\n  token_secret: \"abc\n  def\"\n") ==
          "conf/x.yaml:2: keying.token_secret: the \" that opens this value is closed only on "
          "line 3; close it on its own line");
    CHECK(error_of("routes:\n  - name: \"a\n    b\"\n") ==
          "conf/x.yaml:2: routes[0].name: the \" that opens this value is closed only on line 3; "
          "close it on its own line");
    // After a tag or an anchor (the node starts there, not at the quote).
    CHECK(error_of("keying:\n  token_secret: !!str \"abc\nrate_limit:\n  limit: 5\n") ==
          "conf/x.yaml:2: keying.token_secret: the \" that opens this value is never closed (the "
          "rest of the file would be part of it)");
    CHECK(error_of("keying:\n  token_secret: &s\n    \"abc\nrate_limit:\n  limit: 5\n") ==
          "conf/x.yaml:3: keying.token_secret: the \" that opens this value is never closed (the "
          "rest of the file would be part of it)");
    // An alias is not read again (a long value and many aliases of it).
    std::string aliases = "keying:\n  token_secret: &s \"" + std::string(100000, 'x') + "\"\n";
    aliases += "log: {level: info}\nx:\n";
    for (int i = 0; i < 2000; ++i) {
        aliases += "  - *s\n";
    }
    CHECK(error_of(aliases).starts_with("conf/x.yaml:4: x: unknown key"));
    // UTF-16 (Notepad's "Unicode"): yaml-cpp reads it, positions do not map: not checked.
    std::string utf16 = "\xFF\xFE";
    for (char ch : std::string("keying:\n  token_secret: \"abc\"\nlog:\n  level: \"info\"\n")) {
        utf16 += ch;
        utf16 += '\0';
    }
    CHECK(parse(utf16).keying.token_secret == "abc");
    // After a byte order mark, and with CRLF line ends, the same.
    CHECK(error_of("\xEF\xBB\xBFkeying:\n  token_secret: \"abc\nrate_limit:\n  limit: 5\n")
              .starts_with("conf/x.yaml:2: keying.token_secret: the \" that opens this value is "
                           "never closed"));
    CHECK(parse("\xEF\xBB\xBFkeying:\r\n  token_secret: \"abc\"\r\nlog:\r\n  level: 'info'\r\n")
              .keying.token_secret == "abc");
    // Escaped quotes inside are no closing quote; quoted keys are fine.
    CHECK(parse("keying:\n  token_secret: \"a\\\"b\\\\\"\n").keying.token_secret == "a\"b\\");
    CHECK(parse("keying:\n  token_secret: 'it''s'\n").keying.token_secret == "it's");
    CHECK(parse("\"keying\":\n  'token_secret': \"x\"\n").keying.token_secret == "x");
    // The check walks each collection once: an alias to a collection it is
    // inside of, or aliases doubling at every level, end as the reader ends them.
    CHECK(error_of("a: &x [*x]\n").starts_with("conf/x.yaml:1: a: unknown key"));
    CHECK(error_of("keying: &k\n  x: *k\n").starts_with("conf/x.yaml:2: keying.x: unknown key"));
    std::string laughs = "a0: &a0 [\"x\", 'y']\n";
    for (int i = 1; i < 40; ++i) {
        laughs += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [*a" +
                  std::to_string(i - 1) + ", *a" + std::to_string(i - 1) + "]\n";
    }
    CHECK(error_of(laughs).starts_with("conf/x.yaml:1: a0: unknown key"));
}

TEST_CASE("config: a file far larger than any configuration is refused unread",
          "[config][loader]") {
    // A wrong path (here a device without end) stops at 16 MiB.
    CHECK(error_from([] { load_config(std::string("/dev/zero"), no_env()); }) ==
          "/dev/zero: is larger than 16 MiB: not a configuration file?");
}

TEST_CASE("config: an unknown key is shown quoted when it is no plain name", "[config][loader]") {
    // A line break or an escape sequence in a key must not reach the log raw.
    const std::string message = error_of("\"a\\e[31m\\nfake.yaml:1: x\": 1\n");
    CHECK(message.find('\n') == std::string::npos);
    CHECK(message.find('\x1b') == std::string::npos);
    CHECK(message.starts_with("conf/x.yaml:1: \"a\\x1b[31m\\x0afake.yaml:1: x\": unknown key"));
    CHECK(error_of("lisen: 1\n").starts_with("conf/x.yaml:1: lisen: unknown key"));
}

// Beyond these the buckets would enforce less than the headers announce.
TEST_CASE("config: token_bucket and sliding_window limits they cannot hold", "[config][loader]") {
    const std::string too_big =
        "a burst of 1000000 over a window of 24h is more than token_bucket can hold (at most "
        "213503 for this window); use algorithm gcra, which has no such bound";
    CHECK(error_of("rate_limit:\n  algorithm: token_bucket\n  limit: 1000000\n  window: 24h\n") ==
          "conf/x.yaml:3: rate_limit.limit: " + too_big);
    CHECK(error_of("rate_limit:\n  algorithm: token_bucket\n  window: 24h\n  burst: 1000000\n") ==
          "conf/x.yaml:4: rate_limit.burst: " + too_big);
    // The largest burst that fits is accepted, and gcra takes any.
    CHECK(parse("rate_limit: {algorithm: token_bucket, limit: 213503, window: 24h}")
              .rate_limit.limit == 213503);
    CHECK(parse("rate_limit: {limit: 1000000, window: 24h}").rate_limit.limit == 1000000);
    CHECK(error_of("rate_limit:\n  algorithm: token_bucket\n  window: 24h\n  overrides:\n"
                   "    - {key: \"org:a\", limit: 5, burst: 1000000}\n") ==
          "conf/x.yaml:5: rate_limit.overrides[0].burst: " + too_big);
    CHECK(error_of("routes:\n  - name: a\n    rate_limit: {algorithm: sliding_window, "
                   "limit: 4294967296}\n") ==
          "conf/x.yaml:3: routes[0].rate_limit.limit: sliding_window counts at most 4294967295 "
          "requests per window");
    // From the environment, the variable is named.
    CHECK(error_of("rate_limit: {algorithm: token_bucket}\n",
                   env_of({{"RATE_LIMIT", "1000000"}, {"RATE_LIMIT_WINDOW", "24h"}})) ==
          "RATE_LIMIT: rate_limit.limit: " + too_big);
    // The key that was set is blamed, not the default it meets.
    const std::string year =
        "a burst of 600 over a window of 8760h is more than token_bucket can hold (at most "
        "584 for this window); use algorithm gcra, which has no such bound";
    CHECK(error_of("threads: 1\nrate_limit:\n  algorithm: token_bucket\n  window: 8760h\n") ==
          "conf/x.yaml:4: rate_limit.window: " + year);
    CHECK(error_of("rate_limit: {algorithm: token_bucket}\n",
                   env_of({{"RATE_LIMIT_WINDOW", "8760h"}})) ==
          "RATE_LIMIT_WINDOW: rate_limit.window: " + year);
    CHECK(error_of("routes:\n  - name: a\n    rate_limit:\n      algorithm: token_bucket\n"
                   "      window: 8760h\n") ==
          "conf/x.yaml:5: routes[0].rate_limit.window: " + year);
    // An override inherits the window: the variable that set it is named.
    CHECK(error_of("rate_limit:\n  algorithm: token_bucket\n  limit: 500\n  overrides:\n"
                   "    - {key: \"org:a\", limit: 1000}\n",
                   env_of({{"RATE_LIMIT_WINDOW", "8760h"}})) ==
          "RATE_LIMIT_WINDOW: rate_limit.window: a burst of 1000 over a window of 8760h is more "
          "than token_bucket can hold (at most 584 for this window); use algorithm gcra, which "
          "has no such bound");
}

TEST_CASE("config: invalid environment values are errors naming the variable", "[config][env]") {
    auto env_error = [](std::string name, std::string value) {
        return error_from([&] { load_defaults(env_of({{name, value}})); });
    };
    CHECK(env_error("RATE_LIMIT", "abc") == "RATE_LIMIT: must be a positive integer, got \"abc\"");
    CHECK(env_error("RATE_LIMIT", "0") == "RATE_LIMIT: must be a positive integer, got \"0\"");
    CHECK(env_error("RATE_LIMIT_WINDOW", "60") ==
          "RATE_LIMIT_WINDOW: needs a unit (ms, s, m or h), e.g. 60s or 500ms, got \"60\"");
    CHECK(env_error("TOLLGATE_LISTEN", ":8080") ==
          "TOLLGATE_LISTEN: needs an address before the port: 0.0.0.0:PORT (all IPv4) or "
          "[::]:PORT (all IPv6), got \":8080\"");
    CHECK(env_error("TOLLGATE_UPSTREAM", "http://a,ftp://b") ==
          "TOLLGATE_UPSTREAM: item 2: only http:// and https:// upstreams are supported, got "
          "\"ftp://b\"");
    CHECK(env_error("TOLLGATE_THREADS", "1025") ==
          "TOLLGATE_THREADS: must be at most 1024, got \"1025\"");
    CHECK(env_error("TOLLGATE_CONCURRENCY", "-1") ==
          "TOLLGATE_CONCURRENCY: must be a non-negative integer, got \"-1\"");
    CHECK(env_error("TOLLGATE_REDIS_URL", "redis://:pw@h:0") ==
          "TOLLGATE_REDIS_URL: port must be 1-65535, got \"redis://:<redacted>@h:0\"");
    CHECK(env_error("TOLLGATE_LOG_LEVEL", "trace") ==
          "TOLLGATE_LOG_LEVEL: must be one of debug, info, warn, error; got \"trace\"");
    CHECK(env_error("TOLLGATE_ADMIN_LISTEN", "localhost:9090") ==
          "TOLLGATE_ADMIN_LISTEN: must use an IP address, not a host name, e.g. 127.0.0.1:8080, "
          "got \"localhost:9090\"");
}

TEST_CASE("config: an empty environment variable is an error, not a default", "[config][env]") {
    CHECK(error_from([] {
              load_defaults(env_of({{"RATE_LIMIT", ""}}));
          }) == "RATE_LIMIT: is set but empty (unset it to keep the file's value or the default)");
    CHECK(error_from([] {
              load_defaults(env_of({{"TOLLGATE_TOKEN_SECRET", ""}}));
          }) ==
          "TOLLGATE_TOKEN_SECRET: is set but empty (unset it to keep the file's value or the "
          "default)");
}

TEST_CASE("config: file and environment errors are reported together", "[config][env]") {
    CHECK(error_of("rate_limit: {limit: ten}\n", env_of({{"TOLLGATE_THREADS", "x"}})) ==
          "conf/x.yaml:1: rate_limit.limit: must be a positive integer, got \"ten\"\n"
          "TOLLGATE_THREADS: must be a non-negative integer, got \"x\"");
}

TEST_CASE("config: listen and admin.listen may not share a port", "[config][env]") {
    CHECK(error_of("listen: 0.0.0.0:9000\nadmin:\n  listen: 127.0.0.1:9000\n") ==
          "conf/x.yaml:3: admin.listen: port 9000 is also used by listen (0.0.0.0:9000)");
    CHECK(error_from([] {
              load_defaults(env_of({{"TOLLGATE_LISTEN", "127.0.0.1:9090"}}));
          }) == "TOLLGATE_LISTEN: listen: port 9090 is also used by admin.listen (127.0.0.1:9090)");
    // Different addresses of one family, or port 0, do not collide.
    CHECK(parse("listen: 127.0.0.1:9090\nadmin: {listen: 127.0.0.2:9090}\n").listen.port == 9090);
    CHECK(parse("listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\n").listen.port == 0);
    CHECK_FALSE(error_of("listen: \"[::]:9090\"\n").empty());
}

// ---- command line --------------------------------------------------------------

TEST_CASE("config: parse_cli forms", "[config][cli]") {
    const char* argv[] = {"tollgate",    "--config", "a.yaml",    "--check-config",
                          "--threads=4", "--listen", "0.0.0.0:1", "--print-config",
                          "--version",   "-h",       "--threads", "6"};
    cli_options o = parse_cli(12, argv);
    CHECK(o.config_path == std::optional<std::string>{"a.yaml"});
    CHECK(o.check_config);
    CHECK(o.print_config);
    CHECK(o.version);
    CHECK(o.help);
    REQUIRE(o.overrides.size() == 3);
    CHECK(o.overrides[0] == std::pair<std::string, std::string>{"--threads", "4"});
    CHECK(o.overrides[1] == std::pair<std::string, std::string>{"--listen", "0.0.0.0:1"});
    CHECK(o.overrides[2] == std::pair<std::string, std::string>{"--threads", "6"});

    const char* none[] = {"tollgate"};
    cli_options empty = parse_cli(1, none);
    CHECK_FALSE(empty.config_path.has_value());
    CHECK_FALSE(empty.check_config);
    CHECK(empty.overrides.empty());
}

TEST_CASE("config: parse_cli errors", "[config][cli]") {
    auto cli_error = [](std::vector<const char*> args) {
        args.insert(args.begin(), "tollgate");
        return error_from([&] { parse_cli(static_cast<int>(args.size()), args.data()); });
    };
    CHECK(cli_error({"--thread", "4"}) == "unknown option \"--thread\" (did you mean --threads?)");
    CHECK(cli_error({"--lsten", "127.0.0.1:1"}) ==
          "unknown option \"--lsten\" (did you mean --listen?)");
    CHECK(cli_error({"--frobnicate"}) == "unknown option \"--frobnicate\" (see --help)");
    CHECK(cli_error({"--threads"}) == "--threads: missing value");
    CHECK(cli_error({"--config", "--check-config"}) == "--config: missing value");
    CHECK(cli_error({"--check-config=yes"}) == "--check-config: takes no value");
    CHECK(cli_error({"conf.yaml"}) ==
          "unexpected argument \"conf.yaml\" (options start with --; see --help)");
    CHECK(cli_error({"--config", "a", "--config", "b"}) == "--config: given twice");
    CHECK(cli_error({"-c", "x"}) == "unknown option \"-c\" (see --help)");
    CHECK(cli_error({"--config="}) == "--config: has an empty value");
    CHECK(cli_error({"--token-secret", "x"}) == "unknown option \"--token-secret\" (see --help)");
}

TEST_CASE("config: flags override environment and file", "[config][cli]") {
    cli_options o;
    o.config_path = data_dir + "/full.yaml";
    o.overrides = {{"--threads", "16"},
                   {"--rate-limit", "7"},
                   {"--rate-limit-window", "2s"},
                   {"--listen", "127.0.0.1:7000"},
                   {"--admin-listen", "127.0.0.1:7001"},
                   {"--upstream", "http://u:1"},
                   {"--concurrency", "3"},
                   {"--log-level", "warn"},
                   {"--redis-url", "redis://r:1"}};
    auto env =
        env_of({{"TOLLGATE_THREADS", "8"}, {"RATE_LIMIT", "99"}, {"TOLLGATE_LOG_LEVEL", "info"}});
    config c = load_effective_config(o, env);
    CHECK(c.threads == 16);
    CHECK(c.rate_limit.limit == 7);
    CHECK(c.rate_limit.window == milliseconds{2000});
    CHECK(c.listen.port == 7000);
    CHECK(c.admin.listen.port == 7001);
    REQUIRE(c.upstream.servers.size() == 1);
    CHECK(c.upstream.servers[0].host == "u");
    CHECK(c.concurrency.capacity == 3);
    CHECK(c.log.level == log_level::warn);
    CHECK(c.store.redis.url == "redis://r:1");
    CHECK(c.source == data_dir + "/full.yaml");
    // Untouched by flags: environment, then file.
    cli_options only_file;
    only_file.config_path = o.config_path;
    config e = load_effective_config(only_file, env);
    CHECK(e.threads == 8);
    CHECK(e.rate_limit.limit == 99);
    CHECK(e.rate_limit.window == milliseconds{30000});
    // The last of repeated flags wins.
    cli_options twice;
    twice.overrides = {{"--threads", "1"}, {"--threads", "2"}};
    CHECK(load_effective_config(twice, no_env()).threads == 2);
}

TEST_CASE("config: flag errors name the flag", "[config][cli]") {
    auto flag_error = [](std::string flag, std::string value) {
        cli_options o;
        o.overrides = {{flag, value}};
        return error_from([&] { load_effective_config(o, no_env()); });
    };
    CHECK(flag_error("--threads", "5000") == "--threads: must be at most 1024, got \"5000\"");
    CHECK(flag_error("--rate-limit", "ten") ==
          "--rate-limit: must be a positive integer, got \"ten\"");
    CHECK(flag_error("--upstream", "ftp://x") ==
          "--upstream: only http:// and https:// upstreams are supported, got \"ftp://x\"");
    CHECK(flag_error("--listen", "") == "--listen: has an empty value");
    CHECK(flag_error("--admin-listen", "0.0.0.0:8080") ==
          "--admin-listen: admin.listen: port 8080 is also used by listen (0.0.0.0:8080)");
}

TEST_CASE("config: config file from --config or TOLLGATE_CONFIG", "[config][cli]") {
    std::string full = data_dir + "/full.yaml";
    cli_options none;
    CHECK(load_effective_config(none, env_of({{"TOLLGATE_CONFIG", full}})).threads == 4);
    CHECK(load_effective_config(none, no_env()).source.empty());
    cli_options explicit_file;
    explicit_file.config_path = source_dir + "/conf/tollgate.yaml";
    // --config wins over TOLLGATE_CONFIG.
    CHECK(load_effective_config(explicit_file, env_of({{"TOLLGATE_CONFIG", full}})).threads == 0);
    CHECK(error_from([&] {
              load_effective_config(none, env_of({{"TOLLGATE_CONFIG", ""}}));
          }) == "TOLLGATE_CONFIG: is set but empty (unset it to run on built-in defaults)");
    CHECK(error_from([&] {
              load_effective_config(none, env_of({{"TOLLGATE_CONFIG", "/nonexistent.yaml"}}));
          }) == "/nonexistent.yaml: cannot read: No such file or directory");
}

TEST_CASE("config: cli_usage lists every flag", "[config][cli]") {
    std::string usage = cli_usage();
    for (const char* flag : {"--config",
                             "--check-config",
                             "--print-config",
                             "--version",
                             "--help",
                             "--listen",
                             "--admin-listen",
                             "--upstream",
                             "--threads",
                             "--rate-limit ",
                             "--rate-limit-window",
                             "--concurrency",
                             "--log-level",
                             "--redis-url",
                             "--tls-listen",
                             "--tls-cert",
                             "--tls-key",
                             "--upstream-ca-file",
                             "TOLLGATE_TLS_LISTEN",
                             "TOLLGATE_TLS_CERT",
                             "TOLLGATE_TLS_KEY",
                             "TOLLGATE_UPSTREAM_CA_FILE"}) {
        CHECK(usage.find(flag) != std::string::npos);
    }
}

// ---- render_config ---------------------------------------------------------------

TEST_CASE("config: render_config redacts secrets", "[config][render]") {
    config c = load_config_file(data_dir + "/full.yaml", no_env());
    std::string text = render_config(c);
    CHECK(text.find("s3cret") == std::string::npos);
    CHECK(text.find(":pw@") == std::string::npos);
    CHECK(text.find("token_secret: \"<redacted>\"") != std::string::npos);
    CHECK(text.find("redis://:<redacted>@cache:6380/1") != std::string::npos);
    // An unset secret is shown as unset, not as redacted.
    CHECK(render_config(config{}).find("token_secret: \"\"") != std::string::npos);
}

// Loaded back, the placeholder would become the secret: an HMAC key every
// reader of the file knows, or a Redis password that never works.
TEST_CASE("config: the <redacted> placeholder is refused as a secret", "[config][render]") {
    config c = load_config_file(data_dir + "/full.yaml", no_env());
    const std::string printed = render_config(c);
    const std::string message =
        "is the <redacted> placeholder --print-config writes in place of the secret; set the real "
        "value";
    const std::string errors = error_from([&] { parse(printed); });
    CHECK(errors.find("keying.token_secret: " + message) != std::string::npos);
    CHECK(errors.find("store.redis.url: password " + message) != std::string::npos);
    CHECK(error_from([&] {
              load_defaults(env_of({{"TOLLGATE_TOKEN_SECRET", "<redacted>"}}));
          }) == "TOLLGATE_TOKEN_SECRET: " + message);
}

TEST_CASE("config: render_config round-trips", "[config][render]") {
    SECTION("defaults") {
        config back = parse(render_config(config{}));
        check_same(back, config{});
    }
    SECTION("every key changed") {
        config c = load_config_file(data_dir + "/full.yaml", no_env());
        // Secrets are printed as <redacted>, which does not load back (see
        // above): put the real ones in again, as an operator would.
        std::string printed = render_config(c);
        const auto put_back = [&printed](std::string_view placeholder, std::string_view value) {
            const auto at = printed.find(placeholder);
            REQUIRE(at != std::string::npos);
            printed.replace(at, placeholder.size(), value);
        };
        put_back("token_secret: \"<redacted>\"", "token_secret: \"" + c.keying.token_secret + "\"");
        put_back(redact_redis_url(c.store.redis.url), c.store.redis.url);
        config back = parse(printed);
        check_same(back, c);
    }
    SECTION("awkward strings survive quoting") {
        config c;
        c.store.redis.key_prefix = "a:#b&*c{";
        c.keying.org_header = "True";
        c.keying.ip_paths = {"/x/*", "/-"};
        route_config r;
        r.name = "null";
        r.path_prefix = "/[x]";
        c.routes.push_back(r);
        config back = parse(render_config(c));
        check_same(back, c);
    }
    SECTION("https servers keep their scheme") {
        config c;
        c.upstream.servers = *parse_upstream_list("https://a, HTTPS://b:8443, https://[::1]");
        config back = parse(render_config(c));
        check_same_servers(back.upstream.servers, c.upstream.servers);
        upstream_server s;
        s.scheme = "https";
        s.host = "c";
        s.port = 443;
        s.url = "http://c:443";  // stale text: rendered from the fields instead
        c.upstream.servers = {s};
        config again = parse(render_config(c));
        REQUIRE(again.upstream.servers.size() == 1);
        CHECK(again.upstream.servers[0].scheme == "https");
        CHECK(again.upstream.servers[0].url == "https://c:443");
    }
    SECTION("a server whose url text was never set is rendered from host and port") {
        config c;
        upstream_server s;
        s.host = "fd00::9";
        s.port = 81;
        s.url = "";
        c.upstream.servers = {s};
        config back = parse(render_config(c));
        REQUIRE(back.upstream.servers.size() == 1);
        CHECK(back.upstream.servers[0].host == "fd00::9");
        CHECK(back.upstream.servers[0].port == 81);
        CHECK(back.upstream.servers[0].url == "http://[fd00::9]:81");
    }
}

TEST_CASE("config: render_config prints the TLS and WebSocket keys", "[config][render][tls]") {
    std::string defaults = render_config(config{});
    for (const char* line :
         {"tls:\n  listen: \"\"\n  cert: \"\"\n  key: \"\"\n  min_version: \"1.2\"\n"
          "  alpn: [http/1.1]\n",
          "  ca_file: \"\"\n  insecure_skip_verify: false\n", "  tunnel_idle_timeout: 1h\n",
          "websocket:\n  max_per_key: 64\n  max_tunnels: 4096\n"}) {
        INFO(line);
        CHECK(defaults.find(line) != std::string::npos);
    }
    pem_files files;
    config c = parse(files.tls_yaml("\"[::]:8443\"") + "upstream:\n  ca_file: \"" + files.ca +
                     "\"\nroutes:\n  - {name: a, upgrade: [websocket, foo]}\n");
    std::string text = render_config(c);
    // The key is a path, not a secret: shown as is.
    CHECK(text.find("  key: \"" + files.key + "\"\n") != std::string::npos);
    CHECK(text.find("  cert: \"" + files.cert + "\"\n") != std::string::npos);
    CHECK(text.find("  listen: \"[::]:8443\"\n") != std::string::npos);
    CHECK(text.find("    upgrade: [websocket, foo]\n") != std::string::npos);
    check_same(parse(text), c);
}

TEST_CASE("config: apply_setting validates exactly like the YAML key", "[config][env]") {
    config c;
    CHECK(apply_setting(c, setting::threads, "3") == std::nullopt);
    CHECK(c.threads == 3);
    CHECK(apply_setting(c, setting::threads, "1025") ==
          std::optional<std::string>{"must be at most 1024, got \"1025\""});
    CHECK(c.threads == 3);  // unchanged on error
    CHECK(apply_setting(c, setting::redis_url, "redis://x") == std::nullopt);
    CHECK(c.store.type == store_kind::redis);
    CHECK(apply_setting(c, setting::tls_listen, "[::]:8443") == std::nullopt);
    REQUIRE(c.tls.listen.has_value());
    CHECK(c.tls.listen->port == 8443);
    CHECK(
        apply_setting(c, setting::tls_cert, "/nonexistent.pem") ==
        std::optional<std::string>{"cannot read \"/nonexistent.pem\": No such file or directory"});
    CHECK(c.tls.cert.empty());
}

TEST_CASE("config: keying.ipv6_prefix and the IPv6 overrides it asks for", "[config]") {
    CHECK(config{}.keying.ipv6_prefix == 128);
    CHECK(parse("keying: {ipv6_prefix: 64}\n").keying.ipv6_prefix == 64);
    CHECK(error_of("keying: {ipv6_prefix: 16}\n") ==
          "conf/x.yaml:1: keying.ipv6_prefix: must be from 32 to 128 (64: one bucket per /64 "
          "network), got \"16\"");
    CHECK(error_of("keying: {ipv6_prefix: 129}\n") ==
          "conf/x.yaml:1: keying.ipv6_prefix: must be at most 128, got \"129\"");
    // Only the setting's own error: overrides are not judged by a value refused.
    CHECK(error_of("keying: {ipv6_prefix: 16}\nrate_limit:\n  overrides:\n"
                   "    - {key: \"ip:2001:db8::/64\", limit: 5}\n") ==
          "conf/x.yaml:1: keying.ipv6_prefix: must be from 32 to 128 (64: one bucket per /64 "
          "network), got \"16\"");

    // Written as the network a client of it is keyed by, canonical.
    const auto with = [](std::string_view prefix, std::string_view key) {
        return "keying: {ipv6_prefix: " + std::string(prefix) +
               "}\nrate_limit:\n  overrides:\n    - {key: \"" + std::string(key) +
               "\", limit: 5}\n";
    };
    CHECK(parse(with("64", "ip:2001:DB8:0:1::/64")).rate_limit.overrides[0].key ==
          "ip:2001:db8:0:1::/64");
    CHECK(parse(with("64", "ip:10.0.0.1")).rate_limit.overrides[0].key == "ip:10.0.0.1");
    CHECK(parse(with("128", "ip:2001:db8::1/128")).rate_limit.overrides[0].key == "ip:2001:db8::1");
    CHECK(error_of(with("64", "ip:2001:db8::1")) ==
          "conf/x.yaml:4: rate_limit.overrides[0].key: never matches: keying.ipv6_prefix is 64, "
          "so that client's key is ip:2001:db8::/64");
    CHECK(error_of(with("56", "ip:2001:db8:0:1::/64")) ==
          "conf/x.yaml:4: rate_limit.overrides[0].key: never matches: keying.ipv6_prefix is 56, "
          "so that client's key is ip:2001:db8::/56");
    CHECK(error_of(with("128", "ip:2001:db8::/64")) ==
          "conf/x.yaml:4: rate_limit.overrides[0].key: never matches: keying.ipv6_prefix is 128, "
          "so IPv6 clients are keyed by address alone (set keying.ipv6_prefix: 64 to key them by "
          "network)");
    const std::string shape =
        "ip: must be followed by an IP address, or an IPv6 network like 2001:db8:1:2::/64 (IPv4 "
        "clients are keyed by address alone), got ";
    CHECK(error_of(with("64", "ip:10.0.0.0/24")) ==
          "conf/x.yaml:4: rate_limit.overrides[0].key: " + shape + "\"ip:10.0.0.0/24\"");
    CHECK(error_of(with("64", "ip:2001:db8::1/64")) ==  // host bits after the prefix
          "conf/x.yaml:4: rate_limit.overrides[0].key: " + shape + "\"ip:2001:db8::1/64\"");
}
