#include "approval/grant_store.hpp"

namespace runwarden::approval {

GrantStore::GrantStore(std::chrono::milliseconds ttl, std::size_t max_grants)
    : ttl_(ttl), max_(max_grants == 0 ? 1 : max_grants) {}

std::string GrantStore::key(std::string_view run, std::string_view digest) {
  std::string k;
  k.reserve(run.size() + digest.size() + 1);
  k.append(run).push_back('\n');
  k.append(digest);
  return k;
}

namespace {
// Removes the (expiry, key) pair matching one grant.
void erase_expiry(std::multimap<SteadyTime, std::string>& expiry, SteadyTime when,
                  const std::string& key) {
  auto [lo, hi] = expiry.equal_range(when);
  for (auto it = lo; it != hi; ++it) {
    if (it->second == key) {
      expiry.erase(it);
      return;
    }
  }
}
} // namespace

void GrantStore::add(std::string_view run, std::string_view digest, std::string approval_id,
                     std::string by, SteadyTime now) {
  if (digest.empty()) {
    return; // no digest (the CSPRNG failed): a grant under it would match anything
  }
  std::lock_guard lock(mutex_);
  const std::string k = key(run, digest);
  const SteadyTime expires = now + ttl_;
  while (grants_.size() >= max_ && !expiry_.empty()) {
    const auto first = expiry_.begin();
    auto [lo, hi] = grants_.equal_range(first->second);
    for (auto it = lo; it != hi; ++it) {
      if (it->second.expires == first->first) {
        grants_.erase(it);
        break;
      }
    }
    expiry_.erase(first);
  }
  grants_.emplace(k, Grant{std::move(approval_id), std::move(by), expires});
  expiry_.emplace(expires, k);
}

std::optional<Grant> GrantStore::take(std::string_view run, std::string_view digest,
                                      SteadyTime now) {
  if (digest.empty()) {
    return std::nullopt;
  }
  std::lock_guard lock(mutex_);
  const std::string k = key(run, digest);
  auto [lo, hi] = grants_.equal_range(k);
  for (auto it = lo; it != hi; ++it) {
    if (it->second.expires > now) {
      Grant g = std::move(it->second);
      erase_expiry(expiry_, g.expires, k);
      grants_.erase(it);
      return g;
    }
  }
  return std::nullopt;
}

void GrantStore::purge(SteadyTime now) {
  std::lock_guard lock(mutex_);
  while (!expiry_.empty() && expiry_.begin()->first <= now) {
    const auto first = expiry_.begin();
    auto [lo, hi] = grants_.equal_range(first->second);
    for (auto it = lo; it != hi; ++it) {
      if (it->second.expires == first->first) {
        grants_.erase(it);
        break;
      }
    }
    expiry_.erase(first);
  }
}

std::size_t GrantStore::size() const {
  std::lock_guard lock(mutex_);
  return grants_.size();
}

} // namespace runwarden::approval
