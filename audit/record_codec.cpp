#include "audit/record_codec.hpp"

#include "audit/digest.hpp"

#include <charconv>
#include <chrono>
#include <cstring>
#include <ctime>

namespace runwarden::audit {
namespace {

constexpr std::string_view kHashPrefix = ",\"hash\":\"";
constexpr std::size_t kSuffixSize = kHashPrefix.size() + 64 + 2; // ,"hash":"<64>"}

bool is_hex64(std::string_view s) {
  if (s.size() != 64) {
    return false;
  }
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

// Days from 1970-01-01 to y-m-d (proleptic Gregorian), Howard Hinnant's algorithm.
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? 0u - 3u : 9u)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

bool digits(std::string_view s, std::size_t pos, std::size_t n, int& out) {
  if (pos + n > s.size()) {
    return false;
  }
  out = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') {
      return false;
    }
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

} // namespace

std::string RecordCodec::chain_hash(std::string_view prev, std::string_view unsealed) {
  const Sha256 digest = sha256(prev, unsealed);
  return to_hex(digest.data(), digest.size());
}

void RecordCodec::seal_into(std::string& out, std::uint64_t seq, std::string_view ts,
                            std::string_view members, std::string_view prev,
                            std::array<char, 64>& hash_out) {
  static constexpr std::string_view kHead = "{\"v\":1,\"seq\":";
  static constexpr std::string_view kTs = ",\"ts\":\"";
  static constexpr std::string_view kPrev = ",\"prev\":\"";
  const std::size_t start = out.size();
  // One reserve for the largest line (20 digits of seq, prev's closing quote, the hash
  // suffix and '\n'), then appends: a resize would first zero-fill the ~4 KB it reserves
  // (a memset per record that showed in profiles), and the appends never reallocate.
  const std::size_t most = kHead.size() + 20 + kTs.size() + ts.size() + 2 + members.size() +
                           kPrev.size() + prev.size() + 1 + kSuffixSize + 1;
  out.reserve(start + most);
  char seq_digits[20];
  const char* const seq_end = std::to_chars(seq_digits, seq_digits + sizeof seq_digits, seq).ptr;
  out.append(kHead);
  out.append(seq_digits, static_cast<std::size_t>(seq_end - seq_digits));
  out.append(kTs);
  out.append(ts);
  out.append("\",", 2);
  out.append(members);
  out.append(kPrev);
  out.append(prev);
  out.append("\"}", 2);
  // U is [start, size): hash = SHA-256(prev_hex || U).
  const Sha256 digest = sha256(prev, std::string_view(out).substr(start));
  static constexpr char kDigits[] = "0123456789abcdef";
  for (std::size_t i = 0; i < digest.size(); ++i) {
    hash_out[2 * i] = kDigits[digest[i] >> 4];
    hash_out[2 * i + 1] = kDigits[digest[i] & 0x0f];
  }
  out.pop_back(); // U' : U without its closing brace
  out.append(kHashPrefix);
  out.append(hash_out.data(), hash_out.size());
  out.append("\"}\n", 3);
}

std::string_view RecordCodec::seal_in_place(char* members, std::size_t size, std::size_t headroom,
                                            std::size_t tailroom, std::uint64_t seq,
                                            std::string_view ts, std::string_view prev,
                                            std::array<char, 64>& hash_out) {
  static constexpr std::string_view kHead = "{\"v\":1,\"seq\":";
  static constexpr std::string_view kTs = ",\"ts\":\"";
  static constexpr std::string_view kPrev = ",\"prev\":\"";
  char seq_digits[20];
  const char* const seq_end = std::to_chars(seq_digits, seq_digits + sizeof seq_digits, seq).ptr;
  const auto seq_size = static_cast<std::size_t>(seq_end - seq_digits);
  const std::size_t head = kHead.size() + seq_size + kTs.size() + ts.size() + 2;
  // After the members: the prev member and its brace, which the hash suffix then replaces
  // (one byte fewer than both), and the newline.
  const std::size_t tail = kPrev.size() + prev.size() + 1 + kSuffixSize + 1;
  if (head > headroom || tail > tailroom) {
    return {};
  }
  char* const line = members - head;
  char* p = line;
  const auto put = [&p](std::string_view piece) {
    std::memcpy(p, piece.data(), piece.size());
    p += piece.size();
  };
  put(kHead);
  put(std::string_view(seq_digits, seq_size));
  put(kTs);
  put(ts);
  put("\",");
  p += size; // the members, already in place
  put(kPrev);
  put(prev);
  put("\"}");
  // U is [line, p): hash = SHA-256(prev_hex || U).
  const Sha256 digest = sha256(prev, std::string_view(line, static_cast<std::size_t>(p - line)));
  static constexpr char kDigits[] = "0123456789abcdef";
  for (std::size_t i = 0; i < digest.size(); ++i) {
    hash_out[2 * i] = kDigits[digest[i] >> 4];
    hash_out[2 * i + 1] = kDigits[digest[i] & 0x0f];
  }
  --p; // U' : U without its closing brace
  put(kHashPrefix);
  put(std::string_view(hash_out.data(), hash_out.size()));
  put("\"}\n");
  return std::string_view(line, static_cast<std::size_t>(p - line));
}

std::string RecordCodec::seal(std::uint64_t seq, std::string_view ts, std::string_view members,
                              std::string_view prev, std::string& hash_out) {
  std::string line;
  std::array<char, 64> hash{};
  seal_into(line, seq, ts, members, prev, hash);
  hash_out.assign(hash.data(), hash.size());
  return line;
}

std::optional<UnsealedLine> RecordCodec::unseal(std::string_view line) {
  if (line.size() < kSuffixSize + 2 || line.substr(line.size() - 2) != "\"}") {
    return std::nullopt;
  }
  const std::size_t at = line.size() - kSuffixSize;
  if (line.substr(at, kHashPrefix.size()) != kHashPrefix) {
    return std::nullopt;
  }
  UnsealedLine out;
  out.hash = std::string(line.substr(at + kHashPrefix.size(), 64));
  if (!is_hex64(out.hash)) {
    return std::nullopt;
  }
  out.unsealed.reserve(at + 1);
  out.unsealed.append(line.substr(0, at));
  out.unsealed += '}';
  return out;
}

std::string_view RecordCodec::now_rfc3339(std::array<char, 32>& buf) {
  const auto now = std::chrono::system_clock::now();
  const auto us =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  const std::int64_t secs = us / 1000000;
  // "YYYY-MM-DDTHH:MM:SS" changes once a second: formatted once per second per thread,
  // only the microseconds per call (gmtime_r and snprintf per record showed in profiles).
  thread_local std::int64_t cached_secs = -1;
  thread_local char cached[32] = {};
  if (secs != cached_secs) {
    const auto t = static_cast<std::time_t>(secs);
    std::tm tm{};
    gmtime_r(&t, &tm);
    auto put = [](char* at, int value, int width) {
      for (int k = width - 1; k >= 0; --k) {
        at[k] = static_cast<char>('0' + value % 10);
        value /= 10;
      }
    };
    std::memcpy(cached, "0000-00-00T00:00:00", 20);
    put(cached, tm.tm_year + 1900, 4);
    put(cached + 5, tm.tm_mon + 1, 2);
    put(cached + 8, tm.tm_mday, 2);
    put(cached + 11, tm.tm_hour, 2);
    put(cached + 14, tm.tm_min, 2);
    put(cached + 17, tm.tm_sec, 2);
    cached_secs = secs;
  }
  std::memcpy(buf.data(), cached, 19);
  buf[19] = '.';
  auto micros = static_cast<std::uint32_t>(us % 1000000);
  for (std::size_t k = 25; k >= 20; --k) {
    buf[k] = static_cast<char>('0' + micros % 10);
    micros /= 10;
  }
  buf[26] = 'Z';
  return std::string_view(buf.data(), 27);
}

std::string RecordCodec::now_rfc3339() {
  std::array<char, 32> buf{};
  return std::string(now_rfc3339(buf));
}

std::optional<std::int64_t> RecordCodec::parse_rfc3339(std::string_view s) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0;
  if (!digits(s, 0, 4, y) || s.size() < 20 || s[4] != '-' || !digits(s, 5, 2, mo) || s[7] != '-' ||
      !digits(s, 8, 2, d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      !digits(s, 11, 2, h) || s[13] != ':' || !digits(s, 14, 2, mi) || s[16] != ':' ||
      !digits(s, 17, 2, se)) {
    return std::nullopt;
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) {
    return std::nullopt;
  }
  std::size_t i = 19;
  std::int64_t micros = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    std::int64_t scale = 100000;
    const std::size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      micros += scale * (s[i] - '0');
      scale /= 10;
      ++i;
    }
    if (i == start) {
      return std::nullopt;
    }
  }
  std::int64_t offset_s = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    int oh = 0, om = 0;
    if (!digits(s, i + 1, 2, oh) || i + 3 >= s.size() || s[i + 3] != ':' ||
        !digits(s, i + 4, 2, om)) {
      return std::nullopt;
    }
    offset_s = (s[i] == '+' ? 1 : -1) * (oh * 3600 + om * 60);
    i += 6;
  } else {
    return std::nullopt;
  }
  if (i != s.size()) {
    return std::nullopt;
  }
  const std::int64_t days = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
  const std::int64_t secs = days * 86400 + h * 3600 + mi * 60 + se - offset_s;
  return secs * 1000000 + micros;
}

} // namespace runwarden::audit
