// docker/ and conf/ packaging files: no Docker engine runs on the build
// machines, so test what can be: the files parse and every path they name
// exists in the repository.

#include <yaml-cpp/yaml.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace fs = std::filesystem;

namespace {

const fs::path root = TOLLGATE_SOURCE_DIR;

std::string read_file(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

}  // namespace

TEST_CASE("packaging: docker-compose.yml parses and names existing paths", "[packaging]") {
    const fs::path docker = root / "docker";
    YAML::Node compose = YAML::LoadFile((docker / "docker-compose.yml").string());
    REQUIRE(compose["services"]);
    for (const char* name : {"tollgate", "backend", "redis", "prometheus"}) {
        INFO(name);
        CHECK(compose["services"][name]);
    }
    std::size_t checked = 0;
    for (const auto& service : compose["services"]) {
        const YAML::Node s = service.second;
        if (s["build"]) {
            fs::path context = docker / s["build"]["context"].as<std::string>();
            CHECK(fs::is_directory(context));
            CHECK(fs::is_regular_file(context / s["build"]["dockerfile"].as<std::string>()));
            ++checked;
        }
        if (s["volumes"]) {
            for (const auto& v : s["volumes"]) {
                std::string spec = v.as<std::string>();
                std::string source = spec.substr(0, spec.find(':'));
                INFO(spec);
                CHECK(fs::exists(docker / source));
                ++checked;
            }
        }
    }
    CHECK(checked >= 3);
    // tollgate is scraped by the Prometheus config the compose file mounts.
    YAML::Node prometheus = YAML::LoadFile((docker / "prometheus.yml").string());
    CHECK(prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0].as<std::string>() ==
          "tollgate:9090");
}

TEST_CASE("packaging: every COPY source of the Dockerfile exists", "[packaging]") {
    std::istringstream lines(read_file(root / "docker" / "Dockerfile"));
    std::string line;
    std::size_t copies = 0;
    bool healthcheck = false;
    bool non_root = false;
    while (std::getline(lines, line)) {
        healthcheck = healthcheck || line.starts_with("HEALTHCHECK") ||
                      line.find("/healthz") != std::string::npos;
        non_root = non_root || line == "USER tollgate";
        if (!line.starts_with("COPY ") || line.find("--from=") != std::string::npos) {
            continue;
        }
        std::istringstream words(line.substr(5));
        std::vector<std::string> parts;
        for (std::string w; words >> w;) {
            parts.push_back(w);
        }
        REQUIRE(parts.size() >= 2);
        for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
            INFO(parts[i]);
            CHECK(fs::exists(root / parts[i]));
            ++copies;
        }
    }
    CHECK(copies >= 5);
    CHECK(healthcheck);
    CHECK(non_root);
}

TEST_CASE("packaging: the systemd unit checks the config, reloads with SIGHUP", "[packaging]") {
    const std::string unit = read_file(root / "conf" / "tollgate.service");
    CHECK(unit.find("ExecStartPre=/usr/local/bin/tollgate --check-config") != std::string::npos);
    CHECK(unit.find("ExecStart=/usr/local/bin/tollgate --config /etc/tollgate/tollgate.yaml") !=
          std::string::npos);
    CHECK(unit.find("ExecReload=/bin/kill -HUP $MAINPID") != std::string::npos);
    CHECK(unit.find("KillSignal=SIGTERM") != std::string::npos);
}
