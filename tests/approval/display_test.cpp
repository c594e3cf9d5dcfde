#include "approval/display.hpp"

#include <gtest/gtest.h>

namespace runwarden::approval {
namespace {

TEST(Display, EscapesControlsInvisiblesAndBadUtf8) {
  EXPECT_EQ(escape_display("plain text"), "plain text");
  EXPECT_EQ(escape_display("a\x1b[2Jb"), "a\\x1b[2Jb");
  EXPECT_EQ(escape_display(std::string("nul\0x", 5)), "nul\\x00x");
  EXPECT_EQ(escape_display("line\nnext\ttab\r"), "line\\x0anext\\x09tab\\x0d");
  EXPECT_EQ(escape_display("line\nnext\ttab\r", true), "line\nnext\ttab\\x0d");
  EXPECT_EQ(escape_display("del\x7f"), "del\\x7f");
  EXPECT_EQ(escape_display("back\\slash"), "back\\\\slash");
  // Right-to-left override and zero-width space are shown, not obeyed.
  EXPECT_EQ(escape_display("evil\xe2\x80\xaetxt.exe"), "evil\\u{202e}txt.exe");
  EXPECT_EQ(escape_display("a\xe2\x80\x8b"
                           "b"),
            "a\\u{200b}b");
  EXPECT_EQ(escape_display("c1\xc2\x9b"), "c1\\u{009b}");
  // Valid UTF-8 stays; invalid bytes are escaped one by one.
  EXPECT_EQ(escape_display("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_EQ(escape_display("bad\xc3"), "bad\\xc3");
  EXPECT_EQ(escape_display("\xc0\xaf"), "\\xc0\\xaf");          // overlong '/'
  EXPECT_EQ(escape_display("\xed\xa0\x80"), "\\xed\\xa0\\x80"); // surrogate
}

// What the CLI shows of a string the server escaped already: one backslash stays one (the
// server's form), and what a terminal must not get is still escaped.
TEST(Display, TerminalSafeKeepsTheServersEscapingAsIs) {
  const std::string served = escape_display("C:\\temp \x1b[2J");
  EXPECT_EQ(served, "C:\\\\temp \\x1b[2J");
  EXPECT_EQ(terminal_safe(served), served);
  EXPECT_EQ(terminal_safe("raw\x1b[2J\xe2\x80\xae"), "raw\\x1b[2J\\u{202e}");
  EXPECT_EQ(terminal_safe("a\nb", true), "a\nb");
}

TEST(Display, NeverTruncates) {
  const std::string long_host(5000, 'h');
  EXPECT_EQ(escape_display(long_host), long_host);
}

TEST(Display, FlagsPunycodeLabels) {
  EXPECT_TRUE(host_has_punycode("xn--pple-43d.com"));
  EXPECT_TRUE(host_has_punycode("api.XN--strpe-9ua.com"));
  EXPECT_FALSE(host_has_punycode("apple.com"));
  EXPECT_FALSE(host_has_punycode("axn--b.com"));
  EXPECT_FALSE(host_has_punycode(""));
}

} // namespace
} // namespace runwarden::approval
