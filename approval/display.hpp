#pragma once
// Making untrusted strings safe to show an operator: in a terminal table, a webhook
// card or a console. What an approver reads must be exactly what will be released,
// with nothing hidden by control characters, bidi overrides or zero-width marks.

#include <string>
#include <string_view>

namespace runwarden::approval {

/// Escapes C0/C1 controls, DEL, bidi controls, zero-width characters and invalid
/// UTF-8 bytes as \xNN or \u{XXXX}; a backslash becomes "\\" so the escaping is
/// unambiguous. With keep_newlines, '\n' and '\t' stay (bodies remain readable).
/// Never truncates.
std::string escape_display(std::string_view text, bool keep_newlines = false);

/// For text escape_display already made (an approval packet, a hold's reason, as the
/// admin API serves them): what a terminal must not get is escaped again, but a backslash
/// stays one, so the operator reads the server's unambiguous form, not a doubled one.
std::string terminal_safe(std::string_view text, bool keep_newlines = false);

/// True when any DNS label of a canonical host is punycode ("xn--"): the packet flags
/// such hosts so a look-alike name is noticed; the host is always shown in ASCII.
bool host_has_punycode(std::string_view host);

} // namespace runwarden::approval
