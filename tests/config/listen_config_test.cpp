// listen.transparent: one endpoint (the original shape) or a list, dual-stack "[::]", and the
// exact file:line:col errors for bad values, overlaps and unquoted IPv6 endpoints.

#include "config/config.hpp"

#include <cstdlib>
#include <fstream>
#include <gtest/gtest.h>
#include <string>
#include <vector>

namespace runwarden::config {
namespace {

namespace fs = std::filesystem;

constexpr const char* kRest = R"(agent: {id: test-agent}
catalogue: actions.yaml
runbooks: [runbooks/]
active_runbook: rb
)";

class ListenConfigTest : public ::testing::Test {
protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "runwarden-listen-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    write("actions.yaml", "actions:\n  read:\n    - {method: GET, host: a.example, path: /x}\n");
    write("runbooks/rb.yaml", "runbook: rb\nallowed_actions:\n  read_only: [read]\n");
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void write(const std::string& name, const std::string& text) {
    fs::create_directories((dir_ / name).parent_path());
    std::ofstream out(dir_ / name, std::ios::binary | std::ios::trunc);
    out << text;
  }

  /// Loads a runwarden.yaml whose listen block has these lines after `listen:`.
  std::vector<std::string> load(const std::string& listen_lines) {
    write("runwarden.yaml",
          "listen:\n  proxy: 127.0.0.1:15001\n  admin: 127.0.0.1:15000\n" + listen_lines + kRest);
    try {
      config_ = load_config(dir_ / "runwarden.yaml");
      return {};
    } catch (const ConfigError& e) {
      return e.errors();
    }
  }

  std::vector<std::string> transparent() const {
    std::vector<std::string> out;
    for (const auto& e : config_->listen.transparent) {
      out.push_back(e.to_string());
    }
    return out;
  }

  std::string at() const { return (dir_ / "runwarden.yaml").string() + ":"; }

  fs::path dir_;
  std::shared_ptr<const Config> config_;
};

TEST_F(ListenConfigTest, AbsentMeansNoTransparentListener) {
  ASSERT_EQ(load(""), std::vector<std::string>{});
  EXPECT_TRUE(config_->listen.transparent.empty());
}

TEST_F(ListenConfigTest, SingleEndpointKeepsItsMeaning) {
  ASSERT_EQ(load("  transparent: 127.0.0.1:15006\n"), std::vector<std::string>{});
  EXPECT_EQ(transparent(), std::vector<std::string>{"127.0.0.1:15006"});
}

TEST_F(ListenConfigTest, SingleIpv6AndDualStackEndpoints) {
  ASSERT_EQ(load("  transparent: \"[::1]:15006\"\n"), std::vector<std::string>{});
  EXPECT_EQ(transparent(), std::vector<std::string>{"[::1]:15006"});
  EXPECT_EQ(config_->listen.transparent[0].host, "::1");
  ASSERT_EQ(load("  transparent: \"[::]:15006\"\n"), std::vector<std::string>{});
  EXPECT_EQ(transparent(), std::vector<std::string>{"[::]:15006"});
}

TEST_F(ListenConfigTest, ListOfEndpointsForBothFamilies) {
  ASSERT_EQ(load("  transparent: [127.0.0.1:15006, \"[::1]:15006\"]\n"),
            std::vector<std::string>{});
  EXPECT_EQ(transparent(), (std::vector<std::string>{"127.0.0.1:15006", "[::1]:15006"}));
  ASSERT_EQ(load("  transparent:\n    - 127.0.0.1:15006\n    - \"[::1]:15006\"\n"),
            std::vector<std::string>{});
  EXPECT_EQ(transparent(), (std::vector<std::string>{"127.0.0.1:15006", "[::1]:15006"}));
}

TEST_F(ListenConfigTest, PortZeroEndpointsNeverOverlap) {
  ASSERT_EQ(load("  transparent: [127.0.0.1:0, 127.0.0.1:0, \"[::]:0\"]\n"),
            std::vector<std::string>{});
  EXPECT_EQ(transparent().size(), 3u);
}

TEST_F(ListenConfigTest, BadElementIsReportedAtItsPosition) {
  EXPECT_EQ(load("  transparent: [127.0.0.1:15006, localhost:15006, \"::1:15006\"]\n"),
            (std::vector<std::string>{
                at() + "4:34: listen.transparent[1]: invalid listen address \"localhost:15006\": "
                       "\"localhost\" is not an IP address (listen addresses are literal, e.g. "
                       "127.0.0.1 or [::1]; host names are not resolved)",
                at() + "4:51: listen.transparent[2]: invalid listen address \"::1:15006\": an "
                       "IPv6 address must be in brackets, e.g. [::1]:15001",
            }));
}

TEST_F(ListenConfigTest, EmptyListIsAnError) {
  EXPECT_EQ(
      load("  transparent: []\n"),
      std::vector<std::string>{at() + "4:16: listen.transparent: expected at least one value"});
}

TEST_F(ListenConfigTest, OverlappingEndpointsAreErrors) {
  EXPECT_EQ(load("  transparent: [\"[::]:15006\", 127.0.0.1:15006]\n"),
            std::vector<std::string>{
                at() + "4:31: listen.transparent[1]: 127.0.0.1:15006 overlaps [::]:15006: [::] "
                       "is dual-stack and already receives every IPv4 and IPv6 connection on that "
                       "port; list it alone or list specific addresses"});
  EXPECT_EQ(load("  transparent: [\"[::1]:15006\", \"[0:0::1]:15006\"]\n"),
            std::vector<std::string>{at() + "4:32: listen.transparent[1]: [0:0::1]:15006 overlaps "
                                            "[::1]:15006: the same endpoint twice"});
  EXPECT_EQ(load("  transparent: [0.0.0.0:15006, 127.0.0.1:15006]\n"),
            std::vector<std::string>{
                at() + "4:32: listen.transparent[1]: 127.0.0.1:15006 overlaps 0.0.0.0:15006: "
                       "0.0.0.0 already receives every IPv4 connection on that port"});
  // Different ports, or 0.0.0.0 beside an IPv6 address, do not overlap.
  EXPECT_EQ(load("  transparent: [0.0.0.0:15006, \"[::1]:15006\", 127.0.0.1:15007]\n"),
            std::vector<std::string>{});
}

// Listeners that would take each other's connections: an error at check, not a bind failure
// at serve (admin on the proxy's port passed `check` before).
TEST_F(ListenConfigTest, ListenersOverlappingEachOtherAreErrors) {
  write("runwarden.yaml",
        "listen:\n  proxy: 127.0.0.1:15001\n  admin: 127.0.0.1:15001\n" + std::string(kRest));
  try {
    load_config(dir_ / "runwarden.yaml");
    ADD_FAILURE() << "admin on the proxy's endpoint loaded";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.errors(),
              std::vector<std::string>{at() + "3:10: listen.admin: 127.0.0.1:15001 overlaps "
                                              "listen.proxy 127.0.0.1:15001: the same endpoint "
                                              "twice"});
  }
  const auto errors = load("  transparent: [127.0.0.1:15007, 0.0.0.0:15000]\n");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("0.0.0.0:15000 overlaps listen.admin 127.0.0.1:15000"),
            std::string::npos)
      << errors[0];
  EXPECT_EQ(load("  transparent: 127.0.0.1:15006\n"), std::vector<std::string>{});
}

TEST_F(ListenConfigTest, UnquotedIpv6EndpointGetsAHint) {
  // Alone, an unquoted [::1]:15006 is not even valid YAML: a syntax error at its line.
  auto errors = load("  transparent: [::1]:15006\n");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].rfind(at() + "4:", 0), 0u) << errors[0];
  // In a list it parses as a map keyed by a list: the element is refused with the hint.
  EXPECT_EQ(load("  transparent: [127.0.0.1:15006, [::1]:15006]\n"),
            (std::vector<std::string>{
                at() + "4:34: listen.transparent[1]: keys must be plain strings, got a list",
                at() + "4:34: listen.transparent[1]: expected an endpoint such as "
                       "127.0.0.1:15006; quote IPv6 ones: \"[::1]:15006\"",
            }));
}

TEST_F(ListenConfigTest, UnknownListenKeyStillFails) {
  auto errors = load("  transparant: 127.0.0.1:15006\n");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].rfind(at() + "4:3: listen.transparant: unknown key", 0), 0u) << errors[0];
  EXPECT_NE(errors[0].find("transparent"), std::string::npos) << errors[0];
}

TEST_F(ListenConfigTest, WrongTypeIsReported) {
  auto errors = load("  transparent: {host: 127.0.0.1}\n");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].rfind(at() + "4:16: listen.transparent: expected an endpoint", 0), 0u)
      << errors[0];
}

} // namespace
} // namespace runwarden::config
